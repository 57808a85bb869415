"""Run one launched job for a benchmark: full output to a log file, progress lines to stderr, a time limit.

Pure Python: imports neither TensorFlow nor Horovod.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import click

from hvdtrain.job import find_program
from hvdtrain.job import run_job as run_launcher
from hvdtrain.launch import LaunchCommand, running_as_root  # noqa: F401 (re-exported for the drivers)

PROGRESS_MARK = "hvdtrain-bench: "  # the per-rank programs prefix their progress lines with this
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
TAIL_LINES = 15
_LAUNCHER_TAG = re.compile(r"\[\d+(,\d+)?\]<std(out|err)>:")  # mpirun --tag-output / horovodrun prefixes


IDLE_THRESHOLD = 0.9  # fraction of CPU time idle that counts as a quiet machine
IDLE_WINDOW_S = 2.0


class JobFailed(RuntimeError):
    """A launched job exited non-zero or ran out of time; the message is one line."""


def _children_cpu_s() -> float:
    """CPU seconds used by this process's finished descendants (the launcher and its ranks, once reaped)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _busy_cpu_s() -> float | None:
    """CPU seconds all processes on this machine have used since boot (from /proc/stat), None where unknown."""
    times = _cpu_times()
    if times is None:
        return None
    return (times[1] - times[0]) / os.sysconf("SC_CLK_TCK")


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies over all CPUs from /proc/stat; None where there is no /proc."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return fields[3] + fields[4], sum(fields)  # idle + iowait, user..steal


def idle_fraction(window_s: float = IDLE_WINDOW_S) -> float | None:
    """The fraction of CPU time spent idle over the next ``window_s`` seconds (None if unknown)."""
    before = _cpu_times()
    time.sleep(window_s)
    after = _cpu_times()
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def wait_for_idle(max_wait_s: float, threshold: float = IDLE_THRESHOLD) -> dict[str, float | None]:
    """Wait (at most ``max_wait_s``) until the CPUs are ``threshold`` idle; for shared machines, where other
    people's jobs would otherwise land in the middle of a measurement. Returns the wait and the idle fraction seen."""
    if max_wait_s <= 0:
        return {"waited_s": 0.0, "idle": None}
    start, told = time.monotonic(), False
    while True:
        idle = idle_fraction()
        waited = time.monotonic() - start
        if idle is None or idle >= threshold or waited >= max_wait_s:
            if told:
                quiet = idle is not None and idle >= threshold
                say(f"  ... {'idle' if quiet else 'gave up waiting'} after {waited:.0f} s")
            return {"waited_s": waited, "idle": idle}
        if not told:
            say(f"  waiting up to {max_wait_s:.0f} s for the CPUs to be {threshold:.0%} idle (now {idle:.0%})")
            told = True


def machine_label() -> str:
    """What the numbers were measured on, by default (every rank is on this machine)."""
    return f"{os.cpu_count()}-core {platform.machine()} host, all ranks on one host (loopback / shared memory)"


def say(message: str) -> None:
    """A progress line on stderr."""
    click.echo(message, err=True)


