"""hvdtrain's tuned Horovod defaults: cycle time and fusion threshold, chosen from ``docs/benchmarks.md``.

Horovod 0.28.1's own defaults (``horovod/common/operations.cc``) are a 1 ms cycle time and a 128 MiB fusion threshold.
Horovod's background thread sleeps until a cycle is over before it negotiates the tensors queued since, so a lone
small allreduce waits most of a cycle: on the 2-core test machine that is about 1 ms per small allreduce at the
default, and a model with many small gradients that arrive spread over the backward pass pays it again and again.
The measurements (``hvdtrain bench allreduce`` and ``hvdtrain bench scaling synthetic --model small-layers``, both in
``docs/benchmarks.md``) chose the values below. Users override either the usual way: ``HOROVOD_CYCLE_TIME`` /
``HOROVOD_FUSION_THRESHOLD`` in the environment, horovodrun's ``--cycle-time-ms`` / ``--fusion-threshold-mb``, or
``HorovodKnobs``. With ``HOROVOD_AUTOTUNE`` on, nothing is set, so Horovod's autotuner stays free to tune both.

Pure Python: imports neither TensorFlow nor Horovod.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, MutableMapping

from hvdtrain.launch import HorovodKnobs

MIB = 1024 * 1024

# Horovod 0.28.1's compiled-in defaults (horovod/common/operations.cc: SetCycleTimeMs(1),
# SetTensorFusionThresholdBytes(128 * 1024 * 1024)).
HOROVOD_DEFAULT_CYCLE_TIME_MS = 1.0
HOROVOD_DEFAULT_FUSION_THRESHOLD_MB = 128

# hvdtrain's defaults, measured in docs/benchmarks.md.
TUNED_CYCLE_TIME_MS = 0.1
TUNED_FUSION_THRESHOLD_MB = 64

CYCLE_TIME_VAR = "HOROVOD_CYCLE_TIME"  # milliseconds, a float
FUSION_THRESHOLD_VAR = "HOROVOD_FUSION_THRESHOLD"  # bytes, an integer; 0 disables tensor fusion
_OFF_SWITCHES = ("HOROVOD_AUTOTUNE",)  # when on, explicit values would pin what the autotuner tunes
_FALSE = ("", "0", "false", "no", "off")


def _on(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() not in _FALSE


def format_ms(value: float) -> str:
    """``0.1`` -> ``"0.1"``, ``1.0`` -> ``"1"``: what HOROVOD_CYCLE_TIME holds."""
    return str(int(value)) if value == int(value) else repr(float(value))


def tuned_env(
    cycle_time_ms: float = TUNED_CYCLE_TIME_MS, fusion_threshold_mb: float = TUNED_FUSION_THRESHOLD_MB
) -> dict[str, str]:
    """The tuned values as Horovod environment variables."""
    return {CYCLE_TIME_VAR: format_ms(cycle_time_ms), FUSION_THRESHOLD_VAR: str(round(fusion_threshold_mb * MIB))}


def apply_tuned_defaults(env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set HOROVOD_CYCLE_TIME / HOROVOD_FUSION_THRESHOLD in ``env`` (default ``os.environ``) where the user has not.

    Call it before ``hvd.init()`` (Horovod reads both once, at start-up). A variable that is present is the user's
    choice and is left alone, even when empty (Horovod reads an empty HOROVOD_CYCLE_TIME as 0). Nothing is set while
    HOROVOD_AUTOTUNE is on, and the cycle time is left to Horovod when HOROVOD_ENABLE_XLA_OPS is on (Horovod then
    defaults to 0). Returns what was set.
    """
    env = os.environ if env is None else env
    if any(_on(env, name) for name in _OFF_SWITCHES):
        return {}
    chosen = {name: value for name, value in tuned_env().items() if name not in env}
    if _on(env, "HOROVOD_ENABLE_XLA_OPS"):
        chosen.pop(CYCLE_TIME_VAR, None)
    env.update(chosen)
    return chosen


def tuned_knobs(knobs: HorovodKnobs, env: Mapping[str, str] | None = None) -> HorovodKnobs:
    """``knobs`` with the tuned cycle time and fusion threshold filled in where neither ``knobs`` nor ``env`` sets one.

    For the launcher: horovodrun's flags override the environment it forwards, so a value the user exported is
    respected by leaving the knob unset. Autotuning leaves both unset.
    """
    env = os.environ if env is None else env
    if knobs.autotune or any(_on(env, name) for name in _OFF_SWITCHES):
        return knobs
    changes: dict[str, float] = {}
    if knobs.cycle_time_ms is None and CYCLE_TIME_VAR not in env and not _on(env, "HOROVOD_ENABLE_XLA_OPS"):
        changes["cycle_time_ms"] = TUNED_CYCLE_TIME_MS
    if knobs.fusion_threshold_mb is None and FUSION_THRESHOLD_VAR not in env:
        changes["fusion_threshold_mb"] = TUNED_FUSION_THRESHOLD_MB
    return dataclasses.replace(knobs, **changes)


MPI_YIELD_VAR = "OMPI_MCA_mpi_yield_when_idle"


def mpi_yield_env(local_ranks: int, cores: int | None = None, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{OMPI_MCA_mpi_yield_when_idle: "1"}`` when a host runs as many ranks as it has cores (CPU training), else {}.

    Horovod's MPI controller negotiates every cycle, and Open MPI busy-polls while it waits: measured on the 2-core
    machine, one of two idle ranks burns a whole core at any cycle time, stealing it from TensorFlow. Open MPI yields
    on its own only when it sees more ranks than slots; a background thread per rank is invisible to it. Yielding
    made the many-small-layers model ~1.8x faster at np=2 there (docs/benchmarks.md). Must reach the ranks before
    MPI starts (``mpirun -x``, or ``os.environ`` before ``hvd.init()``); a value the user set is left alone.
    """
    env = os.environ if env is None else env
    cores = cores if cores is not None else (os.cpu_count() or 1)
    if MPI_YIELD_VAR in env or local_ranks < cores:
        return {}
    return {MPI_YIELD_VAR: "1"}


def horovod_default_knobs() -> HorovodKnobs:
    """Horovod's own defaults, spelled out (so that no environment or tuning can change what they mean)."""
    return HorovodKnobs(
        cycle_time_ms=HOROVOD_DEFAULT_CYCLE_TIME_MS, fusion_threshold_mb=HOROVOD_DEFAULT_FUSION_THRESHOLD_MB
    )


def hvdtrain_tuned_knobs() -> HorovodKnobs:
    """hvdtrain's tuned defaults, spelled out."""
    return HorovodKnobs(cycle_time_ms=TUNED_CYCLE_TIME_MS, fusion_threshold_mb=TUNED_FUSION_THRESHOLD_MB)
