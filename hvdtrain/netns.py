"""A small cluster on one Linux machine: N "hosts" as network namespaces on a bridge, each link rate-shaped.

    with build_cluster(3, rate_mbit=1000) as cluster:
        run(cluster.exec_argv(0, ["mpirun", "-H", cluster.hosts_arg(1), ...]), env={**os.environ, **cluster.env()})
        cluster.counters()   # {hostname: LinkBytes(sent, received)} read from the switch's ports

Layout (nothing is added to, or routed from, this machine's own network namespace):

- a "switch" namespace ``PREFIX-PID-N-sw`` holds the bridge ``br0`` and one port ``pI`` per host;
- host I is namespace ``PREFIX-PID-N-hI`` with ``lo`` and ``eth0`` (the other end of ``pI``), address
  10.233.0.(I+1)/24, hostname ``nodeI``;
- links carry jumbo frames (MTU 9000) unless asked otherwise;
- with a rate, both directions of each link are shaped with a token-bucket filter (``tc qdisc ... tbf``) with a
  short queue: the host's ``eth0`` (what it sends) and the switch's ``pI`` (what it receives);
- every process runs in its host through :meth:`Cluster.exec_argv`: ``ip netns exec`` (which also bind-mounts
  ``/etc/netns/NAMESPACE/hosts`` over ``/etc/hosts``, so every host name resolves to its address) and
  ``unshare --uts`` with the host's own hostname (Horovod's Gloo controller connects to the address of the
  hostname; Open MPI tells hosts apart by it);
- a generated ``ssh`` stand-in (on the PATH that :meth:`Cluster.env` gives, and Open MPI's rsh agent) "logs in" to a
  host by name or address the same way; horovodrun and mpirun start their remote processes through it.

On exit, and on the next start after a run that was killed (its PID gone), every process left in the namespaces is
ended and the namespaces, links and files are removed. Needs root, ``ip`` and ``tc`` (iproute2) and ``unshare``
(util-linux); :func:`cannot_build` says what is missing in one line.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Cluster",
    "ClusterError",
    "LinkBytes",
    "build_cluster",
    "cannot_build",
    "clean_stale",
    "list_namespaces",
]

PREFIX = "hvdtc"
SUBNET = "10.233.0.0/24"  # only ever configured inside the namespaces made here
PREFIX_LEN = 24
INTERFACE = "eth0"  # the same name on every host, so launchers can name it once
BRIDGE = "br0"
MAX_HOSTS = 16
DEFAULT_MTU = 9000  # jumbo frames, as cluster networks use: headers are 0.7% of a frame, 4.5% at 1500
QUEUE_LATENCY_MS = 2.0  # tbf queue: a deep one (50 ms) made a 94 MB allreduce twice as slow at 1 Gbit/s
MIN_BURST_BYTES = 32 * 1024
BURST_S = 0.0005  # bucket depth = 0.5 ms at the link rate (at least MIN_BURST_BYTES)
COMMAND_TIMEOUT_S = 30  # every ip/tc call; they take milliseconds
KILL_GRACE_S = 5.0
EXTRA_PATH = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")
NETNS_ETC = Path("/etc/netns")  # `ip netns exec NS` bind-mounts /etc/netns/NS/* over /etc/*

_PREFIX_RE = re.compile(r"[a-z][a-z0-9]{0,11}")
_sequence = itertools.count()


class ClusterError(RuntimeError):
    """The cluster cannot be built here, or a command that builds it failed; the message is one line."""


@dataclass(frozen=True)
class LinkBytes:
    """Bytes a host has sent and received on its link so far (Ethernet frames, as the port counts them)."""

    sent: int
    received: int

    def __sub__(self, other: LinkBytes) -> LinkBytes:
        return LinkBytes(self.sent - other.sent, self.received - other.received)


@dataclass(frozen=True)
class ClusterHost:
    """One host: its hostname, address, namespace and the switch port its link ends in."""

    name: str
    ip: str
    namespace: str
    port: str


def _tool(name: str) -> str | None:
    """``name`` on PATH or in the sbin directories a non-login root shell may lack."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *EXTRA_PATH]))


