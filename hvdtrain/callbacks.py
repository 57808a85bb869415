"""Keras callbacks hvdtrain adds on top of Horovod's: a throughput meter, a JSON-lines metrics log, rank 0's
checkpoints, and the epoch counter of elastic runs."""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import tensorflow as tf

from hvdtrain import checkpoint
from hvdtrain.log import get_logger


class ThroughputMeter(tf.keras.callbacks.Callback):
    """Global samples/s per epoch, added to the epoch logs with the LR and epoch time: Keras's own line for the
    epoch shows them (and the CSV and JSON-lines logs record them), so each epoch is reported once.

    The first epoch (graph tracing, warm caches) is excluded from ``summary()``.
    """

    def __init__(self, samples_per_epoch: int) -> None:
        super().__init__()
        self.samples_per_epoch = samples_per_epoch
        self.rates: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        elapsed = time.perf_counter() - self._start
        rate = self.samples_per_epoch / elapsed
        self.rates.append(rate)
        if logs is not None:
            logs["lr"] = float(tf.keras.backend.get_value(self.model.optimizer.learning_rate))
            logs["epoch_time_s"] = elapsed
            logs["samples_per_sec"] = rate

    def summary(self) -> tuple[float, float] | None:
        """Mean and standard deviation of samples/s over epochs after the first; None with fewer than 2 epochs."""
        steady = self.rates[1:]
        if not steady:
            return None
        return statistics.fmean(steady), (statistics.stdev(steady) if len(steady) > 1 else 0.0)


class TrainingDiverged(RuntimeError):
    """The loss became nan or inf; the message (one line) names the epoch and step."""


class StopOnNonFiniteLoss(tf.keras.callbacks.Callback):
    """Raise :class:`TrainingDiverged` at the first batch whose loss is nan or inf.

    Keras's ``TerminateOnNaN`` only ends ``fit`` early, after which the run would evaluate and exit 0.
    """

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDiverged(
                f"the loss became {float(loss)} at epoch {self.epoch + 1}, step {batch + 1}: training stopped "
                "(try a lower --lr or more --warmup-epochs; checkpoints already written are kept)"
            )


class JsonLinesLogger(tf.keras.callbacks.Callback):
    """One JSON object per epoch (``{"epoch": 1, "loss": ..., ...}``) appended to ``path``."""

    def __init__(self, path: Path, append: bool = False) -> None:
        super().__init__()
        self.path = path
        self.append = append

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.append:
            self.path.write_text("")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        row = {"epoch": epoch + 1, **{k: _plain(v) for k, v in (logs or {}).items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def _plain(value: Any) -> Any:
    number = float(value)
    return number if math.isfinite(number) else None


class EpochCheckpoint(tf.keras.callbacks.Callback):
    """Rank 0's atomic checkpoint every ``every`` epochs (and after the last), keeping the newest ``keep``."""

    def __init__(
        self, directory: Path, recipe: str, config: dict[str, Any], world_size: int, every: int, keep: int
    ) -> None:
        super().__init__()
        self.directory, self.recipe, self.config = directory, recipe, config
        self.world_size, self.every, self.keep = world_size, every, keep

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        done = epoch + 1
        if done % self.every and done != self.params.get("epochs"):
            return
        state = checkpoint.Checkpoint(
            epoch=done,
            recipe=self.recipe,
            world_size=self.world_size,
            config=self.config,
            weights=self.model.get_weights(),
            optimizer=[v.numpy() for v in self.model.optimizer.variables],
        )
        path = checkpoint.save(self.directory, state, self.keep)
        get_logger().info("epoch %d: checkpoint %s", done, path)


class ElasticEpochCounter(tf.keras.callbacks.Callback):
    """Record finished epochs in the elastic state (Keras epochs are absolute here: fit uses ``initial_epoch``)."""

    def __init__(self, state: Any) -> None:
        super().__init__()
        self.state = state

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.state.epoch = epoch + 1
