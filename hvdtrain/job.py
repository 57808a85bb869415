"""Run the launcher as a job that is stopped whole: whatever signal reaches whichever process, nothing is left.

horovodrun hands its command to ``/bin/sh -c "mpirun ..."``; Open MPI puts each rank in a process group of its own;
horovodrun's Gloo mode starts each rank in a session of its own. A signal to the launcher's pid, or to its process
group, therefore never reaches every process of the job. So hvdtrain:

- starts the launcher in a session of its own (a Ctrl-C at the terminal reaches hvdtrain only, which stops the job);
- becomes a child subreaper (Linux), so ranks whose launcher died are re-parented to hvdtrain, not to pid 1;
- on SIGTERM, SIGINT or SIGHUP, sends SIGTERM to every process of the job (its descendants), waits up to
  ``TERMINATE_GRACE_S`` and SIGKILLs what is left;
- after the launcher exits, stops whatever it left behind (mpirun killed with -9 leaves its ranks running).

Pure Python (psutil, which Horovod needs too): importing this module imports neither TensorFlow nor Horovod.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

import psutil

TERMINATE_GRACE_S = 5.0  # after SIGTERM, how long the job's processes may take before SIGKILL
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
_POLL_S = 0.05


class Interrupted(Exception):
    """A stop signal arrived while the job ran."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass(frozen=True)
class Outcome:
    """How a job ended: the launcher's return code (negative: killed by that signal), the stop signal hvdtrain got
    (if any), and how many processes hvdtrain had to stop (``killed`` of them with SIGKILL)."""

    returncode: int
    signum: int | None
    stopped: int
    killed: int

    @property
    def exit_code(self) -> int:
        """The shell exit code: 128 + the signal hvdtrain got, else the launcher's (killed by N -> 128 + N)."""
        if self.signum is not None:
            return 128 + self.signum
        return self.returncode if self.returncode >= 0 else 128 - self.returncode


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process rather than pid 1 (Linux only); whether it worked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # this process, libc included
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def descendants() -> list[psutil.Process]:
    """Every live process below this one (with the subreaper set: also the orphans of a dead launcher)."""
    try:
        found = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    return [p for p in found if _alive(p)]


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _send(processes: Sequence[psutil.Process], signum: int) -> None:
    for process in processes:
        try:
            process.send_signal(signum)
        except psutil.Error:
            pass


def _reap() -> None:
    """Collect exited children (orphans re-parented here) so that none lingers as a zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def stop_all(grace_s: float = TERMINATE_GRACE_S) -> tuple[int, int]:
    """SIGTERM every descendant, wait up to ``grace_s``, SIGKILL the rest; (processes stopped, of them killed)."""
    seen: dict[int, psutil.Process] = {}
    deadline = time.monotonic() + grace_s
    while (alive := descendants()) and time.monotonic() < deadline:
        fresh = [p for p in alive if p.pid not in seen]  # processes started meanwhile get their SIGTERM too
        seen.update((p.pid, p) for p in fresh)
        _send(fresh, signal.SIGTERM)
        _reap()
        time.sleep(_POLL_S)
    killed = 0
    while alive := descendants():
        seen.update((p.pid, p) for p in alive)
        _send(alive, signal.SIGKILL)
        killed += len(alive)
        psutil.wait_procs(alive, timeout=1.0)
        _reap()
    _reap()
    return len(seen), killed


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


def run_job(argv: Sequence[str], executable: str, env: Mapping[str, str]) -> Outcome:
    """Run the launcher ``argv`` (no shell) in its own session until it ends or a stop signal arrives; then make
    sure no process of the job is left. OSError if it cannot start."""
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        become_subreaper()
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS} if main_thread else {}
    signum: int | None = None
    try:
        for s in previous:
            signal.signal(s, _raise_interrupted)
        try:
            process = subprocess.Popen(list(argv), executable=executable, env=dict(env), start_new_session=True)
            returncode = process.wait()
        except Interrupted as exc:
            signum, returncode = exc.signum, -exc.signum
        for s in previous:  # a second signal while stopping changes nothing: the job is being stopped
            signal.signal(s, signal.SIG_IGN)
        stopped, killed = stop_all()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return Outcome(returncode, signum, stopped, killed)
