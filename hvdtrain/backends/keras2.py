"""Keras 2 (TensorFlow 2.15) through Horovod's Keras wrappers: ``hvd.DistributedOptimizer``, broadcast, metric
averaging, LR warmup and schedule callbacks, ``hvd.elastic.KerasState``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import horovod.tensorflow.keras as hvd
import numpy as np
import tensorflow as tf

from hvdtrain.backends.core import broadcast_object, global_sum, init, shutdown, world  # noqa: F401 - shared
from hvdtrain.callbacks import ElasticEpochCounter
from hvdtrain.config import ConfigError, TrainConfig
from hvdtrain.lr import schedule_multiplier

KERAS_MAJOR = 2

_OPS = {"average": hvd.Average, "sum": hvd.Sum}


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


def compile_options() -> dict[str, Any]:
    """Extra ``model.compile`` arguments: none on Keras 2."""
    return {}


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
                    config.lr_schedule, epoch, config.warmup_epochs, config.epochs, config.lr_cycle_epochs
                ),
                start_epoch=int(np.ceil(config.warmup_epochs)),
                staircase=False,
                steps_per_epoch=steps_per_epoch,
            )
        )
    return stack


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
                ElasticEpochCounter(state),
            ],
        )

    return loop(state)
