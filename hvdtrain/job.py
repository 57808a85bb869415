"""Run the launcher as a job that is stopped whole: whatever signal reaches whichever process, nothing is left.

horovodrun hands its command to ``/bin/sh -c "mpirun ..."``; Open MPI puts each rank in a process group of its own;
horovodrun's Gloo mode starts each rank in a session of its own. A signal to the launcher's pid, or to its process
group, therefore never reaches every process of the job. So hvdtrain:

- starts the launcher in a session of its own (a Ctrl-C at the terminal reaches hvdtrain only, which stops the job);
- becomes a child subreaper (Linux), so ranks whose launcher died are re-parented to hvdtrain, not to pid 1;
- on SIGTERM, SIGINT or SIGHUP, sends SIGTERM to every process of the job (its descendants), waits up to
  ``TERMINATE_GRACE_S`` and SIGKILLs what is left;
- after the launcher exits, stops whatever it left behind (mpirun killed with -9 leaves its ranks running);
- relays the launcher's stderr, replacing its own reports of a failed rank (Open MPI's banners, horovodrun's Gloo
  traceback) by the failure they describe (:class:`StderrCondenser`), which hvdtrain then reports in one line;
- relays both streams as plain output (:func:`plain_line`): rank 0's lines without the launcher's rank tag
  (``[1,0]<stdout>:`` of ``mpirun --tag-output``, ``[0]<stdout>:`` of horovodrun's Gloo mode), so that they read like
  a single-process Keras run; another rank's lines as ``[rank N] ...``.

Pure Python (psutil, which Horovod needs too): importing this module imports neither TensorFlow nor Horovod.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import BinaryIO

import psutil

TERMINATE_GRACE_S = 5.0  # after SIGTERM, how long the job's processes may take before SIGKILL
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
_POLL_S = 0.05
_RELAY_JOIN_S = 2.0
_BANNER = b"-" * 74  # Open MPI's show_help frame
_SSH_FAILURE = b"RuntimeError: could not connect to some hosts via ssh"  # horovodrun's check before launching
_GLOO_FAILURE = b"RuntimeError: Horovod detected that one or more processes exited with non-zero status"
_MPI_EXIT = re.compile(r"Process name:\s*\[\[\d+,\d+\],(\d+)\].*?Exit code:\s*(\d+)", re.S)
_GLOO_TERMINATED = re.compile(rb"\[\d+\]<stderr>:Terminated")  # the shell around a rank horovodrun stopped
_MPI_SIGNAL = re.compile(r"process rank (\d+) with PID \d+ on node \S+ exited on signal (\d+)")
# mpirun --tag-output: [jobid,rank]<stdout>: ; horovodrun's Gloo mode (safe_shell_exec): [rank]<stdout>:
_RANK_TAG = re.compile(rb"\[(?:\d+,)?(\d+)\]<std(?:out|err|diag)>:")


def find_program(program: str) -> str | None:
    """``program`` on PATH, else beside this Python (an unactivated virtual environment's horovodrun)."""
    return shutil.which(program) or shutil.which(program, path=str(Path(sys.executable).parent))


class Interrupted(Exception):
    """A stop signal arrived while the job ran."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def shell_status(returncode: int) -> int:
    """A return code as a shell exit status (killed by signal N -> 128 + N)."""
    return returncode if returncode >= 0 else 128 - returncode


@dataclass(frozen=True)
class RankFailure:
    """The first rank the launcher saw fail: its rank and its exit status (128 + N when killed by signal N)."""

    rank: int
    status: int

    def describe(self) -> str:
        """``rank 1 was killed by SIGKILL`` or ``rank 1 exited with status 3``."""
        if self.status > 128:
            try:
                return f"rank {self.rank} was killed by {signal.Signals(self.status - 128).name}"
            except ValueError:
                pass
        return f"rank {self.rank} exited with status {self.status}"


@dataclass(frozen=True)
class Outcome:
    """How a job ended: the launcher's return code (negative: killed by that signal), the stop signal hvdtrain got
    (if any), how many processes hvdtrain had to stop (``killed`` of them with SIGKILL), the failed rank that
    the launcher reported (its report taken out of the output), and whether it ran out of time."""

    returncode: int
    signum: int | None
    stopped: int
    killed: int
    failure: RankFailure | None = None
    timed_out: bool = False  # ran past run_job's timeout_s and was stopped
    ssh_failed: bool = False  # horovodrun could not reach a host by ssh (its traceback taken out)

    @property
    def exit_code(self) -> int:
        """The shell exit code: 128 + the signal hvdtrain got, else the failed rank's status when the launcher
        reported one (horovodrun's Gloo mode exits 1 whatever the rank did), else the launcher's."""
        if self.signum is not None:
            return 128 + self.signum
        if self.failure is not None and self.returncode != 0:
            return self.failure.status
        return shell_status(self.returncode)


def plain_line(line: bytes) -> bytes:
    """A launcher's rank-tagged line as hvdtrain shows it: rank 0's without the tag, another rank's as
    ``[rank N] text`` (``text`` alone when it already starts so, as hvdtrain's log lines do); others unchanged."""
    tag = _RANK_TAG.match(line)
    if tag is None:
        return line
    text, rank = line[tag.end() :], int(tag.group(1))
    if rank == 0:
        return text
    label = b"[rank %d] " % rank
    return text if text.startswith(label) else label + text


class StderrCondenser:
    """Relays the launcher's stderr line by line, taking out the launcher's own reports of a failed rank: Open
    MPI's framed banners (``Primary job terminated normally...``, ``mpirun detected that one or more processes
    exited with non-zero status...``, ``mpirun noticed that process rank 1 ... exited on signal 9``) and horovodrun's
    Gloo traceback (``RuntimeError: Horovod detected that one or more processes exited ...`` with ``Process name``
    and ``Exit code``, and the ``[1]<stderr>:Terminated`` of the ranks it stopped then). What they said is kept in
    :attr:`failure`; horovodrun's traceback after its ssh check failed (``RuntimeError: could not connect to some
    hosts via ssh``, its ``ssh: ...`` lines kept) sets :attr:`ssh_failed`. Anything else passes on, through ``rewrite``
    (e.g. :func:`plain_line`) if given."""

    def __init__(self, out: BinaryIO, rewrite: Callable[[bytes], bytes] | None = None) -> None:
        self.out: BinaryIO | None = out
        self.rewrite = rewrite
        self.failure: RankFailure | None = None
        self.ssh_failed = False
        self._held: list[bytes] = []
        self._mode: str | None = None

    def feed(self, line: bytes) -> None:
        """Take one line (with its newline)."""
        bare = line.rstrip(b"\r\n")
        if self._mode == "after":  # horovodrun ends its traceback with an empty line
            self._mode = None
            if not bare:
                return
        if self._mode is None:
            if bare == _BANNER:
                self._mode = "banner"
            elif bare == b"Traceback (most recent call last):":
                self._mode = "traceback"
            elif _GLOO_TERMINATED.fullmatch(bare):
                return
            else:
                self._write([line])
                return
            self._held = [line]
            return
        self._held.append(line)
        if self._mode == "banner" and bare == _BANNER:
            self._end_banner()
        elif self._mode == "traceback" and bare.startswith(_GLOO_FAILURE):
            self._mode = "gloo"
        elif self._mode == "traceback" and bare == _SSH_FAILURE:
            self.ssh_failed = True
            self._held, self._mode = [], "after"
        elif self._mode == "traceback" and bare and not bare[:1].isspace():
            self.flush()  # some other traceback: the user needs to see it
        elif self._mode == "gloo" and bare.startswith(b"Exit code:"):
            name = next((h for h in self._held if h.startswith(b"Process name:")), b"")
            rank, status = name.split(b":")[-1].strip(), bare.split(b":")[-1].strip()
            if rank.isdigit() and status.lstrip(b"-").isdigit():
                self._record(int(rank), shell_status(int(status)))
                self._held, self._mode = [], "after"
            else:
                self.flush()
        elif self._mode == "gloo" and not bare.startswith(b"Process name:"):
            self.flush()

    def _end_banner(self) -> None:
        text = b"".join(self._held).decode("utf-8", "replace")
        if exited := _MPI_EXIT.search(text):
            self._record(int(exited.group(1)), int(exited.group(2)))
        elif signalled := _MPI_SIGNAL.search(text):
            self._record(int(signalled.group(1)), 128 + int(signalled.group(2)))
        elif "Primary job  terminated normally, but" not in text:
            self.flush()  # a banner about something else
            return
        self._held, self._mode = [], None

    def _record(self, rank: int, status: int) -> None:
        if self.failure is None:
            self.failure = RankFailure(rank, status)

    def flush(self) -> None:
        """Write out whatever is held back (at the end, or when it was not a report after all)."""
        self._write(self._held)
        self._held, self._mode = [], None

    def _write(self, lines: Sequence[bytes]) -> None:
        if lines and self.out is not None:
            if self.rewrite is not None:
                lines = [self.rewrite(line) for line in lines]
            try:
                self.out.write(b"".join(lines))
                self.out.flush()
            except OSError:  # our stderr is gone (a closed pipe): keep draining the job's, or its ranks would block
                self.out = None


class PlainRelay:
    """Relays lines through :func:`plain_line` (the launcher's stdout: nothing to take out there)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out: BinaryIO | None = out

    def feed(self, line: bytes) -> None:
        """Take one line (with its newline)."""
        if self.out is not None:
            try:
                self.out.write(plain_line(line))
                self.out.flush()
            except OSError:  # our stdout is gone: keep draining the job's
                self.out = None

    def flush(self) -> None:
        """Nothing is held back."""


def _relay(pipe: BinaryIO, sink: StderrCondenser | PlainRelay) -> None:
    """Feed ``pipe`` to ``sink`` line by line until every process of the job has closed it."""
    with pipe:
        for line in iter(pipe.readline, b""):
            sink.feed(line)
    sink.flush()


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process rather than pid 1 (Linux only); whether it worked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # this process, libc included
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def descendants(exclude: frozenset[int] = frozenset()) -> list[psutil.Process]:
    """Every live process below this one (with the subreaper set: also the orphans of a dead launcher), except the
    pids in ``exclude`` (what was already running before the job: hvdtrain used as a library, e.g. under pytest)."""
    try:
        found = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    return [p for p in found if p.pid not in exclude and _alive(p)]


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


def stop_all(grace_s: float = TERMINATE_GRACE_S, exclude: frozenset[int] = frozenset()) -> tuple[int, int]:
    """SIGTERM every descendant (but ``exclude``), wait up to ``grace_s``, SIGKILL the rest; (processes stopped, of
    them killed)."""
    seen: dict[int, psutil.Process] = {}
    deadline = time.monotonic() + grace_s
    while (alive := descendants(exclude)) and time.monotonic() < deadline:
        fresh = [p for p in alive if p.pid not in seen]  # processes started meanwhile get their SIGTERM too
        seen.update((p.pid, p) for p in fresh)
        _send(fresh, signal.SIGTERM)
        _reap()
        time.sleep(_POLL_S)
    killed = 0
    while alive := descendants(exclude):
        seen.update((p.pid, p) for p in alive)
        _send(alive, signal.SIGKILL)
        killed += len(alive)
        psutil.wait_procs(alive, timeout=1.0)
        _reap()
    _reap()
    return len(seen), killed


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


class LineSink:
    """Takes every line of the job's output, stdout and stderr merged in order (a benchmark's log file)."""

    def __init__(self, take: Callable[[bytes], None]) -> None:
        self.take: Callable[[bytes], None] | None = take

    def feed(self, line: bytes) -> None:
        """Take one line (with its newline); after ``take`` failed once, drain the rest (or the ranks would block)."""
        if self.take is not None:
            try:
                self.take(line)
            except Exception:  # noqa: BLE001 - e.g. a full disk under the log: the job must not hang on its pipe
                self.take = None

    def flush(self) -> None:
        """Nothing is held back."""


def run_job(
    argv: Sequence[str],
    executable: str,
    env: Mapping[str, str],
    on_line: Callable[[bytes], None] | None = None,
    timeout_s: float | None = None,
) -> Outcome:
    """Run the launcher ``argv`` (no shell) in its own session until it ends, a stop signal arrives or
    ``timeout_s`` passes; then make sure no process of the job is left. OSError if it cannot start.

    Output goes to this process's stdout and stderr as plain lines (:func:`plain_line`), the launcher's reports of a
    failed rank taken out of stderr (:class:`StderrCondenser`); or, with ``on_line``, every line as it is, stdout
    and stderr merged in order, to ``on_line``.
    """
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        become_subreaper()
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS} if main_thread else {}
    condenser: StderrCondenser | None = None
    sinks: list[StderrCondenser | PlainRelay | LineSink] = []
    if on_line is None:
        condenser = StderrCondenser(sys.stderr.buffer, rewrite=plain_line)
        sinks = [PlainRelay(sys.stdout.buffer), condenser]
    else:
        sinks = [LineSink(on_line)]
    relays: list[threading.Thread] = []
    signum: int | None = None
    timed_out = False
    before = frozenset(p.pid for p in descendants())  # not the job's: never stopped here
    try:
        for s in previous:
            signal.signal(s, _raise_interrupted)
        try:
            process = subprocess.Popen(
                list(argv),
                executable=executable,
                env=dict(env),
                start_new_session=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE if condenser is not None else subprocess.STDOUT,
            )
            for pipe, sink in zip((process.stdout, process.stderr), sinks, strict=False):
                if pipe is not None:
                    relays.append(threading.Thread(target=_relay, args=(pipe, sink), daemon=True))
                    relays[-1].start()
            try:
                returncode = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out, returncode = True, -signal.SIGTERM
        except Interrupted as exc:
            signum, returncode = exc.signum, -exc.signum
        for s in previous:  # a second signal while stopping changes nothing: the job is being stopped
            signal.signal(s, signal.SIG_IGN)
        stopped, killed = stop_all(exclude=before)
        for relay in relays:
            relay.join(_RELAY_JOIN_S)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    failure = condenser.failure if condenser is not None and signum is None else None
    ssh_failed = condenser is not None and condenser.ssh_failed and signum is None
    return Outcome(returncode, signum, stopped, killed, failure, timed_out, ssh_failed)
