"""hvdtrain's tuned Horovod defaults: cycle time and fusion threshold, chosen from ``docs/benchmarks.md``.

Horovod 0.28.1's own defaults (``horovod/common/operations.cc``) are a 1 ms cycle time and a 128 MiB fusion threshold.
Horovod's background thread sleeps until a cycle is over before it negotiates the tensors queued since, so a lone
small allreduce takes roughly two cycles plus 0.1 ms: on the 2-core test machine 2.1 ms at the 1 ms default, 0.3 ms at
0.1 ms and 0.19 ms at 0.05 ms (``hvdtrain bench allreduce --cycle-time-sweep``). A model with many small gradients
that arrive spread over the backward pass pays that again and again: the many-small-layers model trained 1.04-1.2x
faster at any cycle time from 0 to 0.25 ms than at 1 ms (``hvdtrain bench scaling``), and 0 ms keeps a core busy.
The fusion threshold made no measurable difference to ResNet50 between 8 and 128 MiB, so hvdtrain takes half of
Horovod's buffer. All of it is in ``docs/benchmarks.md``. Users override either the usual way: ``HOROVOD_CYCLE_TIME`` /
``HOROVOD_FUSION_THRESHOLD`` in the environment, or horovodrun's / ``hvdtrain run``'s ``--cycle-time-ms`` /
``--fusion-threshold-mb``. With ``HOROVOD_AUTOTUNE`` on, nothing is set, so Horovod's autotuner stays free to tune
both. Open MPI jobs with one rank on each of 3 or more hosts also get Open MPI's ring for the allreduce
(:func:`apply_mpi_ring`). The back end applies them in every rank (:func:`apply_runtime_defaults`, called by
``backend.init()``), so they hold however the job was launched.

Pure Python: imports neither TensorFlow nor Horovod.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

from hvdtrain.knobs import KNOB, HorovodKnobs, format_number

# Horovod 0.28.1's compiled-in defaults (horovod/common/operations.cc: SetCycleTimeMs(1),
# SetTensorFusionThresholdBytes(128 * 1024 * 1024)).
HOROVOD_DEFAULT_CYCLE_TIME_MS = 1.0
HOROVOD_DEFAULT_FUSION_THRESHOLD_MB = 128

# hvdtrain's defaults, measured in docs/benchmarks.md.
TUNED_CYCLE_TIME_MS = 0.05
TUNED_FUSION_THRESHOLD_MB = 64

(CYCLE_TIME_VAR,) = KNOB["cycle_time_ms"].env  # HOROVOD_CYCLE_TIME: milliseconds, a float
(FUSION_THRESHOLD_VAR,) = KNOB["fusion_threshold_mb"].env  # HOROVOD_FUSION_THRESHOLD: bytes; 0 disables fusion
ELASTIC_VAR = "HOROVOD_ELASTIC"  # "1" in the workers of horovodrun --elastic
_OFF_SWITCHES = ("HOROVOD_AUTOTUNE",)  # when on, explicit values would pin what the autotuner tunes
_FALSE = ("", "0", "false", "no", "off")


def _on(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() not in _FALSE


format_ms = format_number  # ``0.1`` -> ``"0.1"``, ``1.0`` -> ``"1"``: what HOROVOD_CYCLE_TIME holds


def tuned_env(
    cycle_time_ms: float = TUNED_CYCLE_TIME_MS, fusion_threshold_mb: float = TUNED_FUSION_THRESHOLD_MB
) -> dict[str, str]:
    """The tuned values as Horovod environment variables (written as the knob table writes them)."""
    return KNOB["cycle_time_ms"].env_of(cycle_time_ms) | KNOB["fusion_threshold_mb"].env_of(fusion_threshold_mb)


def apply_tuned_defaults(env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set HOROVOD_CYCLE_TIME / HOROVOD_FUSION_THRESHOLD in ``env`` (default ``os.environ``) where the user has not.

    Call it before ``hvd.init()`` (Horovod reads both once, at start-up). A variable that is present is the user's
    choice and is left alone, even when empty (Horovod reads an empty HOROVOD_CYCLE_TIME as 0). Nothing is set while
    HOROVOD_AUTOTUNE is on, and the cycle time is left to Horovod when HOROVOD_ENABLE_XLA_OPS is on (Horovod then
    defaults to 0). Returns what was set.

    Under ``horovodrun --elastic`` (HOROVOD_ELASTIC=1) at most one of the two is ever set: with both set, Horovod
    0.28.1's rank 0 crashes (segmentation fault) when a worker leaves (measured: tests/test_elastic.py). The
    fusion threshold is left to Horovod there, and the cycle time too when the user set the fusion threshold.
    """
    env = os.environ if env is None else env
    if any(_on(env, name) for name in _OFF_SWITCHES):
        return {}
    chosen = {name: value for name, value in tuned_env().items() if name not in env}
    if _on(env, "HOROVOD_ENABLE_XLA_OPS"):
        chosen.pop(CYCLE_TIME_VAR, None)
    if env.get(ELASTIC_VAR) == "1":
        chosen.pop(FUSION_THRESHOLD_VAR, None)
        if FUSION_THRESHOLD_VAR in env:
            chosen.pop(CYCLE_TIME_VAR, None)
    env.update(chosen)
    return chosen


