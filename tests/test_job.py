"""The job runner (hvdtrain/job.py): the launcher's own failure reports become one line; no process outlives it."""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
from pathlib import Path

import psutil
import pytest

from hvdtrain import job

# What Open MPI 4.1 and horovodrun 0.28.1 print, captured from real runs.
MPI_EXIT_2 = """\
--------------------------------------------------------------------------
Primary job  terminated normally, but 1 process returned
a non-zero exit code. Per user-direction, the job has been aborted.
--------------------------------------------------------------------------
--------------------------------------------------------------------------
mpirun detected that one or more processes exited with non-zero status, thus causing
the job to be terminated. The first process to do so was:

  Process name: [[2036,1],1]
  Exit code:    2
--------------------------------------------------------------------------
"""
MPI_KILLED = """\
--------------------------------------------------------------------------
Primary job  terminated normally, but 1 process returned
a non-zero exit code. Per user-direction, the job has been aborted.
--------------------------------------------------------------------------
--------------------------------------------------------------------------
mpirun noticed that process rank 1 with PID 0 on node vm exited on signal 9 (Killed).
--------------------------------------------------------------------------
"""
GLOO_KILLED = """\
[0]<stderr>:Terminated
Traceback (most recent call last):
  File "/venv/bin/horovodrun", line 6, in <module>
    sys.exit(run_commandline())
             ^^^^^^^^^^^^^^^^^
  File "/venv/lib/python3.11/site-packages/horovod/runner/gloo_run.py", line 284, in launch_gloo
    raise RuntimeError('Horovod detected that one or more processes exited with non-zero '
RuntimeError: Horovod detected that one or more processes exited with non-zero status, thus causing the job to \
be terminated. The first process to do so was:
Process name: 1
Exit code: 137

"""
SSH_FAILED = """\
Traceback (most recent call last):
  File "/venv/bin/horovodrun", line 6, in <module>
    sys.exit(run_commandline())
             ^^^^^^^^^^^^^^^^^
  File "/venv/lib/python3.11/site-packages/horovod/runner/launch.py", line 655, in _run_static
    raise RuntimeError('could not connect to some hosts via ssh')
RuntimeError: could not connect to some hosts via ssh

"""
OTHER = """\
[1,0]<stderr>:[rank 0] epoch 3: 2000 samples/s
--------------------------------------------------------------------------
There are not enough slots available in the system to satisfy the 4
slots that were requested by the application.
--------------------------------------------------------------------------
Traceback (most recent call last):
  File "x.py", line 1, in <module>
ValueError: something else
last line without newline"""


def condense(text: str) -> tuple[str, job.RankFailure | None]:
    out = io.BytesIO()
    condenser = job.StderrCondenser(out)
    for line in io.BytesIO(text.encode()).readlines():
        condenser.feed(line)
    condenser.flush()
    return out.getvalue().decode(), condenser.failure


@pytest.mark.parametrize(
    ("report", "failure", "line"),
    [
        (MPI_EXIT_2, job.RankFailure(1, 2), "rank 1 exited with status 2"),
        (MPI_KILLED, job.RankFailure(1, 137), "rank 1 was killed by SIGKILL"),
        (GLOO_KILLED, job.RankFailure(1, 137), "rank 1 was killed by SIGKILL"),
    ],
    ids=["mpirun-exit-2", "mpirun-signal-9", "gloo-exit-137"],
)
def test_launcher_reports_of_a_failed_rank_are_taken_out(report: str, failure: job.RankFailure, line: str) -> None:
    rank_line = "[1,1]<stderr>:hvdtrain: error: cannot write checkpoints to /x\n"
    out, found = condense(rank_line + report)
    assert out == rank_line  # before: 10 more lines from mpirun, or horovodrun's 10-line traceback
    assert found == failure and found.describe() == line


def test_horovodrun_ssh_failure_keeps_ssh_lines_only() -> None:
    """Under Slurm on two nodes without ssh (tests/test_slurm.py): horovodrun's ssh lines, then its traceback."""
    ssh = "ssh not successful for host nodeb:\nssh: connect to host nodeb port 22: Connection refused\n\n"
    out = io.BytesIO()
    condenser = job.StderrCondenser(out)
    for line in io.BytesIO((ssh + SSH_FAILED).encode()).readlines():
        condenser.feed(line)
    condenser.flush()
    assert out.getvalue().decode() == ssh
    assert condenser.ssh_failed and condenser.failure is None


