"""What both back ends share: the choice by Keras version, and the defaults init() sets before hvd.init()."""

from __future__ import annotations

import pytest
import tensorflow as tf
from conftest import PYTHON, launcher_argv, run

from hvdtrain import backends, tuning
from hvdtrain.backends import keras_major


def test_the_back_end_follows_the_installed_keras() -> None:
    backend = backends.current()
    keras3 = tuple(int(v) for v in tf.__version__.split(".")[:2]) >= (2, 16)  # tf.keras is Keras 3 from TF 2.16 on
    assert backend.KERAS_MAJOR == keras_major() == (3 if keras3 else 2)
    assert backend.__name__ == f"hvdtrain.backends.keras{keras_major()}"


_SHOW_DEFAULTS = """
import os
from hvdtrain.backends import core
world = core.init()
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
