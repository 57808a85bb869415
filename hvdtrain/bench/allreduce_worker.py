"""The per-rank program of ``hvdtrain bench allreduce``: time allreduces of float32 buffers, check every result.

    mpirun -np 2 python -m hvdtrain.bench.allreduce_worker --library mpi4py --library ring --output OUT.json
    horovodrun -np 2 --gloo python -m hvdtrain.bench.allreduce_worker --library horovod --tag gloo --output OUT.json

For each library and buffer size: ``warmup`` untimed allreduces, then ``repeats`` timed trials of ``iters``
allreduces each (both scaled to the size, see :func:`hvdtrain.bench.metrics.iterations`). A trial's time is the mean
time per allreduce on the slowest rank; a row keeps every trial. Inputs are small whole numbers
(:func:`hvdtrain.bench.metrics.fill`), so the sum is exact in float32 and the check is exact equality: after each
trial every rank compares the result of the trial's last allreduce with the expected sum, and ``wrong`` is the largest
number of wrong elements (all ranks together) seen in any trial.

Libraries: ``mpi4py`` (``comm.Allreduce`` on numpy buffers: MPI's own algorithm), ``ring`` (the numpy + mpi4py
reference in :mod:`hvdtrain.bench.ring`), ``horovod`` (``horovod.tensorflow.allreduce`` on an eager tensor, Sum; the
controller and knobs are whatever the launcher set). Horovod runs alone in its job: its background thread
negotiates every cycle, which would disturb MPI timings in the same processes. Rank 0 writes the JSON file and a
progress line per size on stderr.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from hvdtrain.bench import metrics
from hvdtrain.bench.metrics import AllreduceRow, SizeError
from hvdtrain.bench.runner import PROGRESS_MARK
from hvdtrain.options import fail, run_cli

LIBRARIES = ("mpi4py", "ring", "horovod")
LIBRARY_NAMES = {"mpi4py": "mpi4py-Allreduce", "ring": "ring-reference"}
_KNOB_VARIABLES = (
    "HOROVOD_CYCLE_TIME",
    "HOROVOD_FUSION_THRESHOLD",
    "HOROVOD_CONTROLLER",
    "HOROVOD_CPU_OPERATIONS",
    "OMPI_MCA_mpi_yield_when_idle",
)


@dataclass
class Collective:
    """How one library runs: a fresh ``setup(count)`` per size returns (allreduce, result) callables."""

    rank: int
    size: int
    setup: Callable[[int], tuple[Callable[[], None], Callable[[], np.ndarray]]]
    barrier: Callable[[], None]
    max_all: Callable[[float], float]  # max over ranks
    sum_all: Callable[[int], int]  # sum over ranks
    finish: Callable[[], None] = lambda: None


def mpi_collective(library: str) -> Collective:
    """mpi4py's Allreduce or the reference ring, on MPI.COMM_WORLD."""
    from mpi4py import MPI

    from hvdtrain.bench.ring import ring_allreduce

    comm = MPI.COMM_WORLD

    def setup(count: int) -> tuple[Callable[[], None], Callable[[], np.ndarray]]:
        send = metrics.fill(count, comm.Get_rank())
        recv = np.zeros_like(send)
        if library == "mpi4py":

            def run() -> None:
                comm.Allreduce(send, recv, op=MPI.SUM)
        else:

            def run() -> None:
                ring_allreduce(comm, send, recv)

        return run, lambda: recv

    return Collective(
        rank=comm.Get_rank(),
        size=comm.Get_size(),
        setup=setup,
        barrier=comm.Barrier,
        max_all=lambda v: comm.allreduce(v, op=MPI.MAX),
        sum_all=lambda v: comm.allreduce(v, op=MPI.SUM),
    )


