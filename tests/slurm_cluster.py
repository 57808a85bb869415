"""A throw-away Slurm for the tests: Debian's ``slurm-wlm`` (22.05) with ``munge``, all state in one directory.

    reason = install_missing()                   # apt-get install slurm-wlm munge when missing (root only)
    with slurm_cluster(tmp_dir, [Node(socket.gethostname())]) as cluster:       # one node: this machine
        job = cluster.sbatch(["-n", "2", "--wrap", "hostname"], cwd=tmp_dir)
        assert cluster.wait(job) == "COMPLETED"

Everything is the cluster's own: a munge key and socket, a ``slurm.conf`` found through ``SLURM_CONF`` (so the
system's /etc/slurm is never read), free TCP ports, state, spool, ``TmpFS``, pid and log files under the directory.
The daemons run in the foreground as children of the test (``munged -F``, ``slurmctld -D``, ``slurmd -D``) and are
stopped on exit, after every job was cancelled; anything still carrying this ``SLURM_CONF`` is then ended too.

Nodes on other "hosts" (network namespaces, tests/multihost.py) run their slurmd with ``nsenter --net=NETNS`` plus
``unshare --mount --uts``: a hostname of its own and a private ``/etc/hosts`` bind-mounted over the machine's, which
the node's jobs inherit. (``ip netns exec`` would also remount /sys, hiding the cgroup mounts slurmd 22.05 needs.)
The controller then runs in the first node's namespace, and clients (sbatch, srun, squeue) are run there too.

Settings: ``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none`` (no cgroups needed), ``SelectType=
select/cons_tres`` with cores as the resource, ``MpiDefault=none`` (``srun --mpi=pmix`` asks for PMIx), no accounting.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "APT_PACKAGES",
    "Node",
    "SlurmCluster",
    "SlurmError",
    "install_missing",
    "slurm_cluster",
    "slurm_problem",
]

APT_PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "salloc", "srun", "scancel", "squeue", "scontrol", "sinfo")
SBIN = ("/usr/sbin", "/sbin")
APT_TIMEOUT_S = 900
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
CLIENT_TIMEOUT_S = 60
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL")


class SlurmError(RuntimeError):
    """The cluster could not be started, or a Slurm command failed."""


def _search_path() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), *SBIN])


def _which(name: str) -> str | None:
    return shutil.which(name, path=_search_path())


def missing_commands() -> list[str]:
    """The Slurm and munge commands (daemons and clients) that are not installed."""
    return [name for name in (*DAEMONS, *CLIENTS) if _which(name) is None]


def install_missing() -> str | None:
    """Install ``slurm-wlm`` and ``munge`` with apt-get when a command is missing; None when all are there, else why
    they cannot be (a skip reason).

    Debian's package scripts start no services without an init system (or with a policy-rc.d that forbids it).
    """
    if not missing_commands():
        return None
    if os.geteuid() != 0:
        return f"Slurm is not installed ({', '.join(missing_commands())} missing) and installing it needs root"
    apt = shutil.which("apt-get", path=_search_path())
    if apt is None:
        return f"Slurm is not installed ({', '.join(missing_commands())} missing) and there is no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300", *APT_PACKAGES]
    proc = None
    for argv in (install, [apt, "update", "-q"], install):  # an empty package index needs the update first
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False)
        if proc.returncode == 0 and argv is install and not missing_commands():
            return None
    assert proc is not None
    last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
    return f"apt-get install {' '.join(APT_PACKAGES)} failed: {last[0]}"


def slurm_problem() -> str | None:
    """None if a throw-away Slurm can run here (installing it if needed), else why not."""
    if os.geteuid() != 0:
        return "the throw-away Slurm runs its daemons as root (SlurmUser=root); run the tests as root"
    return install_missing()


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that were free a moment ago."""
    ports: list[int] = []
    with ExitStack() as stack:
        while len(ports) < count:
            sock = stack.enter_context(closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)))
            sock.bind(("", 0))
            ports.append(sock.getsockname()[1])
    return ports


@dataclass(frozen=True)
class Node:
    """A compute node: its Slurm name (also its hostname), address, and the network namespace it lives in.

    ``netns=None`` is this machine itself (``name`` must then be this machine's host name).
    """

    name: str
    addr: str = "127.0.0.1"
    netns: str | None = None