MPI_YIELD_VAR = "OMPI_MCA_mpi_yield_when_idle"


def apply_mpi_yield(on_gpu: bool, env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set ``OMPI_MCA_mpi_yield_when_idle=1`` in ``env`` (default ``os.environ``) for CPU training; return what was set.

    Horovod's MPI controller negotiates every cycle, and Open MPI busy-polls while it waits, so on a CPU host the
    background thread of each rank takes cycles from TensorFlow's threads. Open MPI yields on its own only when it
    sees more ranks than slots; a background thread per rank is invisible to it. Yielding made the many-small-layers
    model about twice as fast at np=2 on the 2-core test machine (docs/benchmarks.md). On GPU hosts spare cores are
    the rule and busy-polling keeps latency low, so nothing is set. Call it before MPI starts (``hvd.init()``); a
    value the user set is left alone.
    """
    env = os.environ if env is None else env
    if on_gpu or MPI_YIELD_VAR in env:
        return {}
    env[MPI_YIELD_VAR] = "1"
    return {MPI_YIELD_VAR: "1"}


# Open MPI's tuned collectives: allreduce algorithm 4 is the ring (ompi/mca/coll/tuned/coll_tuned_allreduce_decision.c).
MPI_RING_ENV = {"OMPI_MCA_coll_tuned_use_dynamic_rules": "1", "OMPI_MCA_coll_tuned_allreduce_algorithm": "4"}


def one_rank_per_host(env: Mapping[str, str]) -> bool:
    """Whether this Open MPI job has 3 or more ranks, one on each host (from values every rank sees alike)."""
    try:
        size, nodes = int(env["OMPI_COMM_WORLD_SIZE"]), int(env["OMPI_MCA_orte_num_nodes"])
    except (KeyError, ValueError):
        return False
    return size >= 3 and nodes == size


def apply_mpi_ring(env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Make Open MPI's allreduce the ring when the job has one rank on each of 3 or more hosts; return what was set.

    Open MPI 4.1's own choice for 3 ranks and large buffers is not a ring: on 3 hosts at 1 Gbit/s rank 0's link
    carried 1.9x the ring's bytes, and ResNet50 trained at 13.6 samples/s against 29.2-31.3 with the ring
    (``hvdtrain bench cluster --hosts 3``, docs/cluster.md). With several ranks per host the ring (in rank order)
    crosses each host's link with 1.5x what Open MPI's own choice sent (4 ranks on 2 hosts), and with 2 ranks every
    algorithm sends the same: nothing is set then. Every rank decides alike (an algorithm that differs between ranks
    would hang the job). Call it before MPI starts (``hvd.init()``); if the user set either variable, both are left
    to them.
    """
    env = os.environ if env is None else env
    if not one_rank_per_host(env) or any(name in env for name in MPI_RING_ENV):
        return {}
    env.update(MPI_RING_ENV)
    return dict(MPI_RING_ENV)


GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd")  # NVIDIA's driver, AMD ROCm's


def gpu_host() -> bool:
    """Whether this host has a GPU driver loaded, judged from device files alone.

    Asking TensorFlow (``tf.config.list_physical_devices``, even ``tf.test.is_built_with_cuda``) before
    ``hvd.init()`` made rank 0 crash with a segmentation fault when an elastic job lost a worker (Horovod 0.28.1,
    TF 2.15, Gloo; tests/test_elastic.py), so the back end decides without TensorFlow.
    """
    return any(os.path.exists(path) for path in GPU_DEVICE_FILES)


def apply_runtime_defaults(on_gpu: bool, env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set what hvdtrain tunes before ``hvd.init()``; return what was set.

    The tuned knobs, MPI yielding on CPU, and Open MPI's ring when each of 3 or more hosts holds one rank."""
    env = os.environ if env is None else env
    return apply_tuned_defaults(env) | apply_mpi_yield(on_gpu, env) | apply_mpi_ring(env)


def horovod_default_knobs() -> HorovodKnobs:
    """Horovod's own defaults, spelled out (so that no environment or tuning can change what they mean)."""
    return HorovodKnobs(
        cycle_time_ms=HOROVOD_DEFAULT_CYCLE_TIME_MS, fusion_threshold_mb=HOROVOD_DEFAULT_FUSION_THRESHOLD_MB
    )


def hvdtrain_tuned_knobs() -> HorovodKnobs:
    """hvdtrain's tuned defaults, spelled out."""
    return HorovodKnobs(cycle_time_ms=TUNED_CYCLE_TIME_MS, fusion_threshold_mb=TUNED_FUSION_THRESHOLD_MB)