def horovod_collective() -> Collective:
    """``horovod.tensorflow.allreduce`` (op Sum) on an eager float32 tensor; one TensorFlow thread per rank."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import horovod.tensorflow as hvd

    hvd.init()

    def reduce(value: float, op: Any, name: str) -> float:
        return float(hvd.allreduce(tf.constant([value], dtype=tf.float64), op=op, name=name).numpy()[0])

    def setup(count: int) -> tuple[Callable[[], None], Callable[[], np.ndarray]]:
        tensor = tf.constant(metrics.fill(count, hvd.rank()))
        name = f"hvdtrain.bench.allreduce.{count}"
        last: list[Any] = [tensor]

        def run() -> None:
            last[0] = hvd.allreduce(tensor, op=hvd.Sum, name=name)

        return run, lambda: last[0].numpy()

    def barrier() -> None:
        reduce(0.0, hvd.Sum, "hvdtrain.bench.barrier")

    return Collective(
        rank=hvd.rank(),
        size=hvd.size(),
        setup=setup,
        barrier=barrier,
        max_all=lambda v: reduce(v, hvd.Max, "hvdtrain.bench.max"),
        sum_all=lambda v: int(reduce(float(v), hvd.Sum, "hvdtrain.bench.sum")),
        finish=hvd.shutdown,
    )


def measure(
    coll: Collective, count: int, warmup: int, iters: int, repeats: int, inject_wrong: int = 0
) -> tuple[list[float], int]:
    """(seconds per allreduce on the slowest rank for each trial, worst wrong-element count over trials)."""
    run, result = coll.setup(count)
    expected = metrics.expected_sum(count, coll.size)
    for _ in range(warmup):
        run()
    trials, wrong = [], 0
    for _ in range(repeats):
        coll.barrier()
        start = time.perf_counter()
        for _ in range(iters):
            run()
        got = result()  # waits for the last allreduce, where that is asynchronous
        elapsed = (time.perf_counter() - start) / iters
        if inject_wrong and coll.rank == 0:  # tests only: prove the check counts what is wrong
            got = got.copy()
            got.reshape(-1)[: min(inject_wrong, count)] += 1.0
        trials.append(coll.max_all(elapsed))
        wrong = max(wrong, coll.sum_all(metrics.count_wrong(got, expected)))
    return trials, wrong


def progress(message: str) -> None:
    """One progress line on stderr, marked so the driver can pick it out of the launcher's output."""
    sys.stderr.write(PROGRESS_MARK + message + "\n")  # one write: launchers tag output per chunk, not per line
    sys.stderr.flush()


def run_library(
    coll: Collective, contender: str, sizes: Sequence[int], iteration_args: dict[str, int], repeats: int, inject: int
) -> list[AllreduceRow]:
    """Every size for one library; rank 0 reports each size as it finishes."""
    rows = []
    for size_bytes in sizes:
        warmup, iters = metrics.iterations(size_bytes, **iteration_args)
        trials, wrong = measure(coll, size_bytes // metrics.ITEMSIZE, warmup, iters, repeats, inject)
        row = AllreduceRow(contender, coll.size, size_bytes, warmup, iters, trials, wrong)
        rows.append(row)
        if coll.rank == 0:
            d = row.to_dict()
            progress(
                f"{contender:<22} {d['size']:>8}  {d['time_us']:11.1f} us  {d['busbw_gbs']:8.3f} GB/s busbw"
                f"  wrong {wrong}"
            )
    return rows


def environment_info() -> dict[str, Any]:
    """What the rows were measured on (the knob variables as the ranks saw them)."""
    info: dict[str, Any] = {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "env": {name: os.environ[name] for name in _KNOB_VARIABLES if name in os.environ},
        "loadavg_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    return info


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--library", "libraries", multiple=True, required=True, type=click.Choice(LIBRARIES))
@click.option("--tag", default="horovod", show_default=True, help="Contender name for the horovod rows.")
@click.option("--min-size", default="4B", show_default=True)
@click.option("--max-size", default="64MiB", show_default=True)
@click.option("--max-iters", type=click.IntRange(min=1), default=metrics.DEFAULT_MAX_ITERS, show_default=True)
@click.option("--min-iters", type=click.IntRange(min=1), default=metrics.DEFAULT_MIN_ITERS, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=metrics.DEFAULT_REPEATS, show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--inject-wrong", type=click.IntRange(min=0), default=0, hidden=True)
def main_command(
    libraries: tuple[str, ...],
    tag: str,
    min_size: str,
    max_size: str,
    max_iters: int,
    min_iters: int,
    repeats: int,
    output: Path,
    inject_wrong: int,
) -> int:
    """Time allreduces of float32 buffers on every rank of this job; rank 0 writes OUTPUT (JSON)."""
    try:
        sizes = metrics.size_sweep(metrics.parse_size(min_size), metrics.parse_size(max_size))
        if min_iters > max_iters:
            raise SizeError(f"--min-iters ({min_iters}) is larger than --max-iters ({max_iters})")
    except SizeError as exc:
        return fail(str(exc))
    if "horovod" in libraries and len(libraries) > 1:
        return fail("--library horovod runs alone in its job (its background thread would disturb MPI timings)")
    iteration_args = {"max_iters": max_iters, "min_iters": min_iters}
    rows: list[AllreduceRow] = []
    rank = size = 0
    for library in libraries:
        coll = horovod_collective() if library == "horovod" else mpi_collective(library)
        rank, size = coll.rank, coll.size
        contender = tag if library == "horovod" else LIBRARY_NAMES[library]
        rows += run_library(coll, contender, sizes, iteration_args, repeats, inject_wrong)
        coll.finish()
    if rank == 0:
        output.parent.mkdir(parents=True, exist_ok=True)
        document = {"np": size, "environment": environment_info(), "rows": [row.to_dict() for row in rows]}
        output.write_text(json.dumps(document, indent=1) + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    code = run_cli(main_command, argv, prog_name="python -m hvdtrain.bench.allreduce_worker")
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