def run_job(
    command: LaunchCommand,
    log_path: Path,
    timeout_s: float,
    progress: Callable[[str], None] = say,
    env: dict[str, str] | None = None,
) -> dict[str, float | None]:
    """Run ``command`` to the end; raise JobFailed (with the log's tail on stderr) if it fails or times out.

    Lines carrying :data:`PROGRESS_MARK` are passed to ``progress`` without the launcher's rank prefix. Returns
    ``wall_s`` and ``others_cpu``: the share of the machine's CPU time that other processes (not this job) used
    while it ran, a measure of how disturbed the measurement was (None where /proc is missing).
    """
    executable = find_program(command.argv[0])
    if executable is None:
        raise JobFailed(f"{command.argv[0]} not found on PATH or in {Path(sys.executable).parent}")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **QUIET_ENV, **(env or {}), **command.env}
    tail: list[str] = []
    busy_before, ours_before, start = _busy_cpu_s(), _children_cpu_s(), time.monotonic()
    with log_path.open("w") as log:
        log.write(command.shell_line() + "\n\n")
        log.flush()

        def take(raw: bytes) -> None:
            nonlocal tail
            line = raw.decode("utf-8", "replace")
            log.write(line)
            tail = (tail + [line.rstrip("\n")])[-TAIL_LINES:]
            at = line.find(PROGRESS_MARK)
            if at >= 0:
                progress("  " + _LAUNCHER_TAG.sub("", line[at + len(PROGRESS_MARK) :]).rstrip())

        # The job's own session; a timeout or a stop signal stops every process of it (hvdtrain.job).
        outcome = run_launcher(command.argv, executable, full_env, on_line=take, timeout_s=timeout_s)
    if outcome.signum is not None:
        raise KeyboardInterrupt  # stopped by SIGINT, SIGTERM or SIGHUP: the job's processes are gone already
    if outcome.timed_out:
        raise JobFailed(f"timed out after {timeout_s:.0f} s; full output in {log_path}")
    code = outcome.exit_code
    if code != 0:
        for line in tail:
            click.echo(f"  | {line}", err=True)
        raise JobFailed(f"exited with code {code}; full output in {log_path}")
    wall = time.monotonic() - start
    busy_after, ours = _busy_cpu_s(), _children_cpu_s() - ours_before
    others = None
    if busy_before is not None and busy_after is not None and wall > 0:
        others = max(0.0, (busy_after - busy_before - ours) / (wall * (os.cpu_count() or 1)))
    return {"wall_s": wall, "others_cpu": others}


def parse_list(text: str, kind: Callable[[str], float], name: str) -> list[float]:
    """``"0.1,0.5,1"`` -> [0.1, 0.5, 1.0]; raise click.BadParameter with one line."""
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = kind(part)
        except ValueError:
            raise click.BadParameter(f"{part!r} is not a number", param_hint=name) from None
        if value < 0:
            raise click.BadParameter(f"{part} must be >= 0", param_hint=name)
        values.append(value)
    return values


def reproduce_line(prog: str, argv: Sequence[str]) -> str:
    """The command line that reproduces a run, for the JSON and the docs."""
    import shlex

    return " ".join([prog, *(shlex.quote(a) for a in argv)])


def alternate(
    commands: dict[str, LaunchCommand],
    runs: int,
    log_dir: Path,
    rate_of: Callable[[Path], float],
    samples_per_step: int,
    timeout_s: float,
    wait_idle_s: float = 0.0,
    tag: str = "",
) -> list[dict[str, object]]:
    """Run the two ``commands`` alternately ``runs`` times each (first-named first on odd runs, second first on even
    ones, so drift and other people's load hit both alike); one row per job with samples/s and steps/s.

    ``rate_of(log)`` reads a job's samples/s from its log; steps/s = samples/s / ``samples_per_step``.
    """
    first, second = commands
    rows: list[dict[str, object]] = []
    for i in range(runs):
        for position, name in enumerate((first, second) if i % 2 == 0 else (second, first)):
            log_path = log_dir / f"{tag}{name}-run{i + 1}.log"
            quiet = wait_for_idle(wait_idle_s)
            try:
                stats = run_job(commands[name], log_path, timeout_s)
                rate = rate_of(log_path)
            except JobFailed as exc:
                raise JobFailed(f"{tag}{name} run {i + 1}: {exc}") from None
            steps = rate / samples_per_step
            rows.append(
                {"run": i + 1, "program": name, "order": position + 1, "samples_per_sec": rate, "steps_per_sec": steps}
                | {"idle_before": quiet["idle"], **stats}
            )
            others = stats["others_cpu"]
            note = "" if others is None else f"  (others used {others:.0%} of the CPUs)"
            say(f"[{tag}run {i + 1}/{runs}] {name:<8} {rate:9.1f} samples/s  {steps:7.2f} steps/s{note}")
    return rows


def ratio_summary(rows: list[dict[str, object]], subject: str, reference: str) -> dict[str, object]:
    """Medians of steps/s per program and of the per-run ratios subject / reference."""

    def steps_of(name: str) -> list[float]:
        return [float(r["steps_per_sec"]) for r in rows if r["program"] == name]  # type: ignore[arg-type]

    ratios = [s / r for s, r in zip(steps_of(subject), steps_of(reference), strict=True)]
    return {
        f"{subject}_steps_per_sec_median": statistics.median(steps_of(subject)),
        f"{reference}_steps_per_sec_median": statistics.median(steps_of(reference)),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratios": ratios,
    }