def test_anything_else_passes_unchanged() -> None:
    assert condense(OTHER) == (OTHER, None)


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        (b"[1,0]<stdout>:Epoch 1/2\n", b"Epoch 1/2\n"),  # mpirun --tag-output (also under horovodrun)
        (b"[0]<stderr>:[rank 0] recipe digits\n", b"[rank 0] recipe digits\n"),  # horovodrun --gloo
        (b"[1,1]<stderr>:W0000 00:00 tf log\n", b"[rank 1] W0000 00:00 tf log\n"),
        (b"[1,1]<stderr>:[rank 1] recipe digits\n", b"[rank 1] recipe digits\n"),  # already says its rank
        (b"[12]<stdout>:x\n", b"[rank 12] x\n"),
        (b"mpirun noticed that process rank 1\n", b"mpirun noticed that process rank 1\n"),  # the launcher's own
        (b"text [1,0]<stdout>:x\n", b"text [1,0]<stdout>:x\n"),
    ],
)
def test_plain_line_drops_rank_0s_tag_and_names_the_others(line: bytes, shown: bytes) -> None:
    assert job.plain_line(line) == shown


def test_run_job_relays_stdout_and_stderr_plain(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    script = "import sys; print('[1,0]<stdout>:Epoch 1/2'); print('[1,1]<stderr>:hello', file=sys.stderr)"
    outcome = job.run_job([sys.executable, "-c", script], sys.executable, dict(os.environ))
    out, err = capfdbinary.readouterr()
    assert outcome.exit_code == 0 and out == b"Epoch 1/2\n" and err == b"[rank 1] hello\n"


def test_exit_code_is_the_failed_ranks_when_the_launcher_reported_one() -> None:
    assert job.Outcome(1, None, 0, 0, job.RankFailure(1, 137)).exit_code == 137  # horovodrun --gloo exits 1
    assert job.Outcome(0, None, 0, 0, job.RankFailure(1, 137)).exit_code == 0
    assert job.Outcome(-9, None, 2, 0).exit_code == 137
    assert job.Outcome(-15, signal.SIGTERM, 3, 1, None).exit_code == 143


RANK = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); open(sys.argv[1], 'w'); time.sleep(600)"
)
LAUNCHER = f"""\
import subprocess, sys, time
# A launcher that starts a 'rank' in a session of its own (as horovodrun --gloo does) that ignores SIGTERM.
subprocess.Popen([sys.executable, "-c", {RANK!r}, sys.argv[1]], start_new_session=True)
time.sleep(600)
"""


def test_sigterm_stops_every_process_of_the_job_even_one_that_ignores_it(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    script = tmp_path / "launcher.py"
    script.write_text(
        LAUNCHER.replace("sys.argv[1]], start", "sys.argv[1]], start").replace('"import', '"import sys, ')
    )

    def signal_when_ready() -> None:
        while not ready.exists():
            threading.Event().wait(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=signal_when_ready, daemon=True).start()
    outcome = job.run_job([sys.executable, str(script), str(ready)], sys.executable, dict(os.environ))
    assert outcome.signum == signal.SIGTERM and outcome.exit_code == 143
    assert outcome.stopped == 2 and outcome.killed == 1  # the rank ignored SIGTERM and got SIGKILL
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(ready) in (p.info["cmdline"] or [])]
    assert leftovers == []


def test_a_closed_stderr_does_not_stop_the_relay() -> None:
    class Closed(io.BytesIO):
        def write(self, data: bytes) -> int:  # type: ignore[override]
            raise BrokenPipeError(32, "Broken pipe")

    condenser = job.StderrCondenser(Closed())
    for line in [b"a\n", *io.BytesIO(MPI_KILLED.encode()).readlines(), b"b\n"]:
        condenser.feed(line)  # before: BrokenPipeError ended the relay thread; the ranks then blocked on stderr
    condenser.flush()
    assert condenser.failure == job.RankFailure(1, 137)


def test_processes_that_were_running_before_the_job_are_left_alone() -> None:
    """hvdtrain used in a process that has children of its own (pytest with MPI's singleton daemon, say): stopping
    the job's leftovers must not touch them (before: they were SIGTERMed, and an MPI singleton died with them)."""
    bystander = psutil.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        outcome = job.run_job([sys.executable, "-c", "pass"], sys.executable, dict(os.environ))
        assert outcome.exit_code == 0 and outcome.stopped == 0
        assert bystander.is_running() and bystander.status() != psutil.STATUS_ZOMBIE
    finally:
        bystander.kill()
        bystander.wait()
