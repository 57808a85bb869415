"""Multi-process training for real: 2 ranks launched with horovodrun and with mpirun."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import PYTHON, WORKERS, error_lines, launch, launcher_argv, recipe_program, run, test_accuracy

pytestmark = pytest.mark.multiproc

BASE_LR = 0.002


def sync_run(
    tmp_path: Path, launcher: str, *options: str, env: dict[str, str] | None = None, np_: int = 2
) -> list[dict[str, np.ndarray]]:
    """Train digits on ``np_`` ranks through the sync worker; return each rank's saved state.

    ``launcher`` "gloo" is horovodrun with Horovod's Gloo controller.
    """
    program = [PYTHON, str(WORKERS / "sync_worker.py"), str(tmp_path), "--epochs", "2", "--lr", str(BASE_LR), *options]
    if launcher == "gloo":
        done = run([*launcher_argv("horovodrun", np_), "--gloo", *program], env)
    else:
        done = launch(launcher, np_, program, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [dict(np.load(tmp_path / f"rank-{r}.npz")) for r in range(np_)]
    assert [int(r["size"]) for r in ranks] == [np_] * np_
    return ranks


@pytest.mark.parametrize(
    ("launcher", "options", "ranks"),
    [
        ("horovodrun", ["--warmup-epochs", "0"], 2),
        ("mpirun", ["--warmup-epochs", "0"], 2),
        ("mpirun", ["--warmup-epochs", "0", "--fp16-allreduce"], 2),
        ("horovodrun", ["--warmup-epochs", "0", "--backward-passes-per-step", "2"], 2),
        # fp16 over Gloo with 3 ranks: a loaded bench run once counted fewer bytes on its links than a ring needs
        # (quiet reruns matched the theory, docs/cluster.md).
        ("gloo", ["--warmup-epochs", "0", "--fp16-allreduce"], 3),
    ],
    ids=["horovodrun", "mpirun", "mpirun-fp16", "horovodrun-accumulate", "gloo-fp16-3-ranks"],
)
def test_ranks_start_apart_and_end_identical(tmp_path: Path, launcher: str, options: list[str], ranks: int) -> None:
    states = sync_run(tmp_path, launcher, *options, np_=ranks)
    first = states[0]
    assert not np.array_equal(first["initial"], states[1]["initial"]), "ranks should start from different weights"
    for state in states[1:]:
        np.testing.assert_array_equal(first["final"], state["final"])
    assert not np.array_equal(first["final"], first["initial"]), "training changed nothing"
    for state in states:
        assert float(state["scaled_lr"]) == pytest.approx(BASE_LR * ranks)
        assert float(state["lr"]) == pytest.approx(BASE_LR * ranks, rel=1e-6)
        assert float(state["accuracy"]) > 0.8


def test_sqrt_scaling_and_warmup_reach_each_rank_on_an_mpi4py_communicator(tmp_path: Path) -> None:
    options = ["--lr-scaling", "sqrt", "--warmup-epochs", "1"]
    rank0, rank1 = sync_run(tmp_path, "mpirun", *options, env={"SYNC_WORKER_MPI4PY": "1"})
    for rank in (rank0, rank1):
        assert float(rank["lr"]) == pytest.approx(BASE_LR * np.sqrt(2), rel=1e-6)
    np.testing.assert_array_equal(rank0["final"], rank1["final"])


def test_checkpoints_and_metrics_come_from_rank0_only(tmp_path: Path) -> None:
    # MPMD: rank 0 and rank 1 are told different directories, so anything rank 1 wrote would show up in its own.
    dirs = {r: (tmp_path / f"logs{r}", tmp_path / f"ckpt{r}") for r in (0, 1)}

    def app(rank: int) -> list[str]:
        logs, ckpt = dirs[rank]
        options = ["--epochs", "3", "--warmup-epochs", "2", "--log-dir", str(logs), "--checkpoint-dir", str(ckpt)]
        return ["-np", "1", *recipe_program("digits", *options)]

    done = run(["mpirun", "-bind-to", "none", "-map-by", "slot", *app(0), ":", *app(1)])
    assert done.returncode == 0, done.stderr[-3000:]
    logs0, ckpt0 = dirs[0]
    assert sorted(p.name for p in ckpt0.iterdir()) == ["epoch-0001.npz", "epoch-0002.npz", "epoch-0003.npz"]
    rows = [json.loads(line) for line in (logs0 / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert all(row["samples_per_sec"] > 0 for row in rows)
    # Horovod's warmup goes from lr/size to lr linearly: after 1 of 2 warmup epochs, (1/2 + 1/2 x 1/2) of the way.
    scaled = 1e-3 * 2
    assert [row["lr"] for row in rows] == pytest.approx([0.75 * scaled, scaled, scaled])
    csv_lines = (logs0 / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,") and len(csv_lines) == 4
    assert not dirs[1][0].exists() and not dirs[1][1].exists()


def test_digits_two_ranks_match_one_rank() -> None:
    single = run(recipe_program("digits"))
    assert single.returncode == 0, single.stderr[-3000:]
    double = launch("horovodrun", 2, recipe_program("digits"))
    assert double.returncode == 0, double.stderr[-3000:]
    acc1, acc2 = test_accuracy(single.stdout), test_accuracy(double.stdout)
    assert acc1 >= 0.95 and acc2 >= 0.95
    assert abs(acc2 - acc1) <= 0.02, (acc1, acc2)


def test_mnist_trains_on_generated_file(mnist_npz: Path) -> None:
    done = launch("horovodrun", 2, recipe_program("mnist", "--data-dir", str(mnist_npz.parent), "--epochs", "2"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert test_accuracy(done.stdout) >= 0.9


def test_mnist_missing_file_offline_is_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "empty"
    done = launch(
        "mpirun",
        2,
        recipe_program("mnist", "--data-dir", str(data_dir)),
        env={"HVDTRAIN_MNIST_URL": "http://127.0.0.1:9/mnist.npz"},  # nothing listens on the discard port
    )
    assert done.returncode != 0
    lines = [line for line in error_lines(done.stderr) if "hvdtrain: error" in line]
    assert len(lines) == 1, done.stderr
    assert str(data_dir / "mnist.npz") in lines[0] and "digits" in lines[0]
    assert "Traceback" not in done.stderr
    assert list(data_dir.iterdir()) == []  # no partial download left behind
