"""Horovod through its Keras wrappers: ``hvd.DistributedOptimizer``, broadcast, metric averaging, LR warmup."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import horovod.tensorflow as hvd_core
import horovod.tensorflow.keras as hvd
import numpy as np
import tensorflow as tf

from hvdtrain import tuning
from hvdtrain.config import ConfigError, TrainConfig
from hvdtrain.lr import schedule_multiplier

_OPS = {"average": hvd.Average, "sum": hvd.Sum}


@dataclass(frozen=True)
class World:
    """Where this process sits in the job."""

    rank: int
    size: int
    local_rank: int
    local_size: int
    # What hvdtrain set before hvd.init() because the user had not (tuning.apply_runtime_defaults).
    defaults_applied: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def is_root(self) -> bool:
        return self.rank == 0


def init(comm: Any = None) -> World:
    """Start Horovod (optionally on an mpi4py communicator), pin one GPU per local rank or size CPU threads.

    hvdtrain's tuned cycle time and fusion threshold, and MPI yielding on CPU hosts, go into the environment first
    where the user has not set them (:mod:`hvdtrain.tuning`); ``World.defaults_applied`` says which.
    """
    applied = tuning.apply_runtime_defaults(on_gpu=tuning.gpu_host())  # no TensorFlow call before hvd.init()
    hvd.init(comm=comm) if comm is not None else hvd.init()
    world = World(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size(), applied)
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpus[world.local_rank % len(gpus)], "GPU")
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        tf.config.threading.set_intra_op_parallelism_threads(max(1, cores // world.local_size))
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, cores // world.local_size)))
    return world


def distributed_optimizer(optimizer: tf.keras.optimizers.Optimizer, config: TrainConfig) -> Any:
    """Wrap ``optimizer`` so gradients are ring-allreduced; unsupported combinations raise ConfigError."""
    if config.reduce_op not in _OPS:  # Horovod's Keras optimizer takes Average and Sum only
        raise ConfigError("--reduce-op adasum is not supported with Horovod's Keras optimizer; use average or sum")
    compression = hvd.Compression.fp16 if config.fp16_allreduce else hvd.Compression.none
    return hvd.DistributedOptimizer(
        optimizer,
        compression=compression,
        backward_passes_per_step=config.backward_passes_per_step,
        average_aggregated_gradients=config.backward_passes_per_step > 1,
        sparse_as_dense=config.sparse_as_dense,
        op=_OPS[config.reduce_op],
    )


def callbacks(
    config: TrainConfig, scaled_lr: float, steps_per_epoch: int, broadcast: bool = True
) -> list[tf.keras.callbacks.Callback]:
    """Horovod's callbacks, in the order they must run: broadcast (not in elastic runs, whose state sync does it),
    metric average, warmup, schedule."""
    stack: list[tf.keras.callbacks.Callback] = [hvd.callbacks.BroadcastGlobalVariablesCallback(0)] if broadcast else []
    stack.append(hvd.callbacks.MetricAverageCallback())
    if config.warmup_epochs > 0:
        stack.append(
            hvd.callbacks.LearningRateWarmupCallback(
                initial_lr=scaled_lr, warmup_epochs=config.warmup_epochs, steps_per_epoch=steps_per_epoch
            )
        )
    if config.lr_schedule != "constant":
        stack.append(
            hvd.callbacks.LearningRateScheduleCallback(
                initial_lr=scaled_lr,
                multiplier=lambda epoch: schedule_multiplier(
                    config.lr_schedule, epoch, config.warmup_epochs, config.epochs
                ),
                start_epoch=int(np.ceil(config.warmup_epochs)),
                staircase=False,
                steps_per_epoch=steps_per_epoch,
            )
        )
    return stack


def world() -> World:
    """The world as it is now (it changes when elastic workers leave or join)."""
    return World(hvd.rank(), hvd.size(), hvd.local_rank(), hvd.local_size())


def is_elastic() -> bool:
    """Whether ``horovodrun --elastic`` started this process."""
    return os.environ.get("HOROVOD_ELASTIC") == "1"


class _EpochState(tf.keras.callbacks.Callback):
    """Record finished epochs in the elastic state (Keras epochs are absolute here: fit uses ``initial_epoch``)."""

    def __init__(self, state: Any) -> None:
        super().__init__()
        self.state = state

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.state.epoch = epoch + 1


def run_elastic(
    model: tf.keras.Model,
    first_epoch: int,
    fit: Callable[[int, list[tf.keras.callbacks.Callback]], dict[str, list[float]]],
    commit_every: int,
) -> dict[str, list[float]]:
    """Run ``fit(epoch, callbacks)`` in Horovod's elastic loop, committing state every ``commit_every`` batches.

    After workers leave or join, the committed model and optimizer state is synced from rank 0 and ``fit`` is
    called again from the committed epoch.
    """
    state = hvd.elastic.KerasState(model, batch=0, epoch=first_epoch)

    @hvd.elastic.run
    def loop(state: Any) -> dict[str, list[float]]:
        return fit(
            state.epoch,
            [
                hvd.elastic.CommitStateCallback(state, batches_per_commit=commit_every),
                hvd.elastic.UpdateBatchStateCallback(state),
                _EpochState(state),
            ],
        )

    return loop(state)


def global_sum(values: np.ndarray, name: str) -> np.ndarray:
    """Element-wise sum of ``values`` over all ranks."""
    return hvd_core.allreduce(tf.constant(values, dtype=tf.float64), op=hvd_core.Sum, name=name).numpy()


def broadcast_object(obj: Any, name: str) -> Any:
    """Rank 0's ``obj`` on every rank (also a barrier: nobody passes before rank 0 has sent)."""
    return hvd_core.broadcast_object(obj, root_rank=0, name=name)


def shutdown() -> None:
    """Stop Horovod's background thread."""
    hvd.shutdown()
