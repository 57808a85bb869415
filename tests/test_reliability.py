"""Checkpoint, kill -9, resume: nothing completed is lost and the result matches an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from conftest import PYTHON, ROOT_ENV, WORKERS, error_lines, launch, launcher_argv, recipe_program, run

from hvdtrain import checkpoint

pytestmark = pytest.mark.multiproc

EPOCHS = ["--epochs", "6", "--batch-size", "4", "--warmup-epochs", "0"]  # 180 steps an epoch: long enough to hit


def worker(out: Path, ckpt: Path, *extra: str) -> list[str]:
    return [PYTHON, str(WORKERS / "sync_worker.py"), str(out), *EPOCHS, "--checkpoint-dir", str(ckpt), *extra]


def job_processes(marker: Path) -> list[psutil.Process]:
    """Live processes whose command line names ``marker`` (the run's own output directory)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if str(marker) in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def kill_one_rank_after(
    launcher_args: list[str], out: Path, ckpt: Path, epoch_file: str, victim: int
) -> tuple[int, str, float]:
    """Start a 2-rank job, SIGKILL rank process ``victim`` once ``epoch_file`` exists.

    Returns (exit code, output, seconds from the kill to the job's exit).
    """
    job = subprocess.Popen(
        launcher_args + worker(out, ckpt),
        env={**os.environ, **ROOT_ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (ckpt / epoch_file).exists():
            assert job.poll() is None and time.monotonic() < deadline, "job ended before the checkpoint appeared"
            time.sleep(0.02)
        ranks = [p for p in job_processes(out) if "sync_worker.py" in " ".join(p.cmdline()[1:2])]
        assert len(ranks) == 2
        ranks[victim].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        output, _ = job.communicate(timeout=120)
        return job.returncode, output, time.monotonic() - killed_at
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)


@pytest.mark.parametrize("launcher", ["mpirun"])
def test_kill_9_then_resume_matches_uninterrupted(tmp_path: Path, launcher: str) -> None:
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    straight.mkdir()
    broken.mkdir()
    done = launch(launcher, 2, worker(straight, straight / "ckpt"))
    assert done.returncode == 0, done.stderr[-3000:]

    launcher_args = launcher_argv(launcher, 2)
    code, output, seconds = kill_one_rank_after(launcher_args, broken, broken / "ckpt", "epoch-0003.npz", victim=-1)
    assert code != 0 and seconds < 60
    assert "rank" in output and "exited on signal 9" in output, output[-2000:]
    assert job_processes(broken) == []
    saved = [int(p.stem.split("-")[1]) for p in checkpoint.list_checkpoints(broken / "ckpt")]
    assert saved and max(saved) >= 3 and max(saved) < 6

    resumed = launch(launcher, 2, worker(broken, broken / "ckpt"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {broken / 'ckpt'}/epoch-{max(saved):04d}.npz" in resumed.stderr
    a = [dict(np.load(straight / f"rank-{r}.npz")) for r in range(2)]
    b = [dict(np.load(broken / f"rank-{r}.npz")) for r in range(2)]
    assert int(b[0]["epochs_run"]) == 6 - max(saved)  # only the epochs not yet checkpointed were run again
    np.testing.assert_array_equal(b[0]["final"], b[1]["final"])
    # Same data order per epoch and the full optimizer state restored: the same weights, up to float round-off.
    np.testing.assert_allclose(b[0]["final"], a[0]["final"], rtol=1e-4, atol=1e-5)
    assert abs(float(b[0]["accuracy"]) - float(a[0]["accuracy"])) <= 0.005


def test_killed_rank_under_horovodrun_gloo_ends_the_job(tmp_path: Path) -> None:
    launcher = [*launcher_argv("horovodrun", 2), "--gloo"]
    code, output, seconds = kill_one_rank_after(launcher, tmp_path, tmp_path / "ckpt", "epoch-0001.npz", victim=0)
    assert code != 0 and seconds < 60
    assert "exit with status code 137" in output and "Process name:" in output
    assert job_processes(tmp_path) == []


def test_resume_on_a_different_world_size_rescales_lr(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    first = launch("mpirun", 2, recipe_program("digits", "--epochs", "2", "--checkpoint-dir", str(ckpt)))
    assert first.returncode == 0, first.stderr[-3000:]
    more = run(recipe_program("digits", "--epochs", "3", "--checkpoint-dir", str(ckpt), "--log-dir", str(tmp_path)))
    assert more.returncode == 0, more.stderr[-3000:]
    assert "checkpoint written by 2 ranks, now 1: learning rate rescaled 0.002 -> 0.001" in more.stderr
    assert [p.name for p in checkpoint.list_checkpoints(ckpt)] == [f"epoch-000{i}.npz" for i in (1, 2, 3)]


def test_stalled_rank_shuts_the_job_down_after_the_stall_timeout(tmp_path: Path) -> None:
    env = {
        "SYNC_WORKER_STALL_RANK": "1",  # rank 1 stays alive but never submits its gradients
        "HOROVOD_STALL_CHECK_TIME_SECONDS": "2",
        "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": "5",
    }
    started = time.monotonic()
    done = launch("mpirun", 2, [PYTHON, str(WORKERS / "sync_worker.py"), str(tmp_path), "--epochs", "2"], env)
    assert done.returncode != 0 and time.monotonic() - started < 120
    assert "Missing ranks:\n1" in done.stderr and "is stalled for longer than 5 seconds" in done.stderr
    assert job_processes(tmp_path) == []


HVDTRAIN = str(Path(sys.executable).with_name("hvdtrain"))


def signal_during_training(ckpt: Path, launch_args: list[str], signum: int, target: str) -> tuple[int, str]:
    """``hvdtrain run digits`` for 200 epochs; once the first checkpoint exists, send ``signum`` to hvdtrain's pid
    alone (``target`` "hvdtrain") or to mpirun's (``target`` "mpirun"). Returns (exit code, stderr)."""
    argv = [HVDTRAIN, "run", "digits", "-np", "2", "--epochs", "200", "--checkpoint-dir", str(ckpt), *launch_args]
    job = subprocess.Popen(
        argv, env={**os.environ, **ROOT_ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 240
        while not (ckpt / "epoch-0001.npz").exists():
            assert job.poll() is None and time.monotonic() < deadline, "job ended before its first checkpoint"
            time.sleep(0.05)
        assert len(job_processes(ckpt)) >= 3  # the launcher and both ranks
        victim = psutil.Process(job.pid)
        if target == "mpirun":
            (victim,) = [p for p in victim.children(recursive=True) if p.name() == "mpirun"]
        victim.send_signal(signum)
        _, stderr = job.communicate(timeout=120)
        return job.returncode, stderr
    finally:
        if job.poll() is None:
            job.kill()
        for process in job_processes(ckpt):
            process.kill()


@pytest.mark.parametrize(
    ("signum", "launch_args", "code"),
    [(signal.SIGTERM, [], 143), (signal.SIGINT, ["--gloo"], 130)],
    ids=["sigterm-mpi", "sigint-gloo"],
)
def test_signal_to_hvdtrain_alone_stops_the_whole_job(
    tmp_path: Path, signum: int, launch_args: list[str], code: int
) -> None:
    ckpt = tmp_path / "ckpt"
    returncode, stderr = signal_during_training(ckpt, launch_args, signum, "hvdtrain")
    assert job_processes(ckpt) == []  # before the fix: mpirun (re-parented to pid 1) and both ranks trained on
    assert returncode == code, stderr[-3000:]
    name = signal.Signals(signum).name
    assert error_lines(stderr)[-1].startswith(f"hvdtrain: stopped by {name}: ended the job's "), stderr[-3000:]
    for path in checkpoint.list_checkpoints(ckpt):  # never half-written
        assert checkpoint.load(path).epoch >= 1


def test_mpirun_killed_stops_its_ranks_and_says_so(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    returncode, stderr = signal_during_training(ckpt, ["--launcher", "mpirun"], signal.SIGKILL, "mpirun")
    assert job_processes(ckpt) == []
    assert returncode == 137, stderr[-3000:]
    last = error_lines(stderr)[-1]
    assert last == "hvdtrain: error: mpirun was killed by SIGKILL; ended the 2 process(es) it left running", last
    for path in checkpoint.list_checkpoints(ckpt):
        assert checkpoint.load(path).epoch >= 1


@pytest.mark.parametrize(
    "launch_args", [[], ["--launcher", "mpirun"], ["--gloo"]], ids=["horovodrun", "mpirun", "gloo"]
)
def test_error_in_the_ranks_is_one_line_without_the_launchers_report(tmp_path: Path, launch_args: list[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = [HVDTRAIN, "run", "digits", "-np", "2", "--checkpoint-dir", str(blocker / "ckpt"), *launch_args]
    done = run(argv)
    assert done.returncode == 2, done.stderr[-3000:]  # --gloo: horovodrun itself exits 1
    # Before: the rank's line, then Open MPI's two framed banners (10 lines) or horovodrun's traceback (12 lines).
    said = [line for line in error_lines(done.stderr) if not line.startswith("[rank ") and "WARNING" not in line]
    assert len(said) == 1 and said[0].endswith("hvdtrain: error: cannot write checkpoints to "
                                               f"{blocker / 'ckpt'}: Not a directory"), said  # fmt: skip


def test_killed_rank_under_gloo_is_one_line_and_its_exit_status(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    job = subprocess.Popen(
        [HVDTRAIN, "run", "digits", "-np", "2", "--gloo", "--epochs", "200", "--checkpoint-dir", str(ckpt)],
        env={**os.environ, **ROOT_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not (ckpt / "epoch-0001.npz").exists():
            assert job.poll() is None and time.monotonic() < deadline, "job ended before its first checkpoint"
            time.sleep(0.05)
        (victim,) = [p for p in job_processes(ckpt) if p.environ().get("HOROVOD_RANK") == "1"]
        victim.kill()
        _, stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 137, stderr[-3000:]  # before: exit 1
    assert "Traceback" not in stderr  # before: horovodrun's 12-line traceback
    assert error_lines(stderr)[-1] == "hvdtrain: error: rank 1 was killed by SIGKILL; horovodrun ended the job"
    assert job_processes(ckpt) == []