def _run(tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``tool ARGS`` (argv, no shell) with a timeout; ClusterError with the tool's message if ``check`` fails."""
    path = _tool(tool)
    if path is None:
        raise ClusterError(f"the `{tool}` command is not installed")
    proc = subprocess.run([path, *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False)
    if check and proc.returncode != 0:
        reason = (proc.stderr or proc.stdout).strip().replace("\n", " ") or f"exit status {proc.returncode}"
        raise ClusterError(f"{tool} {' '.join(args)}: {reason}")
    return proc


def cannot_build() -> str | None:
    """None when this process can build a cluster, else why not (one line)."""
    if not os.path.isdir("/proc/self/ns"):
        return "a cluster of network namespaces needs Linux"
    if os.geteuid() != 0:
        return "building network namespaces and shaping their links needs root (run it as root, e.g. with sudo)"
    for tool, package in (("ip", "iproute2"), ("tc", "iproute2"), ("unshare", "util-linux")):
        if _tool(tool) is None:
            return f"the `{tool}` command is not installed (Debian/Ubuntu: apt-get install {package})"
    probe = f"{PREFIX}probe-{os.getpid()}-{next(_sequence)}"
    try:
        _run("ip", "netns", "add", probe)
        _run("ip", "-n", probe, "link", "add", BRIDGE, "type", "bridge")
    except (ClusterError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace with a bridge here: {exc}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


def list_namespaces() -> list[str]:
    """Named network namespaces (``ip netns list``, ``(id: N)`` dropped)."""
    return [line.split()[0] for line in _run("ip", "netns", "list").stdout.splitlines() if line.strip()]


def _pids_in(namespace: str) -> list[int]:
    proc = _run("ip", "netns", "pids", namespace, check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit() and int(p) != os.getpid()]


def _kill_all_in(namespaces: Sequence[str]) -> None:
    """End every process in ``namespaces`` (all started in them by us): SIGTERM, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [p for ns in namespaces for p in _pids_in(ns)]
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + KILL_GRACE_S
        while pids and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = [p for ns in namespaces for p in _pids_in(ns)]
        if not pids:
            return


def _remove(namespaces: Sequence[str]) -> None:
    """End the processes in ``namespaces``, delete them (their veth links go with them) and their /etc/netns files."""
    try:
        _kill_all_in(namespaces)
    except (OSError, subprocess.TimeoutExpired, ClusterError):
        pass
    for ns in namespaces:
        try:
            _run("ip", "netns", "del", ns, check=False)
        except (OSError, subprocess.TimeoutExpired, ClusterError):
            pass
        shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(prefix: str = PREFIX) -> list[str]:
    """Remove the clusters of earlier runs that were killed (namespaces ``PREFIX-PID-N-...`` whose PID is gone);
    return the namespaces removed."""
    pattern = re.compile(rf"{re.escape(prefix)}-(\d+)-\d+-(sw|h\d+)")
    names = set(list_namespaces())
    if NETNS_ETC.is_dir():
        names |= {p.name for p in NETNS_ETC.iterdir()}
    stale = [n for n in sorted(names) if (m := pattern.fullmatch(n)) and not _pid_alive(int(m.group(1)))]
    _remove(stale)
    return stale


def _agent_script(ip: str, unshare: str, hosts: Sequence[ClusterHost]) -> str:
    """A POSIX sh stand-in for ssh (and Open MPI's rsh agent): ``ssh [-o OPT ...] HOST [-o OPT ...] COMMAND...`` runs
    ``sh -c "COMMAND..."`` in HOST's namespace under HOST's hostname, as sshd would run it."""
    cases = "\n".join(
        f"  {shlex.quote(h.name)}|{shlex.quote(h.ip)}) ns={shlex.quote(h.namespace)} name={shlex.quote(h.name)} ;;"
        for h in hosts
    )
    return f"""#!/bin/sh
# Generated by hvdtrain.netns: "logs in" to a host of a namespace cluster.
# Options come before and (as horovodrun writes them) after the host, like OpenSSH takes them.
host=
while [ $# -gt 0 ]; do
  case "$1" in
    -[bcDEeFIiJLlmOopQRSWw]) shift 2 ;;
    -*) shift ;;
    *) if [ -n "$host" ]; then break; fi; host=$1; shift ;;
  esac
done
if [ -z "$host" ] || [ $# -lt 1 ]; then echo "hvdtrain ssh stand-in: usage: ssh HOST COMMAND..." >&2; exit 255; fi
case "$host" in
{cases}
  *) echo "hvdtrain ssh stand-in: unknown host $host" >&2; exit 255 ;;
esac
login='hostname "$0" && exec /bin/sh -c "$1"'
exec {shlex.quote(ip)} netns exec "$ns" {shlex.quote(unshare)} --uts -- /bin/sh -c "$login" "$name" "$*"
"""


@dataclass(frozen=True)
class Cluster:
    """A cluster made by :func:`build_cluster`."""

    hosts: tuple[ClusterHost, ...]
    switch: str  # the namespace holding the bridge and its ports
    rate_mbit: float | None  # each direction of each link; None = unshaped
    burst_bytes: int | None
    mtu: int
    workdir: Path
    bin_dir: Path  # holds the `ssh` stand-in

    @property
    def agent(self) -> Path:
        return self.bin_dir / "ssh"

    @property
    def namespaces(self) -> list[str]:
        return [self.switch, *(h.namespace for h in self.hosts)]

    def exec_argv(self, index: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run on host ``index``: in its namespace, under its hostname."""
        host = self.hosts[index]
        ip, unshare = _tool("ip"), _tool("unshare")
        if ip is None or unshare is None:
            raise ClusterError("`ip` and `unshare` are needed to run a command on a host")
        script = 'hostname "$0" && exec "$@"'
        return [ip, "netns", "exec", host.namespace, unshare, "--uts", "--", "/bin/sh", "-c", script, host.name, *argv]

    def env(self) -> dict[str, str]:
        """Environment for a launcher on host 0: the ssh stand-in first on PATH, Open MPI's rsh agent and TCP
        confined to the cluster's subnet (``-mca btl ^openib`` on mpirun's line still leaves shared memory within a
        host, TCP between hosts)."""
        return {
            "PATH": os.pathsep.join([str(self.bin_dir), os.environ.get("PATH", ""), *EXTRA_PATH]),
            "OMPI_MCA_plm_rsh_agent": str(self.agent),
            "OMPI_MCA_btl_tcp_if_include": SUBNET,
            "OMPI_MCA_oob_tcp_if_include": SUBNET,
        }

    def hosts_arg(self, slots: int = 1, count: int | None = None) -> str:
        """``node0:S,node1:S,...`` for -H (the first ``count`` hosts)."""
        return ",".join(f"{h.name}:{slots}" for h in self.hosts[: count or len(self.hosts)])

    def counters(self) -> dict[str, LinkBytes]:
        """Bytes each host has sent and received on its link, read from the switch's ports in one call."""
        out = _run("ip", "-n", self.switch, "-j", "-s", "link", "show").stdout
        stats = {link["ifname"]: link.get("stats64", {}) for link in json.loads(out)}
        result = {}
        for host in self.hosts:
            port = stats[host.port]  # the port receives what the host sends
            result[host.name] = LinkBytes(sent=int(port["rx"]["bytes"]), received=int(port["tx"]["bytes"]))
        return result

    def qdiscs(self, index: int) -> str:
        """``tc qdisc show`` of host ``index``'s link, both ends."""
        host = self.hosts[index]
        own = _run("tc", "-n", host.namespace, "qdisc", "show", "dev", INTERFACE).stdout
        port = _run("tc", "-n", self.switch, "qdisc", "show", "dev", host.port).stdout
        return own + port


def burst_for(rate_mbit: float, mtu: int = DEFAULT_MTU) -> int:
    """The token bucket's depth for ``rate_mbit``: 0.5 ms at the rate, at least 32 KiB and 4 frames."""
    return max(MIN_BURST_BYTES, 4 * mtu, int(rate_mbit * 1e6 / 8 * BURST_S))


def _shape(namespace: str, device: str, rate_mbit: float, burst: int) -> None:
    rate = f"{rate_mbit:g}mbit"
    latency = f"{QUEUE_LATENCY_MS:g}ms"
    _run("tc", "-n", namespace, "qdisc", "replace", "dev", device, "root", "tbf", "rate", rate, "burst", str(burst),
         "latency", latency)  # fmt: skip


@contextmanager
def build_cluster(
    hosts: int, rate_mbit: float | None = None, prefix: str = PREFIX, mtu: int = DEFAULT_MTU
) -> Iterator[Cluster]:
    """Build ``hosts`` hosts on a bridge (see the module doc), links shaped to ``rate_mbit`` each way if given,
    frames of ``mtu`` bytes; on exit, whatever happened inside, end their processes and remove everything. Clusters
    of killed earlier runs with the same prefix are removed first."""
    problem = cannot_build()
    if problem is not None:
        raise ClusterError(problem)
    if not 1 <= hosts <= MAX_HOSTS:
        raise ClusterError(f"a cluster has 1 to {MAX_HOSTS} hosts, got {hosts}")
    if not 576 <= mtu <= 65535:
        raise ClusterError(f"the MTU must be 576..65535 bytes, got {mtu}")
    if rate_mbit is not None and rate_mbit <= 0:
        raise ClusterError(f"the link rate must be > 0 Mbit/s, got {rate_mbit:g}")
    if not _PREFIX_RE.fullmatch(prefix):
        raise ClusterError(f"prefix must be 1-12 lowercase letters and digits, starting with a letter: {prefix!r}")
    clean_stale(prefix)
    base = f"{prefix}-{os.getpid()}-{next(_sequence)}"
    members = tuple(
        ClusterHost(name=f"node{i}", ip=f"10.233.0.{i + 1}", namespace=f"{base}-h{i}", port=f"p{i}")
        for i in range(hosts)
    )
    switch = f"{base}-sw"
    workdir = Path(tempfile.mkdtemp(prefix=f"{base}-"))
    created: list[str] = []
    try:
        for ns in (switch, *(h.namespace for h in members)):
            _run("ip", "netns", "add", ns)
            created.append(ns)
        _run("ip", "-n", switch, "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "-n", switch, "link", "set", BRIDGE, "up")
        _run("ip", "-n", switch, "link", "set", "lo", "up")
        hosts_file = "127.0.0.1 localhost\n" + "".join(f"{h.ip} {h.name}\n" for h in members)
        burst = None if rate_mbit is None else burst_for(rate_mbit, mtu)
        for host in members:
            _run("ip", "-n", switch, "link", "add", host.port, "type", "veth", "peer", "name", INTERFACE,
                 "netns", host.namespace)  # fmt: skip
            _run("ip", "-n", switch, "link", "set", host.port, "mtu", str(mtu))
            _run("ip", "-n", host.namespace, "link", "set", INTERFACE, "mtu", str(mtu))
            _run("ip", "-n", switch, "link", "set", host.port, "master", BRIDGE)
            _run("ip", "-n", switch, "link", "set", host.port, "up")
            _run("ip", "-n", host.namespace, "addr", "add", f"{host.ip}/{PREFIX_LEN}", "dev", INTERFACE)
            _run("ip", "-n", host.namespace, "link", "set", "lo", "up")
            _run("ip", "-n", host.namespace, "link", "set", INTERFACE, "up")
            if rate_mbit is not None and burst is not None:
                _shape(host.namespace, INTERFACE, rate_mbit, burst)  # what the host sends
                _shape(switch, host.port, rate_mbit, burst)  # what it receives
            etc = NETNS_ETC / host.namespace
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts_file)
        bin_dir = workdir / "bin"
        bin_dir.mkdir()
        ip, unshare = _tool("ip"), _tool("unshare")
        assert ip is not None and unshare is not None  # checked by cannot_build
        agent = bin_dir / "ssh"
        agent.write_text(_agent_script(ip, unshare, members))
        agent.chmod(0o755)
        yield Cluster(members, switch, rate_mbit, burst, mtu, workdir, bin_dir)
    finally:
        _remove(created)
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hvdtrain.netns HOSTS [RATE_MBIT]``: build a cluster, print its namespaces, wait until killed
    (for tests of the clean-up after a killed run)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    rate = float(args[1]) if len(args) > 1 else None
    with build_cluster(int(args[0]), rate) as cluster:
        print(" ".join(cluster.namespaces), flush=True)
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    raise SystemExit(main())
