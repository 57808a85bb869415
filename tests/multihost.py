"""Two "hosts" on one Linux machine, for real multi-host tests: two network namespaces joined by a veth pair.

    with two_hosts("hvdt") as hosts:
        env = {**os.environ, **hosts.mpi_env()}
        run_bounded(hosts.exec_argv(0, ["mpirun", "-H", "10.231.0.1:1,10.231.0.2:1", ...]), env=env, timeout=300)

Each namespace gets ``lo`` and one end of the veth pair (``veth-a`` with 10.231.0.1/24, ``veth-b`` with
10.231.0.2/24; the interface names differ on purpose, so Open MPI must select them by subnet). The veth is created
directly inside the namespaces, so nothing is ever added to, or routed from, the machine's own network namespace,
and the test subnet is reachable only between the two namespaces.

``mpirun`` runs inside the first namespace and starts its daemon on the second through a generated rsh agent, a
stand-in for ssh that Open MPI calls as ``agent HOST orted ARGS...`` and that runs the command with
``ip netns exec NAMESPACE sh -c "ARGS..."``. Both namespaces share the file system, so the same Python works on
both "hosts".

Needs root and a kernel that allows network namespaces; :func:`can_make_namespaces` says why not.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "IP_TIMEOUT_S",
    "SUBNET",
    "TwoHosts",
    "can_make_namespaces",
    "list_namespaces",
    "run_bounded",
    "two_hosts",
]

SUBNET = "10.231.0.0/24"  # unusual on purpose; only ever configured inside the namespaces made here
HOST_IPS = ("10.231.0.1", "10.231.0.2")
PREFIX_LEN = 24
LETTERS = ("a", "b")
IP_TIMEOUT_S = 30  # every `ip` call; they take milliseconds
KILL_GRACE_S = 5.0
EXTRA_PATH = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")

_PREFIX_RE = re.compile(r"[a-z][a-z0-9]{0,15}")
_sequence = itertools.count()


class NamespaceError(RuntimeError):
    """An ``ip`` command that failed while building or tearing down the hosts."""


def _ip_path() -> str | None:
    """The ``ip`` binary: on PATH, or in the sbin directories that a non-login root shell may lack."""
    search = os.pathsep.join([os.environ.get("PATH", ""), *EXTRA_PATH])
    return shutil.which("ip", path=search)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS`` (an argv, no shell) with a timeout; raise NamespaceError on failure if ``check``."""
    ip = _ip_path()
    if ip is None:
        raise NamespaceError("the `ip` command (iproute2) is not installed")
    proc = subprocess.run([ip, *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False)
    if check and proc.returncode != 0:
        reason = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
        raise NamespaceError(f"ip {' '.join(args)}: {reason}")
    return proc


def can_make_namespaces() -> str | None:
    """None if this process can build two hosts here, else the reason it cannot (a pytest skip message)."""
    if not os.path.isdir("/proc/self/ns"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (run the multi-host test as root)"
    if _ip_path() is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"hvdtprobe-{os.getpid()}-{next(_sequence)}"
    step = "create a network namespace (an unprivileged container or user namespace cannot)"
    try:
        _ip("netns", "add", probe)
        step = "create a veth pair"
        _ip("-n", probe, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1")
    except (NamespaceError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot {step}: {exc}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


@dataclass(frozen=True)
class TwoHosts:
    """Two hosts made by :func:`two_hosts`; index 0 is the first host (where mpirun runs), 1 the second."""

    ips: tuple[str, str]
    namespaces: tuple[str, str]
    interfaces: tuple[str, str]  # the veth end inside each namespace; the names differ
    subnet: str
    agent: Path  # the rsh agent: `agent HOST CMD...` runs CMD in HOST's namespace
    agent_log: Path  # one line per agent call: its arguments, each in [brackets]

    def exec_argv(self, index: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside host ``index``'s namespace."""
        ip = _ip_path()
        if ip is None:
            raise NamespaceError("the `ip` command (iproute2) is not installed")
        return [ip, "netns", "exec", self.namespaces[index], *argv]

    def mpi_env(self) -> dict[str, str]:
        """Open MPI settings, as OMPI_MCA_* environment variables, that make ``mpirun`` use these hosts.

        The rsh agent replaces ssh; TCP (both the runtime's out-of-band channel and the MPI byte transfer layer)
        is confined to the test subnet, given as a CIDR because each namespace names its interface differently.
        A ``-mca btl ...`` on the mpirun command line (hvdtrain.launch adds ``-mca btl ^openib``) overrides
        ``OMPI_MCA_btl``; that still leaves only TCP between the hosts, since shared memory never crosses nodes.
        """
        return {
            "OMPI_MCA_plm_rsh_agent": str(self.agent),
            "OMPI_MCA_btl": "self,tcp",
            "OMPI_MCA_btl_tcp_if_include": self.subnet,
            "OMPI_MCA_oob_tcp_if_include": self.subnet,
        }

    def link_bytes(self, index: int) -> tuple[int, int]:
        """(received, sent) bytes so far on host ``index``'s veth end."""
        stats = Path("/sys/class/net") / self.interfaces[index] / "statistics"
        # /sys shows the caller's namespace; read the counters from inside the host's namespace instead.
        proc = subprocess.run(
            self.exec_argv(index, ["cat", str(stats / "rx_bytes"), str(stats / "tx_bytes")]),
            capture_output=True,
            text=True,
            timeout=IP_TIMEOUT_S,
            check=True,
        )
        rx, tx = proc.stdout.split()
        return int(rx), int(tx)

    def agent_calls(self) -> list[list[str]]:
        """The arguments of every call of the rsh agent so far."""
        if not self.agent_log.exists():
            return []
        return [re.findall(r"\[(.*?)\]", line) for line in self.agent_log.read_text().splitlines()]


def list_namespaces() -> list[str]:
    """Names of the named network namespaces (``ip netns list``; ``(id: N)`` suffixes dropped)."""
    out = _ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pids_in(namespace: str) -> list[int]:
    proc = _ip("netns", "pids", namespace, check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit() and int(p) != os.getpid()]


def _kill_namespace_processes(namespace: str) -> None:
    """End every process left in ``namespace`` (all started by a test in it): SIGTERM, then SIGKILL."""
    pids = _pids_in(namespace)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + KILL_GRACE_S
        while pids and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = _pids_in(namespace)
        if not pids:
            return


def _destroy(namespace: str, interface: str | None = None) -> None:
    """Remove ``namespace``, its processes and its veth end (which takes the peer with it); never raises."""
    try:
        _kill_namespace_processes(namespace)
        if interface is not None:
            _ip("-n", namespace, "link", "del", interface, check=False)
        _ip("netns", "del", namespace, check=False)
    except (OSError, subprocess.TimeoutExpired, NamespaceError):
        pass


def _clean_stale(prefix: str) -> None:
    """Remove namespaces named ``PREFIX-PID-N-x`` whose creating process PID is gone (a crashed earlier run)."""
    pattern = re.compile(rf"{re.escape(prefix)}-(\d+)-\d+-[{''.join(LETTERS)}]")
    for name in list_namespaces():
        match = pattern.fullmatch(name)
        if match and not _pid_alive(int(match.group(1))):
            _destroy(name)


def _agent_script(ip: str, log: Path, hosts: Mapping[str, str]) -> str:
    """A POSIX sh rsh agent: ``agent [-options] HOST CMD...`` runs ``sh -c "CMD..."`` in HOST's namespace.

    Open MPI calls it as ssh would be called: the host, then the daemon command line as separate words, some of
    them quoted for the remote shell (``-mca ess "env"``), so they are joined and handed to ``sh -c`` like sshd does.
    """
    cases = "\n".join(f"  {shlex.quote(host)}) ns={shlex.quote(ns)} ;;" for host, ns in hosts.items())
    return f"""#!/bin/sh
# Generated by tests/multihost.py: a stand-in for ssh that "logs in" to a network namespace.
for arg in "$@"; do printf '[%s]' "$arg"; done >> {shlex.quote(str(log))}
echo >> {shlex.quote(str(log))}
while [ $# -gt 0 ]; do
  case "$1" in -*) shift ;; *) break ;; esac
done
if [ $# -lt 2 ]; then echo "rsh agent: usage: agent HOST COMMAND..." >&2; exit 255; fi
host=$1
shift
case "$host" in
{cases}
  *) echo "rsh agent: unknown host $host" >&2; exit 255 ;;
esac
exec {shlex.quote(ip)} netns exec "$ns" /bin/sh -c "$*"
"""


@contextmanager
def two_hosts(prefix: str = "hvdt") -> Iterator[TwoHosts]:
    """Make two hosts (see the module doc); on exit, always remove them, whatever happened inside.

    Namespaces are named ``PREFIX-PID-N-a`` and ``PREFIX-PID-N-b`` so parallel runs never clash; leftovers of
    crashed runs with the same prefix (their PID gone) are removed first.
    """
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"prefix must be 1-16 lowercase letters and digits, starting with a letter: {prefix!r}")
    ip = _ip_path()
    if ip is None:
        raise NamespaceError("the `ip` command (iproute2) is not installed")
    _clean_stale(prefix)
    base = f"{prefix}-{os.getpid()}-{next(_sequence)}"
    namespaces = (f"{base}-{LETTERS[0]}", f"{base}-{LETTERS[1]}")
    interfaces = (f"veth-{LETTERS[0]}", f"veth-{LETTERS[1]}")
    workdir = Path(tempfile.mkdtemp(prefix=f"{base}-"))
    created: list[str] = []
    try:
        for ns in namespaces:
            _ip("netns", "add", ns)
            created.append(ns)
        # Both ends are created inside the namespaces: nothing appears in this machine's own namespace.
        _ip("-n", namespaces[0], "link", "add", interfaces[0], "type", "veth", "peer", "name", interfaces[1])
        _ip("-n", namespaces[0], "link", "set", interfaces[1], "netns", namespaces[1])
        for ns, dev, addr in zip(namespaces, interfaces, HOST_IPS, strict=True):
            _ip("-n", ns, "addr", "add", f"{addr}/{PREFIX_LEN}", "dev", dev)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", dev, "up")
        agent = workdir / "rsh-agent"
        log = workdir / "rsh-agent.log"
        agent.write_text(_agent_script(ip, log, dict(zip(HOST_IPS, namespaces, strict=True))))
        agent.chmod(0o755)
        yield TwoHosts(
            ips=HOST_IPS,
            namespaces=namespaces,
            interfaces=interfaces,
            subnet=SUBNET,
            agent=agent,
            agent_log=log,
        )
    finally:
        for ns, dev in zip(namespaces, interfaces, strict=True):
            if ns in created:
                _destroy(ns, dev)
        shutil.rmtree(workdir, ignore_errors=True)


def run_bounded(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> tuple[int | None, str]:
    """Run ``argv`` (no shell) in its own process group; return (exit status, stdout+stderr).

    On timeout the whole group gets SIGTERM (mpirun then stops its daemons and ranks), then SIGKILL, and the
    status is None. Processes that escaped the group are ended when their namespace is removed.
    """
    proc = subprocess.Popen(
        list(argv),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            try:
                out, _ = proc.communicate(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:  # a process outside the group holds the pipe open
                proc.kill()
                proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
                out = "(output lost: a process outside the launcher's process group kept it open)"
        return None, out


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
