"""Elastic training through ``hvdtrain run --elastic``: a worker leaves mid-training, then comes back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT_ENV, test_accuracy

from hvdtrain import checkpoint

pytestmark = pytest.mark.multiproc

HVDTRAIN = str(Path(sys.executable).with_name("hvdtrain"))


def wait_for(path: Path, job: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert job.poll() is None, f"job ended before {path.name} appeared"
        assert time.monotonic() < deadline, f"no {path.name} after {seconds} s"
        time.sleep(0.1)


def test_worker_leaves_and_rejoins(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("localhost:2\n")
    discover = tmp_path / "discover.sh"
    discover.write_text(f"#!/bin/sh\ncat {hosts}\n")
    discover.chmod(0o755)
    ckpt, logs = tmp_path / "ckpt", tmp_path / "logs"
    argv = [
        HVDTRAIN, "run", "digits", "--elastic", "-np", "2", "--min-np", "1", "--max-np", "2",
        "--host-discovery-script", str(discover), "--network-interface", "lo",
        "--epochs", "10", "--batch-size", "2", "--checkpoint-dir", str(ckpt), "--log-dir", str(logs),
    ]  # fmt: skip
    job = subprocess.Popen(
        argv, env={**os.environ, **ROOT_ENV}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for(ckpt / "epoch-0002.npz", job)
        hosts.write_text("localhost:1\n")  # drop a worker
        wait_for(ckpt / "epoch-0005.npz", job)
        hosts.write_text("localhost:2\n")  # and bring it back
        output, _ = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, output[-4000:]
    sizes = [line.split(" x ")[1].split()[0] for line in output.splitlines() if "per rank x" in line]
    assert sizes[0] == "2" and "1" in sizes and sizes[-1] == "2", sizes  # 2 ranks, then 1, then 2 again
    assert "learning rate 0.001 = base 0.001 scaled linear for 1 ranks" in output  # LR follows the world size
    assert "has been removed from elastic job" in output
    final = checkpoint.load_latest(ckpt)
    assert final is not None and final.epoch == 10 and final.world_size == 2
    epochs = [json.loads(line)["epoch"] for line in (logs / "metrics.jsonl").read_text().splitlines()]
    assert sorted(set(epochs)) == list(range(1, 11))
    assert test_accuracy(output) >= 0.9