def _conf(root: Path, nodes: Sequence[Node], controller_addr: str, ports: Sequence[int], cpus: int) -> str:
    munge_socket = root / "munge" / "munge.socket"
    lines = [
        "# Generated by tests/slurm_cluster.py for one test session; removed with its directory.",
        "ClusterName=hvdtrain-test",
        f"SlurmctldHost={socket.gethostname()}({controller_addr})",
        f"SlurmctldPort={ports[0]}",
        f"SlurmdPort={ports[1]}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool' / '%n'}",
        f"TmpFS={root / 'tmp' / '%n'}",  # per node: the pmix plugin's directories live here
        f"SlurmctldPidFile={root / 'run' / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'run' / 'slurmd-%n.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd-%n.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "MpiDefault=none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "SlurmdParameters=config_overrides",  # CPUs below as configured, whatever this machine has
        "ReturnToService=2",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        "InactiveLimit=0",
        "KillWait=10",
        "MinJobAge=600",  # finished jobs stay visible to scontrol for the whole session
    ]
    for node in nodes:
        lines.append(f"NodeName={node.name} NodeHostname={node.name} NodeAddr={node.addr} CPUs={cpus} State=UNKNOWN")
    lines.append("PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO")
    return "\n".join(lines) + "\n"


class SlurmCluster:
    """A running throw-away cluster (made by :func:`slurm_cluster`); run its clients with :meth:`run`."""

    def __init__(self, root: Path, nodes: Sequence[Node], cpus: int, env: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.nodes = tuple(nodes)
        self.cpus = cpus
        self.conf = root / "slurm.conf"
        self.controller_netns = nodes[0].netns
        controller_addr = nodes[0].addr if nodes[0].netns else "127.0.0.1"
        path = os.pathsep.join([*(env or os.environ).get("PATH", "").split(os.pathsep), *SBIN])
        self.env = {**(env or os.environ), "PATH": path, "SLURM_CONF": str(self.conf)}
        for sub in (
            "munge",
            "state",
            "run",
            "log",
            *(f"spool/{n.name}" for n in nodes),
            *(f"tmp/{n.name}" for n in nodes),
        ):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "munge").chmod(0o700)
        self.conf.write_text(_conf(root, nodes, controller_addr, free_ports(2), cpus))
        self._daemons: list[tuple[str, subprocess.Popen[bytes]]] = []

    # -- clients ---------------------------------------------------------------------------------------------------

    def netns_argv(self, netns: str | None, argv: Sequence[str]) -> list[str]:
        """``argv`` run in network namespace ``netns`` (None: here)."""
        if netns is None:
            return list(argv)
        return ["nsenter", f"--net=/var/run/netns/{netns}", "--", *argv]

    def client_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` (a Slurm client such as sbatch) run where it reaches the controller."""
        return self.netns_argv(self.controller_netns, argv)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = CLIENT_TIMEOUT_S,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run a client command (an argv) with this cluster's environment (plus ``env``); output captured."""
        proc = subprocess.run(
            self.client_argv(argv),
            env={**self.env, **(env or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise SlurmError(f"{' '.join(argv)}: exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()}")
        return proc

    def sbatch(self, args: Sequence[str], *, cwd: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> int:
        """Submit a batch job (``sbatch --parsable ARGS``); return its id."""
        out = self.run(["sbatch", "--parsable", *args], cwd=cwd, env=env).stdout.strip()
        return int(out.split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, ExitCode, NodeList, ...)."""
        out = self.run(["scontrol", "show", "job", "--oneliner", str(job_id)]).stdout
        return dict(item.split("=", 1) for item in out.split() if "=" in item)

    def wait(self, job_id: int, timeout: float, states: Sequence[str] = FINAL_STATES) -> str:
        """Wait until the job reaches one of ``states``; return it (SlurmError on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                state = self.job(job_id).get("JobState", "")
            except SlurmError as exc:  # seen once under load: scontrol ended by SIGPIPE; ask again
                state = f"unknown ({exc})"
            if state in states:
                return state
            if time.monotonic() > deadline:
                raise SlurmError(f"job {job_id} still {state} after {timeout:.0f} s")
            time.sleep(0.5)

    def log(self, name: str) -> str:
        """A daemon's log file (``slurmctld``, ``slurmd-NODE``, ``munged``), '' if absent."""
        path = self.root / "log" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- daemons ---------------------------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        out = open(self.root / "log" / f"{name}.out", "wb")  # noqa: SIM115 - the daemon keeps it
        with out:
            proc = subprocess.Popen(
                list(argv), env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        self._daemons.append((name, proc))

    def _wait_for(self, what: str, ready: Callable[[], bool], timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for name, proc in self._daemons:
                if proc.poll() is not None:
                    raise SlurmError(f"{name} exited with {proc.returncode}: {self._tail(name)}")
            if time.monotonic() > deadline:
                raise SlurmError(f"{what} not ready after {timeout:.0f} s: {self._tail(self._daemons[-1][0])}")
            time.sleep(0.2)

    def _tail(self, name: str) -> str:
        text = ""
        for path in (self.root / "log" / f"{name}.out", self.root / "log" / f"{name}.log"):
            if path.exists():
                text += path.read_text(errors="replace")
        return " | ".join(text.strip().splitlines()[-5:])

    def start(self) -> None:
        """Start munged, slurmctld and every node's slurmd; return once all nodes are idle."""
        munge = self.root / "munge"
        subprocess.run(
            [_which("mungekey") or "mungekey", "--create", f"--keyfile={munge / 'munge.key'}"],
            check=True, capture_output=True, timeout=CLIENT_TIMEOUT_S,
        )  # fmt: skip
        self._spawn(
            "munged",
            [
                _which("munged") or "munged",
                "--foreground",
                "--force",  # root, and a socket directory that others cannot enter
                f"--socket={munge / 'munge.socket'}",
                f"--key-file={munge / 'munge.key'}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--seed-file={munge / 'munged.seed'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
            ],
        )
        self._wait_for("munged", lambda: (munge / "munge.socket").exists())
        self._spawn(
            "slurmctld", self.netns_argv(self.controller_netns, [_which("slurmctld") or "slurmctld", "-D", "-i"])
        )
        self._wait_for("slurmctld", lambda: self.run(["scontrol", "ping"], check=False).returncode == 0)
        for node in self.nodes:
            slurmd = [_which("slurmd") or "slurmd", "-D", "-N", node.name]
            if node.netns is None:
                self._spawn(f"slurmd-{node.name}", slurmd)
                continue
            hosts = self.root / f"hosts-{node.name}"
            hosts.write_text(
                "127.0.0.1 localhost\n" + "".join(f"{n.addr} {n.name}\n" for n in self.nodes if n.netns is not None)
            )
            inner = 'hostname "$1" && mount --bind "$2" /etc/hosts && shift 2 && exec "$@"'
            self._spawn(
                f"slurmd-{node.name}",
                self.netns_argv(
                    node.netns,
                    ["unshare", "--mount", "--uts", "--", "sh", "-c", inner, "sh", node.name, str(hosts), *slurmd],
                ),
            )
        names = {n.name for n in self.nodes}
        self._wait_for("the nodes", lambda: self._idle_nodes() >= names)

    def _idle_nodes(self) -> set[str]:
        proc = self.run(["sinfo", "--noheader", "--Node", "--format=%N %t"], check=False)
        return {line.split()[0] for line in proc.stdout.splitlines() if line.split()[1:] == ["idle"]}

    def stop(self) -> None:
        """Cancel every job, stop the daemons (SIGTERM, then SIGKILL), end whatever still runs with this SLURM_CONF."""
        if any(name == "slurmctld" and proc.poll() is None for name, proc in self._daemons):
            try:
                jobs = self.run(["squeue", "--noheader", "--format=%i"], check=False).stdout.split()
                if jobs:
                    self.run(["scancel", *jobs], check=False)
                    deadline = time.monotonic() + STOP_TIMEOUT_S
                    while time.monotonic() < deadline and self.run(["squeue", "--noheader"], check=False).stdout:
                        time.sleep(0.5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for _, proc in reversed(self._daemons):
            _end(proc)
        self._daemons.clear()
        for pid in self.stray_pids():
            _kill(pid, signal.SIGKILL)

    def stray_pids(self) -> list[int]:
        """Processes (other than this one) whose environment names this cluster's slurm.conf: daemons and jobs."""
        marker = f"SLURM_CONF={self.conf}".encode()
        return [pid for pid, _, environ in _processes() if marker in environ]

    def job_pids(self, job_id: int) -> list[int]:
        """The live processes of job ``job_id``: its slurmstepd daemons and all they started (which inherit
        ``SLURM_JOB_ID``), however they detached (own session, own process group)."""
        conf = f"SLURM_CONF={self.conf}".encode()
        job = f"SLURM_JOB_ID={job_id}".encode()
        step = f"slurmstepd: [{job_id}.".encode()
        return [
            pid
            for pid, cmdline, environ in _processes()
            if conf in environ and (job in environ or cmdline.startswith(step))
        ]


def _processes() -> Iterator[tuple[int, bytes, list[bytes]]]:
    """(pid, command line, environment items) of every live process but this one whose environment is readable."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if cmdline:  # a zombie has none: it is already gone, only not reaped
            yield int(entry.name), cmdline, environ.split(b"\0")


def _kill(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


@contextmanager
def slurm_cluster(
    root: Path, nodes: Sequence[Node], cpus: int = 2, env: Mapping[str, str] | None = None
) -> Iterator[SlurmCluster]:
    """Start a cluster in ``root`` (an empty directory) with ``nodes`` of ``cpus`` CPUs each; always stop it."""
    cluster = SlurmCluster(root, nodes, cpus, env)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
