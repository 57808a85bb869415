"""``hvdtrain check``: what this machine offers for a Horovod run, one ``name  value`` line per item.

Every probe catches its own failure and reports it as a line, so the report is always complete.
"""

from __future__ import annotations

import importlib
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable

from hvdtrain import __version__
from hvdtrain.hosts import format_hosts_arg
from hvdtrain.schedulers import SchedulerError, detect_environment

MPIRUN_TIMEOUT_S = 10


def _mark(flag: bool) -> str:
    return "[X]" if flag else "[ ]"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def controller_problem(controller: str) -> str | None:
    """Why Horovod cannot run the ``mpi`` or ``gloo`` controller here, or None when it can."""
    try:
        import horovod.tensorflow as hvd
    except Exception as exc:  # noqa: BLE001 - a broken build raises anything
        return f"Horovod is not usable: {_first_line(exc)} (re-run: make setup)"
    built = hvd.mpi_built() if controller == "mpi" else hvd.gloo_built()
    if built:
        return None
    other = "--gloo" if controller == "mpi" else "--mpi"
    flag = "HOROVOD_WITH_MPI=1" if controller == "mpi" else "HOROVOD_WITH_GLOO=1"
    return f"this Horovod was built without {controller.upper()}; use {other}, or rebuild Horovod with {flag}"


def _horovod() -> tuple[list[tuple[str, str]], bool]:
    try:
        import horovod
        import horovod.tensorflow as hvd
    except Exception as exc:  # noqa: BLE001 - a broken build raises anything; report it
        return [("Horovod", f"not usable: {_first_line(exc)}")], False
    built: dict[str, Callable[[], bool]] = {
        "MPI": hvd.mpi_built,
        "Gloo": hvd.gloo_built,
        "NCCL": hvd.nccl_built,
        "DDL": hvd.ddl_built,
        "CCL": hvd.ccl_built,
        "CUDA": hvd.cuda_built,
    }
    flags: dict[str, bool] = {}
    for name, probe in built.items():
        try:
            flags[name] = bool(probe())
        except Exception:  # noqa: BLE001 - an unbuilt feature may raise instead of returning False
            flags[name] = False
    ops = ("NCCL", "DDL", "CCL", "MPI", "Gloo")
    lines = [
        ("Horovod", f"{horovod.__version__}"),
        ("  frameworks", f"{_mark(True)} TensorFlow"),
        ("  controllers", f"{_mark(flags['MPI'])} MPI  {_mark(flags['Gloo'])} Gloo"),
        ("  tensor ops", "  ".join(f"{_mark(flags[op])} {op}" for op in ops)),
        ("  CUDA", "built" if flags["CUDA"] else "not built"),
    ]
    usable = flags["MPI"] or flags["Gloo"]
    if not usable:
        lines.append(("  problem", "built with neither MPI nor Gloo: no controller to run with"))
    return lines, usable


def _tensorflow() -> tuple[list[tuple[str, str]], bool]:
    try:
        tf = importlib.import_module("tensorflow")
    except Exception as exc:  # noqa: BLE001
        return [("TensorFlow", f"not importable: {_first_line(exc)}")], False
    from hvdtrain.backends import keras_version

    keras = keras_version()
    backend = "keras3 (Horovod's core collectives)" if keras.startswith("3") else "keras2 (Horovod's Keras wrappers)"
    lines = [("TensorFlow", f"{tf.__version__}, Keras {keras}: hvdtrain back end {backend}")]
    try:
        gpus = tf.config.list_physical_devices("GPU")
        lines.append(("GPUs", f"{len(gpus)}: " + ", ".join(g.name for g in gpus) if gpus else "none (CPU only)"))
    except Exception as exc:  # noqa: BLE001
        lines.append(("GPUs", f"unknown: {_first_line(exc)}"))
    return lines, True


def _mpi() -> tuple[str, str]:
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        return "MPI", "not found (mpirun is not on PATH; horovodrun --gloo still works on one host)"
    try:
        out = subprocess.run(
            [mpirun, "--version"], capture_output=True, text=True, timeout=MPIRUN_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "MPI", f"{mpirun}: {_first_line(exc)}"
    first = (out.stdout or out.stderr).strip().splitlines()
    return "MPI", f"{first[0] if first else '(no version output)'} ({mpirun})"


def _scheduler() -> tuple[str, str]:
    cluster = detect_environment()
    if cluster is None:
        return "Scheduler", "none (no Slurm, PBS or LSF job variables)"
    job = f"{cluster.name} job {cluster.job_id()}"
    try:
        hosts = cluster.hosts()
        return "Scheduler", f"{job}: {cluster.world_size()} slot(s) on {format_hosts_arg(hosts)}"
    except (SchedulerError, ValueError) as exc:
        return "Scheduler", f"{job}: malformed allocation: {exc}"


def report() -> tuple[list[str], bool]:
    """The report lines and whether Horovod is usable (importable with TensorFlow and MPI or Gloo)."""
    items: list[tuple[str, str]] = [
        ("Python", f"{platform.python_version()} ({sys.executable})"),
        ("hvdtrain", __version__),
    ]
    tf_lines, tf_ok = _tensorflow()
    hvd_lines, hvd_ok = _horovod() if tf_ok else ([("Horovod", "not checked (needs TensorFlow)")], False)
    items += tf_lines[:1] + hvd_lines + [_mpi()] + tf_lines[1:] + [_scheduler()]
    width = max(len(name) for name, _ in items) + 2
    return [f"{name:<{width}}{value}" for name, value in items], tf_ok and hvd_ok
