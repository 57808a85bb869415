"""The namespace cluster of ``hvdtrain bench cluster`` (hvdtrain.netns): hosts, names, shaping, counters, clean-up.

Root-only tests skip with the reason elsewhere. Together they take ~10 s (no TensorFlow).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import error_lines

from hvdtrain import netns
from hvdtrain.bench.cli import bench
from hvdtrain.options import run_cli

REASON = netns.cannot_build() if os.name == "posix" else "needs Linux"
needs_root = pytest.mark.skipif(REASON is not None, reason=str(REASON))

# A receiver and a sender of N bytes over TCP (argv lists, run inside the hosts).
RECEIVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 5999)); s.listen(1)
print("listening", flush=True)
c, _ = s.accept(); n = 0
while True:
    b = c.recv(1 << 16)
    if not b: break
    n += len(b)
print(n, flush=True)
"""
SENDER = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], 5999)); data = b"x" * int(sys.argv[2]); t = time.perf_counter()
s.sendall(data); s.shutdown(socket.SHUT_WR); s.recv(1); print(time.perf_counter() - t, flush=True)
"""


def _ours(base: str) -> list[str]:
    return [n for n in netns.list_namespaces() if n.startswith(base)]


def test_not_root_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "needs root" in str(netns.cannot_build())
    assert run_cli(bench, ["cluster", "--hosts", "2", "-o", "/nonexistent/out"], prog_name="hvdtrain bench") == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("hvdtrain: error: bench cluster: ") and "root" in lines[0]
    assert not Path("/nonexistent/out").exists()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--hosts", "5"], "--hosts must be 2..4"),
        (["--rate-mbit", "fast"], "not a number"),
        (["--contender", "horovod"], "unknown --contender"),
        (["--contender", "hvd-mpi-hier", "--batch-size", "3"], "even --batch-size"),
    ],
)
def test_bad_options_are_one_line(args: list[str], words: str, capsys: pytest.CaptureFixture) -> None:
    assert run_cli(bench, ["cluster", *args], prog_name="hvdtrain bench") == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and words in lines[0], lines


@needs_root
def test_hosts_names_shaping_and_removal() -> None:
    with netns.build_cluster(3, rate_mbit=100) as cluster:
        base = cluster.switch[: -len("-sw")]
        assert sorted(_ours(base)) == sorted(cluster.namespaces)
        for i in range(3):
            shown = cluster.qdiscs(i)
            assert shown.count("tbf") == 2 and "rate 100Mbit" in shown and "lat 2ms" in shown, shown
        probe = cluster.exec_argv(1, ["sh", "-c", "hostname; getent hosts node2; cat /sys/class/net/eth0/mtu"])
        out = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=True).stdout.split()
        assert out == ["node1", "10.233.0.3", "node2", "9000"]
        # The ssh stand-in, called the way horovodrun calls ssh (options before and after the host).
        env = {**os.environ, **cluster.env()}
        ssh = ["ssh", "-o", "StrictHostKeyChecking=no", "node2", "-o", "ConnectTimeout=5", "hostname"]
        login = subprocess.run(cluster.exec_argv(0, ssh), capture_output=True, text=True, env=env, timeout=30)
        assert login.stdout.strip() == "node2", login.stderr
        etc = [netns.NETNS_ETC / h.namespace for h in cluster.hosts]
        assert all((d / "hosts").exists() for d in etc)
    assert _ours(base) == []
    assert not any(d.exists() for d in etc)


@needs_root
def test_links_carry_at_most_their_rate_and_are_counted() -> None:
    size, rate = 2_500_000, 20  # 1 s at 20 Mbit/s
    with netns.build_cluster(2, rate_mbit=rate) as cluster:
        receiver = subprocess.Popen(
            cluster.exec_argv(1, [sys.executable, "-c", RECEIVER]), stdout=subprocess.PIPE, text=True
        )
        try:
            assert receiver.stdout is not None and receiver.stdout.readline().strip() == "listening"
            before = cluster.counters()
            sender = [sys.executable, "-c", SENDER, cluster.hosts[1].ip, str(size)]
            took = float(subprocess.run(cluster.exec_argv(0, sender), capture_output=True, text=True, timeout=60,
                                        check=True).stdout)  # fmt: skip
            received = int(receiver.stdout.readline())
            after = cluster.counters()
        finally:
            receiver.kill()
            receiver.wait()
    assert received == size
    # A lower bound only (a busy machine can only make it slower): the shaper let no more than the rate through.
    assert took >= 0.9 * size * 8 / (rate * 1e6), took
    sent = after["node0"].sent - before["node0"].sent
    got = after["node1"].received - before["node1"].received
    assert size <= sent <= 1.05 * size and size <= got <= 1.05 * size, (sent, got)


@needs_root
def test_a_killed_run_is_cleaned_up_on_the_next_start() -> None:
    builder = subprocess.Popen(
        [sys.executable, "-m", "hvdtrain.netns", "2", "100"], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    assert builder.stdout is not None
    namespaces = builder.stdout.readline().split()
    assert len(namespaces) == 3
    # A process left running on a host, as a rank of a killed job would be.
    orphan = subprocess.Popen(["ip", "netns", "exec", namespaces[1], "sleep", "300"], start_new_session=True)
    builder.send_signal(signal.SIGKILL)
    builder.wait()
    assert set(namespaces) <= set(netns.list_namespaces())  # left behind by the kill
    with netns.build_cluster(2) as cluster:
        assert not set(namespaces) & set(netns.list_namespaces())
        assert set(cluster.namespaces) <= set(netns.list_namespaces())
    deadline = time.monotonic() + 10
    while orphan.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert orphan.poll() is not None, "the process left in the killed run's host is still running"
    assert not any((netns.NETNS_ETC / ns).exists() for ns in namespaces)
