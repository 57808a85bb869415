"""Typed training configuration shared by every recipe.

A recipe's defaults are a ``TrainConfig``; command-line values (and, later, presets) are layered on top with
``dataclasses.replace``. Each field's metadata carries its command-line help, so the options are written once.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

LrScaling = Literal["linear", "sqrt", "none"]
ReduceOp = Literal["average", "sum", "adasum"]
LrSchedule = Literal["constant", "step", "cosine", "sgdr"]
ResumeMode = Literal["auto", "require", "never"]


class ConfigError(ValueError):
    """A configuration value that cannot work; the message is one line meant for the user."""


MAX_EPOCHS = 1_000_000
MAX_BATCH_SIZE = 1 << 20
MAX_SEED = (1 << 31) - 1  # NumPy takes seeds below 2**32, and each rank adds its rank


def _opt(help_text: str, **extra: Any) -> dict[str, Any]:
    return {"help": help_text, **extra}


def recipe_option(help_text: str, **extra: Any) -> dict[str, Any]:
    """Field metadata of a recipe's own option (a field of a ``TrainConfig`` subclass): its help, and ``min``,
    ``min_open``, ``max`` checked like the shared options'. ``field(default=20, metadata=recipe_option("..."))``."""
    return _opt(help_text, **extra)


def recipe_fields(config_type: type[TrainConfig]) -> list[dataclasses.Field[Any]]:
    """The fields a ``TrainConfig`` subclass adds (the recipe's own options), in order."""
    shared = {f.name for f in dataclasses.fields(TrainConfig)}
    return [f for f in dataclasses.fields(config_type) if f.name not in shared]


def range_problem(meta: Mapping[str, Any], value: Any) -> str | None:
    """What is wrong with a number against its field's ``min``/``min_open``/``max`` metadata (None if nothing):
    ``"must be a finite number, got nan"``; nan and inf are never taken. Shared by the command line and presets."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if "min" in meta and value < meta["min"]:
        return f"must be >= {meta['min']}, got {value}"
    if "min_open" in meta and value <= meta["min_open"]:
        return f"must be > {meta['min_open']}, got {value}"
    if "max" in meta and value > meta["max"]:
        return f"must be <= {meta['max']:,}, got {value:,}"
    return None


def path_problem(value: Any) -> str | None:
    """What is wrong with a path that Keras, TensorFlow or Horovod would choke on (None if nothing): paths are bytes
    on Linux, and a name that is not UTF-8 (``/data/caf\xe9``) breaks them mid-run, so it is refused up front."""
    if not isinstance(value, (str, os.PathLike)):
        return None
    try:
        os.fspath(value).encode("utf-8")
    except UnicodeEncodeError:
        return f"must be a UTF-8 path, got {os.fsencode(value)!r} (rename it, or use a symbolic link with a UTF-8 name)"
    return None


@dataclass(frozen=True)
class TrainConfig:
    """Everything a recipe run needs; each field is also a command-line option (``batch_size`` -> ``--batch-size``)."""

    epochs: int = field(default=10, metadata=_opt("Training epochs.", min=1, max=MAX_EPOCHS))
    batch_size: int = field(
        default=32, metadata=_opt("Batch size per rank (global batch = this x ranks).", min=1, max=MAX_BATCH_SIZE)
    )
    lr: float = field(default=1e-3, metadata=_opt("Base learning rate, before scaling by world size.", min_open=0.0))
    lr_scaling: LrScaling = field(default="linear", metadata=_opt("How the LR grows with world size."))
    warmup_epochs: float = field(
        default=0.0, metadata=_opt("Epochs of linear LR warmup from lr/size up to the scaled LR.", min=0.0)
    )
    lr_schedule: LrSchedule = field(
        default="constant",
        metadata=_opt(
            "LR schedule after warmup: step (x0.1 at 50% and 75% of the epochs), cosine (to 0), sgdr (cosine with "
            "warm restarts, cycles of --lr-cycle-epochs doubling)."
        ),
    )
    lr_cycle_epochs: float = field(
        default=10.0, metadata=_opt("sgdr: epochs of the first cosine cycle (each next one twice as long).", min_open=0)
    )
    fp16_allreduce: bool = field(default=False, metadata=_opt("Compress gradients to float16 for the allreduce."))
    reduce_op: ReduceOp = field(default="average", metadata=_opt("How gradients are combined across ranks."))
    backward_passes_per_step: int = field(
        default=1, metadata=_opt("Gradient accumulation: local backward passes per allreduce.", min=1)
    )
    sparse_as_dense: bool = field(
        default=False, metadata=_opt("Allreduce sparse gradients (embeddings) as dense tensors.")
    )
    commit_every: int = field(
        default=20, metadata=_opt("Elastic runs: batches between commits of the state workers fall back to.", min=1)
    )
    data_dir: Path | None = field(
        default=None, metadata=_opt("Where the recipe's data lives (recipe default if unset).")
    )
    checkpoint_dir: Path | None = field(
        default=None, metadata=_opt("Write checkpoints here (rank 0) and resume from the newest one.")
    )
    checkpoint_every: int = field(default=1, metadata=_opt("Epochs between checkpoints.", min=1))
    keep_checkpoints: int = field(default=3, metadata=_opt("How many of the newest checkpoints to keep.", min=1))
    resume: ResumeMode = field(
        default="auto",
        metadata=_opt("Resume from --checkpoint-dir: auto (when it has a checkpoint), require, or never."),
    )
    log_dir: Path | None = field(default=None, metadata=_opt("Write metrics.jsonl and metrics.csv here (rank 0)."))
    tensorboard: bool = field(default=False, metadata=_opt("Also write TensorBoard logs under --log-dir."))
    seed: int = field(default=42, metadata=_opt("Random seed (each rank uses seed + rank).", min=0, max=MAX_SEED))
    log_all_ranks: bool = field(default=False, metadata=_opt("Log from every rank, not only rank 0."))

    def validate(self) -> TrainConfig:
        """Check values that depend on each other; raise ConfigError with one line."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if (problem := range_problem(f.metadata, value) or path_problem(value)) is not None:
                raise ConfigError(f"{option_name(f.name)} {problem}")
            if f.name.endswith("_dir") and isinstance(value, Path) and value.exists() and not value.is_dir():
                raise ConfigError(f"{option_name(f.name)} {value} is not a directory (it is a file)")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(f"--warmup-epochs ({self.warmup_epochs:g}) is longer than --epochs ({self.epochs})")
        if self.resume == "require" and self.checkpoint_dir is None:
            raise ConfigError("--resume require needs --checkpoint-dir")
        if self.tensorboard and self.log_dir is None:
            raise ConfigError("--tensorboard needs --log-dir")
        return self

    def with_overrides(self, overrides: dict[str, Any]) -> TrainConfig:
        """A copy with the given non-None values replaced (unknown keys are a ConfigError)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (paths as strings)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


def option_name(field_name: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return "--" + field_name.replace("_", "-")
