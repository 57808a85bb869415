"""The Horovod Keras back end: optimizer wrap, callback stack, and the defaults init() sets before hvd.init()."""

from __future__ import annotations

import horovod.tensorflow.keras as hvd
import pytest
import tensorflow as tf
from conftest import PYTHON, launcher_argv, run

from hvdtrain import tuning
from hvdtrain.backends import horovod_keras as backend
from hvdtrain.config import ConfigError, TrainConfig


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


_SHOW_DEFAULTS = """
import os
from hvdtrain.backends import horovod_keras as backend
world = backend.init()
names = ("HOROVOD_CYCLE_TIME", "HOROVOD_FUSION_THRESHOLD", "OMPI_MCA_mpi_yield_when_idle")
print(f"rank {world.rank}: applied {sorted(world.defaults_applied.items())} seen {[os.environ.get(n) for n in names]}")
"""


@pytest.mark.multiproc
def test_init_sets_tuned_defaults_in_every_rank_unless_the_user_did() -> None:
    fusion = str(tuning.TUNED_FUSION_THRESHOLD_MB * 1024 * 1024)
    proc = run([*launcher_argv("mpirun", 2), PYTHON, "-c", _SHOW_DEFAULTS], env={"HOROVOD_CYCLE_TIME": "0.5"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    yields = not tuning.gpu_host()  # MPI yielding is for CPU hosts only
    applied = [("HOROVOD_FUSION_THRESHOLD", fusion)] + [("OMPI_MCA_mpi_yield_when_idle", "1")] * yields
    for rank in (0, 1):
        seen = ["0.5", fusion, "1" if yields else None]
        assert f"rank {rank}: applied {applied} seen {seen}" in proc.stdout
