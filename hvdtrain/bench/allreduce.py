"""``hvdtrain bench allreduce``: allreduce latency and bandwidth of Horovod, MPI and a reference ring, size by size.

Each contender runs in its own job on this machine (``-H localhost:N``), launched with
:func:`hvdtrain.launch.build_command` on :mod:`hvdtrain.bench.allreduce_worker`:

- ``mpi4py-Allreduce`` and ``ring-reference``: one ``mpirun`` job (MPI's own Allreduce, and the numpy + mpi4py ring
  of :mod:`hvdtrain.bench.ring`);
- ``horovod-{mpi,gloo}-{default,tuned}``: ``horovodrun --mpi`` / ``--gloo``, once with Horovod's own defaults spelled
  out (1 ms cycle, 128 MiB fusion) and once with what hvdtrain's back end sets on a CPU host (:mod:`hvdtrain.tuning`:
  the tuned cycle time and fusion threshold, and ``OMPI_MCA_mpi_yield_when_idle=1`` for the MPI controller);
- optionally ``horovod-mpi-cycle-<t>ms``: a cycle-time sweep (``--cycle-time-sweep 0.1,0.5,1``).

Rank 0 of each job writes ``DIR/raw/<job>.json``; the driver merges them into ``DIR/allreduce.{json,csv,png}`` and
prints the tables. Every job's full output is kept in ``DIR/logs/<job>.log``.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hvdtrain import tuning
from hvdtrain.bench import metrics, report
from hvdtrain.bench.runner import JobFailed, machine_label, run_job, running_as_root, say, wait_for_idle
from hvdtrain.launch import HorovodKnobs, LaunchSpec, build_command

WORKER = "hvdtrain.bench.allreduce_worker"
MPI_JOB = "mpi"
HOROVOD_CONTENDERS = ("horovod-mpi-default", "horovod-mpi-tuned", "horovod-gloo-default", "horovod-gloo-tuned")
CONTENDERS = ("mpi4py", "ring", *HOROVOD_CONTENDERS)
JOB_TIMEOUT_S = 3600


@dataclass(frozen=True)
class Job:
    """One launched job: which libraries it times, how it is launched, with which Horovod knobs."""

    name: str
    libraries: tuple[str, ...]
    launcher: str  # "mpirun" or "horovodrun"
    controller: str | None
    knobs: HorovodKnobs
    env: Mapping[str, str] = field(default_factory=dict)  # for every rank, under the user's --env

    def describe(self) -> dict[str, Any]:
        knobs = {"cycle_time_ms": self.knobs.cycle_time_ms, "fusion_threshold_mb": self.knobs.fusion_threshold_mb}
        return {"job": self.name, "libraries": list(self.libraries), "launcher": self.launcher} | (
            {"controller": self.controller, **knobs, "env": dict(self.env)} if "horovod" in self.libraries else {}
        )


def plan_jobs(contenders: Sequence[str], cycle_sweep_ms: Sequence[float] = ()) -> list[Job]:
    """The jobs for ``contenders`` (names from CONTENDERS) plus a Horovod-MPI cycle-time sweep."""
    jobs: list[Job] = []
    tuned_mpi_env = {tuning.MPI_YIELD_VAR: "1"}  # what apply_mpi_yield sets on a CPU host
    mpi_libraries = tuple(lib for lib in ("mpi4py", "ring") if lib in contenders)
    if mpi_libraries:
        jobs.append(Job(MPI_JOB, mpi_libraries, "mpirun", None, HorovodKnobs()))
    for name in HOROVOD_CONTENDERS:
        if name in contenders:
            _, controller, setting = name.split("-")
            if setting == "default":
                jobs.append(Job(name, ("horovod",), "horovodrun", controller, tuning.horovod_default_knobs()))
            else:
                env = tuned_mpi_env if controller == "mpi" else {}
                jobs.append(Job(name, ("horovod",), "horovodrun", controller, tuning.hvdtrain_tuned_knobs(), env))
    for cycle in cycle_sweep_ms:
        knobs = HorovodKnobs(cycle_time_ms=cycle, fusion_threshold_mb=tuning.TUNED_FUSION_THRESHOLD_MB)
        name = f"horovod-mpi-cycle-{tuning.format_ms(cycle)}ms"
        jobs.append(Job(name, ("horovod",), "horovodrun", "mpi", knobs, tuned_mpi_env))
    return jobs


def job_command(
    job: Job, np: int, worker_args: Sequence[str], output: Path, extra_env: Mapping[str, str] | None = None
) -> Any:
    """The LaunchCommand for ``job``: argv lists only, validated by build_command."""
    program = [sys.executable, "-m", WORKER, *(a for lib in job.libraries for a in ("--library", lib))]
    if "horovod" in job.libraries:
        program += ["--tag", job.name]
    program += [*worker_args, "--output", str(output)]
    spec = LaunchSpec(
        program=program,
        np=np,
        launcher=job.launcher,  # type: ignore[arg-type]
        controller=job.controller,  # type: ignore[arg-type]
        knobs=job.knobs,
        allow_run_as_root=running_as_root(),
        extra_env={**job.env, **(extra_env or {})},
    )
    return build_command(spec)


def run(
    np: int,
    min_size: int,
    max_size: int,
    output_dir: Path,
    contenders: Sequence[str] = CONTENDERS,
    cycle_sweep_ms: Sequence[float] = (),
    repeats: int = metrics.DEFAULT_REPEATS,
    max_iters: int = metrics.DEFAULT_MAX_ITERS,
    min_iters: int = metrics.DEFAULT_MIN_ITERS,
    label: str | None = None,
    command_line: str = "",
    timeout_s: float = JOB_TIMEOUT_S,
    extra_worker_args: Sequence[str] = (),
    wait_idle_s: float = 0.0,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run every job, merge, write JSON/CSV/PNG under ``output_dir``; return the merged document.

    Raises JobFailed when a job fails (earlier jobs' raw files stay on disk).
    """
    sizes = metrics.size_sweep(min_size, max_size)
    jobs = plan_jobs(contenders, cycle_sweep_ms)
    worker_args = [
        *("--min-size", f"{min_size}B", "--max-size", f"{max_size}B"),
        *("--repeats", str(repeats), "--max-iters", str(max_iters), "--min-iters", str(min_iters)),
        *extra_worker_args,
    ]
    first, last = metrics.format_size(sizes[0]), metrics.format_size(sizes[-1])
    say(
        f"bench allreduce: np={np}, {len(sizes)} sizes {first}..{last}"
        f" (float32), {repeats} trial(s) per size, {len(jobs)} job(s); output in {output_dir}"
    )
    rows: list[dict[str, Any]] = []
    environments: dict[str, Any] = {}
    described = []
    for i, job in enumerate(jobs, 1):
        raw = output_dir / "raw" / f"{job.name}.json"
        raw.unlink(missing_ok=True)
        command = job_command(job, np, worker_args, raw, extra_env)
        say(f"[{i}/{len(jobs)}] {job.name}: {command.shell_line()}")
        quiet = wait_for_idle(wait_idle_s)
        try:
            stats = run_job(command, output_dir / "logs" / f"{job.name}.log", timeout_s)
        except JobFailed as exc:
            raise JobFailed(f"{job.name}: {exc}") from None
        if not raw.exists():
            raise JobFailed(f"{job.name}: rank 0 wrote no {raw}")
        if stats["others_cpu"] is not None:
            say(
                f"  {job.name} took {stats['wall_s']:.0f} s; other processes used {stats['others_cpu']:.0%} of the CPUs"
            )
        document = json.loads(raw.read_text())
        rows += document["rows"]
        environments[job.name] = document.get("environment", {})
        described.append(job.describe() | {"command": command.shell_line(), "idle_before": quiet["idle"], **stats})

    merged = {
        "benchmark": "allreduce",
        "label": label or machine_label(),
        "np": np,
        "dtype": "float32",
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command_line,
        "extra_env": dict(extra_env or {}),
        "method": {
            "latency": "median over trials of (time of `iters` back-to-back allreduces / iters) on the slowest rank",
            "algbw_gbs": "size_bytes / latency / 1e9",
            "busbw_gbs": "algbw * 2(n-1)/n",
            "wrong": "elements differing from the exact sum, all ranks, worst trial (inputs are small integers)",
        },
        "jobs": described,
        "environment": environments,
        "rows": rows,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    report.write_json(output_dir / "allreduce.json", merged)
    report.write_csv(output_dir / "allreduce.csv", rows, report.ALLREDUCE_CSV_COLUMNS)
    report.plot_allreduce(rows, output_dir / "allreduce.png", f"allreduce, np={np}, float32 - {merged['label']}")
    return merged
