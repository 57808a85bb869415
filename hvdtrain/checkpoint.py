"""Atomic epoch checkpoints: model weights, optimizer state, epoch, recipe and config in one ``.npz`` file.

Rank 0 writes ``epoch-0003.npz`` through a temporary name, fsyncs it and renames it into place, so a job killed at
any moment leaves either the whole file or none: SIGTERM or SIGHUP during a save (a scheduler's cancel) removes the
temporary file before the process ends as the signal says; one that SIGKILL left behind is removed by the next save.
The newest ``keep`` files are kept. Loading skips a truncated or corrupt newest file with a warning and falls back to
the one before.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hvdtrain.data import DataError
from hvdtrain.log import get_logger

_NAME = re.compile(r"^epoch-(\d{4,})\.npz$")
FORMAT_VERSION = 1
_TMP_PREFIX = ".tmp-"


@dataclass
class Checkpoint:
    """What a checkpoint holds; ``epoch`` is the number of completed epochs."""

    epoch: int
    recipe: str
    world_size: int
    config: dict[str, Any]
    weights: list[np.ndarray]
    optimizer: list[np.ndarray]
    path: Path | None = None


def checkpoint_path(directory: Path, epoch: int) -> Path:
    return directory / f"epoch-{epoch:04d}.npz"


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


_END_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # their default action ends the process without Python's cleanup


@contextlib.contextmanager
def _removed_on_signal() -> Iterator[list[str]]:
    """While inside: SIGTERM or SIGHUP deletes the paths put in the yielded list, then ends the process with that
    signal (its default action, so the exit status is what it would have been). Only the main thread can hold signal
    handlers; elsewhere nothing is installed."""
    pending: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield pending
        return

    def remove_then_die(signum: int, _frame: Any) -> None:
        for path in pending:
            Path(path).unlink(missing_ok=True)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    previous = {s: signal.signal(s, remove_then_die) for s in _END_SIGNALS}
    try:
        yield pending
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def save(directory: Path, ckpt: Checkpoint, keep: int) -> Path:
    """Write ``ckpt`` atomically (temporary file, fsync, rename) and delete all but the newest ``keep``."""
    directory.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT_VERSION,
        "epoch": ckpt.epoch,
        "recipe": ckpt.recipe,
        "world_size": ckpt.world_size,
        "config": ckpt.config,
        "n_weights": len(ckpt.weights),
        "n_optimizer": len(ckpt.optimizer),
    }
    arrays = {f"w{i}": w for i, w in enumerate(ckpt.weights)}
    arrays.update({f"o{i}": v for i, v in enumerate(ckpt.optimizer)})
    target = checkpoint_path(directory, ckpt.epoch)
    with _removed_on_signal() as pending:
        fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".npz", dir=directory)
        pending.append(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    for stale in directory.glob(f"{_TMP_PREFIX}*.npz"):  # left by a save that a signal ended (only rank 0 writes)
        stale.unlink(missing_ok=True)
    return target


def load(path: Path) -> Checkpoint:
    """Read one checkpoint file; ValueError (or OSError) when it is truncated or corrupt."""
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            weights = [f[f"w{i}"] for i in range(meta["n_weights"])]
            optimizer = [f[f"o{i}"] for i in range(meta["n_optimizer"])]
    except (zipfile.BadZipFile, KeyError, EOFError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path.name} is truncated or corrupt ({type(exc).__name__})") from None
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path.name} has unknown format {meta.get('format')!r}")
    return Checkpoint(meta["epoch"], meta["recipe"], meta["world_size"], meta["config"], weights, optimizer, path=path)


def load_latest(directory: Path) -> Checkpoint | None:
    """The newest readable checkpoint; unreadable newer ones are skipped with a warning."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return load(path)
        except (ValueError, OSError) as exc:
            get_logger().warning("skipping checkpoint %s: %s", path, exc)
    return None


def check_writable(directory: Path) -> None:
    """DataError when checkpoints cannot be written to ``directory`` (checked before training starts)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise DataError(f"cannot write checkpoints to {directory}: {exc.strerror or exc}") from None
