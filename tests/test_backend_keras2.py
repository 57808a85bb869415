"""The Keras 2 back end (TensorFlow 2.15): Horovod's optimizer wrapper and callback stack."""

from __future__ import annotations

import pytest
import tensorflow as tf

from hvdtrain.backends import keras_major
from hvdtrain.config import ConfigError, TrainConfig

pytestmark = pytest.mark.skipif(keras_major() != 2, reason="Keras 2 back end: runs on the tf2.15 stack")

if keras_major() == 2:
    import horovod.tensorflow.keras as hvd

    from hvdtrain.backends import keras2 as backend


def test_optimizer_is_wrapped_with_its_settings_kept() -> None:
    opt = backend.distributed_optimizer(tf.keras.optimizers.Adam(learning_rate=0.004), TrainConfig())
    assert isinstance(opt, tf.keras.optimizers.Adam) and type(opt).__module__ == "horovod._keras"
    assert opt._name == "DistributedAdam"
    assert opt.get_config()["learning_rate"] == pytest.approx(0.004)
    assert opt._agg_helper is None  # one allreduce per step


def test_gradient_accumulation_reaches_horovod() -> None:
    config = TrainConfig(backward_passes_per_step=4)
    opt = backend.distributed_optimizer(tf.keras.optimizers.SGD(0.1), config)
    assert opt._agg_helper.backward_passes_per_step == 4
    assert opt._agg_helper.average_aggregated_gradients is True


def test_adasum_with_keras_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="adasum is not supported"):
        backend.distributed_optimizer(tf.keras.optimizers.SGD(0.1), TrainConfig(reduce_op="adasum"))


def test_callback_order_broadcast_then_average_then_lr() -> None:
    plain = backend.callbacks(TrainConfig(), scaled_lr=0.02, steps_per_epoch=10)
    assert [type(c) for c in plain] == [
        hvd.callbacks.BroadcastGlobalVariablesCallback,
        hvd.callbacks.MetricAverageCallback,
    ]
    full = backend.callbacks(
        TrainConfig(epochs=10, warmup_epochs=2, lr_schedule="cosine"), scaled_lr=0.02, steps_per_epoch=10
    )
    assert [type(c) for c in full][2:] == [
        hvd.callbacks.LearningRateWarmupCallback,
        hvd.callbacks.LearningRateScheduleCallback,
    ]
    warmup, schedule = full[2:]
    assert warmup.initial_lr == schedule.initial_lr == 0.02
    assert schedule.start_epoch == 2 and schedule.multiplier(6.0) == pytest.approx(0.5)
