"""Start a checked launch: the checks that need this machine, then the job, reported in one line.

Shared by ``hvdtrain run`` and ``hvdtrain bench synthetic``: the Horovod controller the launch asks for is built in,
remote host names resolve, the timeline's and autotune log's directories exist; then the launcher runs as a job
that is stopped whole (:mod:`hvdtrain.job`), or, for ``--launcher none``, the program runs in this process.

Pure Python: importing this module imports neither TensorFlow nor Horovod.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from hvdtrain.config import ConfigError
from hvdtrain.doctor import controller_problem
from hvdtrain.job import find_program, run_job
from hvdtrain.launch import LaunchCommand, LaunchError, LaunchSpec
from hvdtrain.launch_config import unresolvable_hosts
from hvdtrain.options import EXIT_USAGE, fail, say
from hvdtrain.presets import PresetError

LAUNCH_ERRORS = (ConfigError, LaunchError, PresetError)  # what merging, placing and building a launch can raise


def _controller_needed(spec: LaunchSpec) -> str | None:
    """The Horovod controller a launch asks for explicitly (mpirun and --mpi: MPI; --gloo and --elastic: Gloo)."""
    if spec.launcher == "mpirun" or spec.controller == "mpi":
        return "mpi"
    if spec.controller == "gloo" or spec.elastic is not None:
        return "gloo"
    return None


def launch(spec: LaunchSpec, command: LaunchCommand, check_hosts: bool, here: Callable[[], int]) -> int:
    """Check the controller and host names, then run ``command`` (``here()`` instead for ``--launcher none``)."""
    controller = _controller_needed(spec)
    if controller is not None and (problem := controller_problem(controller)) is not None:
        return fail(problem)
    if check_hosts:
        bad = unresolvable_hosts(spec.hosts)
        if bad:
            shown = ", ".join(f"{host!r} ({why})" for host, why in bad)
            return fail(f"cannot resolve host name(s) {shown}; fix -H/--hostfile or skip with --no-check-hosts")
    for flag, path in (("--timeline", spec.knobs.timeline), ("--autotune-log", spec.knobs.autotune_log)):
        if path is not None and (problem := _make_parent(Path(path))) is not None:
            return fail(f"{flag} {path}: cannot create its directory: {problem}")
    if spec.launcher == "none":
        os.environ.update(command.env)
        return here()
    return execute(command)


def _make_parent(path: Path) -> str | None:
    """Create ``path``'s directory (Horovod only opens the file, and says so in a log line the run goes past);
    the reason if that fails."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def execute(command: LaunchCommand) -> int:
    """Run the launcher (argv list, no shell) with ``command.env`` added to this environment; return its exit code.

    The whole job is stopped on SIGTERM, SIGINT (Ctrl-C) or SIGHUP to hvdtrain, and whatever the launcher leaves
    behind when it dies is stopped too (:mod:`hvdtrain.job`); each case is one line and a 128 + N exit code.
    """
    program = command.argv[0]
    executable = find_program(program)
    if executable is None:
        return fail(f"{program} not found on PATH or in {Path(sys.executable).parent}")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        outcome = run_job(command.argv, executable, {**os.environ, **command.env})
    except OSError as exc:
        return fail(f"cannot start {program}: {exc.strerror or exc}")
    ended = f"{outcome.stopped} process(es)" + (f", {outcome.killed} with SIGKILL" if outcome.killed else "")
    if outcome.signum is not None:
        say(f"stopped by {signal.Signals(outcome.signum).name}: ended the job's {ended}")
    elif outcome.returncode < 0:
        left = f"; ended the {ended} it left running" if outcome.stopped else ""
        say(f"error: {program} was killed by {signal.Signals(-outcome.returncode).name}{left}")
    elif outcome.failure is not None and outcome.failure.status != EXIT_USAGE:  # a usage error: the rank said it
        say(f"error: {outcome.failure.describe()}; {program} ended the job")
    elif outcome.ssh_failed:  # e.g. a Slurm allocation of several nodes where ssh between them is not allowed
        say(
            f"error: {program} could not reach every host by ssh (see above); set up ssh between the hosts, or use "
            "--launcher mpirun (under Slurm, Open MPI starts its daemons on the other nodes through srun)"
        )
    elif outcome.stopped and outcome.returncode == 0:
        say(f"{program} exited with status 0; ended the {ended} it left running")
    return outcome.exit_code
