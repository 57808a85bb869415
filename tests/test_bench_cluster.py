"""``hvdtrain bench cluster``: commands built per contender, the window protocol, the byte accounting against the
ring's theory, a short run of every contender kind, and the clean-up when the run is stopped.

The runs train a tiny model (4 dense layers of 512: 4.3 MB of fp32 gradients) for 10 timed steps on 2 or 3 namespace
hosts; they need root (skipped otherwise). A timed step is 4 samples per host; 20 timed steps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT_ENV

from hvdtrain import netns
from hvdtrain.backends import installed_keras_major
from hvdtrain.bench import cluster, window
from hvdtrain.bench.cli import bench
from hvdtrain.options import run_cli

REASON = netns.cannot_build()
needs_root = pytest.mark.skipif(REASON is not None, reason=str(REASON))
HVDTRAIN = str(Path(sys.executable).with_name("hvdtrain"))
TINY = [
    "--model", "small-layers", "--depth", "4", "--width", "512", "--image-size", "8", "--batch-size", "4",
    "--num-warmup-batches", "2", "--num-batches-per-iter", "4", "--num-iters", "5",
]  # fmt: skip
RUN_TIMEOUT_S = 900


def _fake_cluster(hosts: int) -> netns.Cluster:
    members = tuple(
        netns.ClusterHost(f"node{i}", f"10.233.0.{i + 1}", f"hvdtc-1-0-h{i}", f"p{i}") for i in range(hosts)
    )
    return netns.Cluster(members, "hvdtc-1-0-sw", 1000.0, 62500, 9000, Path("/tmp/x"), Path("/tmp/x/bin"))


def test_horovod_commands_per_contender(tmp_path: Path) -> None:
    workload = cluster.Workload(model="small-layers", batch_size=16, threads=1)
    fake = _fake_cluster(2)
    for name in ("hvd-mpi", "hvd-gloo-fp16", "hvd-mpi-hier", "hvd-mpi-nofusion", "hvd-mpi-bpps2", "single"):
        contender = cluster.CONTENDERS[name]
        place = cluster.layout(contender, 2)
        command = cluster.horovod_command(contender, workload, fake, place, tmp_path / "r.json")
        argv = command.argv
        assert argv[1:4] == ["netns", "exec", "hvdtc-1-0-h0"] and argv[argv.index("--") + 4] == "node0", argv
        program = argv[argv.index("hvdtrain.recipes.synthetic") :]
        batch = program[program.index("--batch-size") + 1]
        assert "--mark-window" in program
        if name == "single":
            assert argv[argv.index("--") + 5] == sys.executable
            continue
        launcher = Path(argv[argv.index("--") + 5]).name
        assert launcher == ("horovodrun" if "gloo" in name else "mpirun")
        hosts = argv[argv.index("-H") + 1]
        if name == "hvd-mpi-hier":
            assert (hosts, argv[argv.index("-np") + 1], batch) == ("node0:2,node1:2", "4", "8")
            assert "HOROVOD_HIERARCHICAL_ALLREDUCE=1" in argv
        else:
            assert (hosts, batch) == ("node0:1,node1:1", "16")
        assert ("--fp16-allreduce" in program) == name.endswith("fp16")
        assert ("HOROVOD_FUSION_THRESHOLD=0" in argv) == (name == "hvd-mpi-nofusion")
        assert ("--backward-passes-per-step" in program) == (name == "hvd-mpi-bpps2")
        if "gloo" in name:
            assert argv[argv.index("--network-interfaces") + 1] == netns.INTERFACE and "--gloo" in argv


def test_help_names_every_contender() -> None:
    from hvdtrain.bench.cluster_cli import CONTENDER_NAMES

    assert CONTENDER_NAMES == list(cluster.CONTENDERS)


def test_parameter_server_plan() -> None:
    contender = cluster.CONTENDERS["ps2"]
    place = cluster.layout(contender, 3)
    assert (place.hosts, place.workers, place.ps, place.coordinator) == (6, (0, 1, 2), (3, 4), 5)
    tasks = cluster.tf_plan(contender, cluster.Workload(), _fake_cluster(6), place)
    roles = {t["name"]: json.loads(t["env"]["TF_CONFIG"]) for t in tasks}
    assert sorted(roles) == ["chief0", "ps0", "ps1", "worker0", "worker1", "worker2"]
    spec = roles["chief0"]["cluster"]
    assert spec == {
        "worker": ["10.233.0.1:2222", "10.233.0.2:2222", "10.233.0.3:2222"],
        "ps": ["10.233.0.4:2222", "10.233.0.5:2222"],
        "chief": ["10.233.0.6:2222"],
    }
    assert roles["ps1"]["task"] == {"type": "ps", "index": 1}
    assert [t["name"] for t in tasks if not t["server"]] == ["chief0"]  # the job ends when the coordinator does
    assert all(t["argv"][3] == f"hvdtc-1-0-h{i}" for i, t in enumerate(sorted(tasks, key=lambda t: t["argv"][3])))


def test_ring_theory() -> None:
    mpi, gradient = cluster.CONTENDERS["hvd-mpi"], 3_000_000.0
    assert cluster.ring_theory(mpi, gradient, 3) == pytest.approx(4_000_000)
    assert cluster.ring_theory(mpi, gradient, 2) == pytest.approx(3_000_000)
    assert cluster.ring_theory(cluster.CONTENDERS["hvd-mpi-fp16"], gradient, 3) == pytest.approx(2_000_000)
    assert cluster.ring_theory(cluster.CONTENDERS["hvd-mpi-bpps2"], gradient, 3) == pytest.approx(2_000_000)
    assert cluster.ring_theory(cluster.CONTENDERS["mwms"], gradient, 2) == pytest.approx(3_000_000)
    assert cluster.ring_theory(cluster.CONTENDERS["hvd-mpi-hier"], gradient, 3) == pytest.approx(4_000_000)
    several = replace(cluster.CONTENDERS["hvd-mpi-hier"], hierarchical=False)
    assert cluster.ring_theory(several, gradient, 3) is None
    assert cluster.ring_theory(cluster.CONTENDERS["ps1"], gradient, 2) is None


def test_window_lines_round_trip(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import threading

    window.announce_model(1234, 5)
    timer = window.Window()
    ack = tmp_path / "ack"
    monkeypatch.setenv(window.ACK_VAR, str(ack))
    threading.Timer(0.3, ack.touch).start()
    began = time.monotonic()
    timer.start()  # waits for the driver's acknowledgement
    assert time.monotonic() - began >= 0.25
    timer.end(10, 80)
    lines = capsys.readouterr().out.splitlines()
    events = [window.parse(line.split("hvdtrain-bench: ", 1)[1]) for line in lines]
    assert [e.kind for e in events if e] == ["model", "start", "end"]
    assert events[0] is not None and events[0].fields == {"trainable_params": 1234.0, "tensors": 5.0}
    assert events[2] is not None and events[2].fields["steps"] == 10 and events[2].fields["samples"] == 80
    assert events[2].fields["seconds"] == pytest.approx(timer.seconds, abs=1e-5)
    assert window.parse("Iter #3: 12 img/sec") is None


def _row(name: str, samples_per_sec: float, hosts: int = 2) -> dict[str, Any]:
    return {
        "rate_mbit": 1000.0,
        "model": "m",
        "contender": name,
        "processes": 1 if name == "single" else hosts,
        "hosts": 1 if name == "single" else hosts,
        "samples_per_sec": samples_per_sec,
        "busiest_link_use": 0.5,
        "worker_sent_per_step": 1e6,
        "worker_received_per_step": 1e6,
        "ring_theory_per_step": 1e6,
        "bytes_vs_theory": 1.0,
        "roles": {"workers": ["node0", "node1"], "ps": [], "coordinator": None},
        "bytes_per_step": {},
    }


def test_summary_efficiency_and_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rows = [_row("single", 10.0), _row("hvd-mpi", 15.0), _row("hvd-mpi", 17.0), _row("hvd-mpi", 16.0)]
    summary = {s["contender"]: s for s in cluster.summarize(rows)}
    assert summary["hvd-mpi"]["samples_per_sec"] == 16.0 and summary["hvd-mpi"]["runs"] == 3
    assert summary["hvd-mpi"]["efficiency"] == pytest.approx(16.0 / (2 * 10.0))
    assert summary["single"]["efficiency"] is None
    document = {"benchmark": "cluster", "date": "d", "label": "here", "command": "hvdtrain bench cluster", "rows": rows}
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps(document))
    assert run_cli(bench, ["report", str(path)], prog_name="hvdtrain bench") == 0
    out = capsys.readouterr().out
    assert "hvdtrain bench cluster" in out and "| hvd-mpi | 2 | 16.0 (15.0..17.0) | 0.80 |" in out


def _bench(tmp_path: Path, hosts: int, contenders: list[str]) -> dict[str, dict[str, Any]]:
    argv = [HVDTRAIN, "bench", "cluster", "--hosts", str(hosts), "--rate-mbit", "1000", *TINY, "-o", str(tmp_path)]
    for name in contenders:
        argv += ["--contender", name]
    proc = subprocess.Popen(
        argv, env={**os.environ, **ROOT_ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, err[-3000:]
    assert not [n for n in netns.list_namespaces() if n.startswith(f"{netns.PREFIX}-{proc.pid}-")]  # all removed
    rows = json.loads((tmp_path / "cluster.json").read_text())["rows"]
    assert [r["contender"] for r in rows] == contenders
    return {r["contender"]: r for r in rows}


@needs_root
@pytest.mark.multiproc
def test_ring_bytes_on_the_links_match_theory(tmp_path: Path) -> None:
    """3 hosts at 1 Gbit/s: what each link carried per step is 2(n-1)/n x the gradient bytes within 5% for a ring
    (over MPI at hvdtrain's defaults, which make Open MPI's allreduce the ring with one rank per host on 3 or more
    hosts; Horovod's Gloo with fp16, half the bytes);
    whatever the algorithm (Open MPI's own choice for 3 ranks is not a ring), every byte sent is received; no link
    ran above its rate."""
    rows = _bench(tmp_path, 3, ["hvd-mpi", "hvd-mpi-ompi", "hvd-gloo-fp16"])
    gradient = rows["hvd-mpi"]["gradient_bytes"]
    assert gradient == 4 * rows["hvd-mpi"]["trainable_params"] > 4_000_000
    for name, row in rows.items():
        per_step = row["bytes_per_step"]
        sent, received = (sum(v[d] for v in per_step.values()) for d in ("sent", "received"))
        assert sent == pytest.approx(received, rel=0.01), (name, per_step)
        assert 0 < row["busiest_link_use"] <= 1.02, (name, row["busiest_link_use"])
        wire_bytes = gradient / 2 if name.endswith("-fp16") else gradient
        assert row["ring_theory_per_step"] == pytest.approx(4 / 3 * wire_bytes)
        if name == "hvd-mpi-ompi":
            continue
        for host in row["roles"]["workers"]:
            for direction in ("sent", "received"):
                ratio = per_step[host][direction] / row["ring_theory_per_step"]
                assert 0.97 <= ratio <= 1.05, (name, host, direction, ratio)


@needs_root
@pytest.mark.multiproc
def test_every_contender_kind_runs(tmp_path: Path) -> None:
    """A short run of each kind on 2 hosts: one process, fp16, accumulation, 2 ranks per host, MWMS, 2 parameter
    servers."""
    rows = _bench(tmp_path, 2, ["single", "hvd-mpi-fp16", "hvd-mpi-bpps2", "hvd-mpi-hier", "mwms", "ps2"])
    gradient = rows["mwms"]["gradient_bytes"]
    for row in rows.values():
        assert row["samples_per_sec"] > 0 and row["samples"] == row["steps"] * 4 * row["hosts"]
    assert rows["single"]["busiest_link_bytes"] < 0.01 * gradient  # nothing to send
    ratios = {name: row["bytes_vs_theory"] for name, row in rows.items()}
    assert 0.97 <= ratios["mwms"] <= 1.05, ratios  # TensorFlow's ring, same theory
    assert 0.97 <= ratios["hvd-mpi-fp16"] <= 1.05, ratios  # half the bytes
    assert rows["hvd-mpi-fp16"]["ring_theory_per_step"] == pytest.approx(gradient / 2)
    # One allreduce every 2 batches: 10 in the window, whose edges may cut one in half (+-5%).
    assert 0.93 <= ratios["hvd-mpi-bpps2"] <= 1.05, ratios
    assert rows["hvd-mpi-bpps2"]["ring_theory_per_step"] == pytest.approx(gradient / 2)
    # 2 ranks per host, hierarchical: the hosts' links carry one ring across 2 hosts, not a ring of 4 ranks.
    hier = rows["hvd-mpi-hier"]
    assert hier["processes"] == 4 and 0.97 <= hier["bytes_vs_theory"] <= 1.05, ratios
    ps = rows["ps2"]
    per_step = ps["bytes_per_step"]
    # Each worker batch pushes the gradients and pulls the variables: a step (one batch per worker, whichever
    # worker runs it, asynchronously) moves the gradient bytes each way per worker, over all workers together.
    workers = ps["roles"]["workers"]
    for direction in ("sent", "received"):
        assert 0.97 <= sum(per_step[h][direction] for h in workers) / (2 * gradient) <= 1.3, per_step
    # The two servers share the variables (sharded on Keras 2; whole and round-robin on Keras 3, which cannot train
    # sharded variables): together they take in every worker's gradients, 2 x G per step. (The workers may send
    # more: both push to one server's link at once, its short queue drops, and TCP sends again.)
    servers = ps["roles"]["ps"]
    assert len(servers) == 2
    if installed_keras_major() == 2:
        assert all(per_step[s]["received"] > 0.2 * gradient for s in servers), per_step
    taken = sum(per_step[s]["received"] for s in servers)
    assert 0.97 <= taken / (2 * gradient) <= 1.1, per_step


@needs_root
@pytest.mark.multiproc
def test_stopping_a_run_removes_the_cluster_and_its_processes(tmp_path: Path) -> None:
    import psutil

    argv = [HVDTRAIN, "bench", "cluster", "--hosts", "2", "--contender", "mwms", *TINY, "-o", str(tmp_path)]
    proc = subprocess.Popen(argv, env={**os.environ, **ROOT_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    mine = f"{netns.PREFIX}-{proc.pid}-"
    deadline = time.monotonic() + 120
    running: list[int] = []
    while len(running) < 2 and time.monotonic() < deadline and proc.poll() is None:  # both workers started
        time.sleep(0.5)
        running = [p for n in netns.list_namespaces() if n.startswith(mine) for p in netns._pids_in(n)]
    assert len(running) >= 2, "the run's hosts never had its workers in them"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert not [n for n in netns.list_namespaces() if n.startswith(mine)]
    assert not list(netns.NETNS_ETC.glob(f"{mine}*"))
    left = [p for p in running if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not left, f"processes of the stopped run still running: {left}"


def test_workload_args_match_the_synthetic_recipe() -> None:
    from hvdtrain.recipes import synthetic

    workload = replace(cluster.Workload(), model="small-layers", depth=3, width=8)
    command = synthetic.command.make_context("synthetic", workload.args(threads=2))
    config = synthetic.SyntheticConfig(**command.params)
    assert (config.model, config.depth, config.width, config.threads, config.batch_size) == (
        "small-layers",
        3,
        8,
        2,
        workload.batch_size,
    )
