"""hvdtrain under a real Slurm (Debian's slurm-wlm 22.05 with munge), started for this session (tests/slurm_cluster.py).

One node, this machine: the job template ``recipes/slurm.sbatch`` (sized down from the sbatch command line),
``hvdtrain run`` inside ``salloc``, ``srun --mpi=pmix`` with a recipe module, ``hvdtrain hostfile`` and ``hvdtrain
check`` inside an allocation, and ``scancel`` in the middle of training followed by a resubmitted job that resumes.
Two nodes, two network namespaces (tests/multihost.py) each with its own slurmd: ``hvdtrain``'s mpirun command on a
2-node x 1-task job, Open MPI starting its daemon on the second node through Slurm (ssh is disabled), and
horovodrun's failure there (it needs ssh) as one line.

Skipped only when Slurm cannot run here: not root, or slurm-wlm/munge missing and not installable with apt-get.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT_ENV, WORKERS, test_accuracy
from multihost import can_make_namespaces, two_hosts
from slurm_cluster import Node, SlurmCluster, slurm_cluster, slurm_problem

from hvdtrain import checkpoint
from hvdtrain.backends import installed_keras_major

pytestmark = pytest.mark.multiproc

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent.parent  # the venv the tests run in (.venv or .venv-tf2.15)
HVDTRAIN = str(Path(sys.executable).with_name("hvdtrain"))
HOST = socket.gethostname().split(".")[0]  # slurmd's node name on this machine
JOB_TIMEOUT_S = 600
# The heavier tests check Slurm's side (srun/PMIx, Open MPI through Slurm, scancel), which does not depend on the
# TensorFlow stack (the back ends are tested on both elsewhere): they run on the default stack only, to keep CI
# within its budget. The template test (with `hvdtrain check`) and the cheap ones run on both.
ALL_STACKS = os.environ.get("HVDTRAIN_SLURM_ALL_STACKS") == "1"
default_stack_only = pytest.mark.skipif(
    installed_keras_major() != 3 and not ALL_STACKS,
    reason="heavy Slurm test: runs on the default stack (tf2.21) only; HVDTRAIN_SLURM_ALL_STACKS=1 runs it here too",
)
CKPT_NAME = re.compile(r"epoch-\d{4,}\.npz")


def job_env() -> dict[str, str]:
    """What the jobs inherit (sbatch/salloc export the caller's environment): this venv first on PATH."""
    path = os.pathsep.join([str(VENV / "bin"), os.environ.get("PATH", "")])
    return {**os.environ, **ROOT_ENV, "PATH": path, "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A one-node Slurm on this machine for the session; skipped (with the reason) only where it cannot run."""
    reason = slurm_problem()
    if reason is not None:
        pytest.skip(reason)
    with slurm_cluster(tmp_path_factory.mktemp("slurm"), [Node(HOST)], cpus=2, env=job_env()) as cluster:
        yield cluster


def job_output(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else f"(no output file {path})"


def test_sbatch_template_trains_digits(slurm: SlurmCluster, tmp_path: Path) -> None:
    """recipes/slurm.sbatch as shipped; the test only sizes the job down on the sbatch command line."""
    out = tmp_path / "job.out"
    sizing = ["--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1", f"--output={out}"]
    env = {"RECIPE": "digits", "PRESET": "recipes/digits-quick.toml", "HVDTRAIN_VENV": str(VENV)}
    job = slurm.sbatch([*sizing, "recipes/slurm.sbatch", "--epochs", "1"], cwd=REPO, env=env)
    state = slurm.wait(job, JOB_TIMEOUT_S)
    output = job_output(out)
    assert state == "COMPLETED", output[-4000:]
    assert slurm.job(job)["ExitCode"] == "0:0"
    # `hvdtrain check` names the allocation; `hvdtrain run` used it (2 ranks, no -np or hosts given).
    assert f"Scheduler      slurm job {job}: 2 slot(s) on {HOST}:2" in output, output[-4000:]
    assert "recipe digits: 2 ranks" in output
    epoch_lines = [line for line in output.splitlines() if "samples_per_sec:" in line]  # Keras's, one per epoch
    assert len(epoch_lines) == 1, "--epochs 1 did not reach the recipe"
    assert test_accuracy(output) > 0.5


@default_stack_only
def test_run_inside_salloc_with_mpirun(slurm: SlurmCluster, tmp_path: Path) -> None:
    done = slurm.run(
        ["salloc", "-n", "2", HVDTRAIN, "run", "digits", "--launcher", "mpirun", "--epochs", "1", "--log-all-ranks"],
        cwd=tmp_path,
        timeout=JOB_TIMEOUT_S,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "recipe digits: 2 ranks" in output
    assert re.search(r"^\[rank 1\] recipe digits", output, re.M), "no line from rank 1 (tagged by hvdtrain)"
    assert test_accuracy(output) > 0.5


@default_stack_only
def test_srun_pmix_runs_a_recipe_module(slurm: SlurmCluster, tmp_path: Path) -> None:
    program = [sys.executable, "-m", "hvdtrain.recipes.digits", "--epochs", "1"]
    done = slurm.run(["srun", "-n", "2", "--mpi=pmix", *program], cwd=tmp_path, timeout=JOB_TIMEOUT_S, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "recipe digits: 2 ranks" in output, output[-4000:]
    assert test_accuracy(output) > 0.5


def test_hostfile_inside_allocation(slurm: SlurmCluster, tmp_path: Path) -> None:
    done = slurm.run(["salloc", "-n", "2", HVDTRAIN, "hostfile"], cwd=tmp_path, timeout=JOB_TIMEOUT_S)
    assert done.stdout == f"{HOST} slots=2\n", done.stdout + done.stderr


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not seen after {timeout:.0f} s"
        time.sleep(0.5)


@default_stack_only
def test_scancel_stops_everything_and_a_resubmitted_job_resumes(slurm: SlurmCluster, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    script = tmp_path / "train.sbatch"  # options after the script name reach hvdtrain run, as in the template
    train = [HVDTRAIN, "run", "digits", "--checkpoint-dir", str(ckpt), "--keep-checkpoints", "5"]
    script.write_text(f'#!/bin/bash\n#SBATCH --ntasks=2\nexec {shlex.join(train)} "$@"\n')
    first_out = tmp_path / "first.out"
    # Far more epochs than the test waits for (an epoch takes well under a second on an idle machine).
    first = slurm.sbatch([f"--output={first_out}", str(script), "--epochs", "1000"], cwd=tmp_path)
    wait_for(lambda: checkpoint.list_checkpoints(ckpt), JOB_TIMEOUT_S, f"a checkpoint in {ckpt}")
    assert slurm.job(first)["JobState"] == "RUNNING"
    assert len(slurm.job_pids(first)) >= 4, "the job's processes: slurmstepd, hvdtrain, the launcher, the ranks"

    slurm.run(["scancel", str(first)])
    assert slurm.wait(first, 120) == "CANCELLED", job_output(first_out)[-4000:]
    wait_for(lambda: not slurm.job_pids(first), 60, "the end of every process of the cancelled job")
    assert "hvdtrain: stopped by SIGTERM: ended the job's" in job_output(first_out), job_output(first_out)[-4000:]

    # Only whole checkpoints: no temporary file, and every file loads.
    names = sorted(p.name for p in ckpt.iterdir())
    assert names and all(CKPT_NAME.fullmatch(n) for n in names), names
    done = [checkpoint.load(ckpt / n).epoch for n in names][-1]
    assert 1 <= done < 1000

    # The same job again, asked to train one epoch more than the newest checkpoint holds.
    second_out = tmp_path / "second.out"
    second = slurm.sbatch([f"--output={second_out}", str(script), "--epochs", str(done + 1)], cwd=tmp_path)
    state = slurm.wait(second, JOB_TIMEOUT_S)
    output = job_output(second_out)
    assert state == "COMPLETED", output[-4000:]
    assert f"resumed from {ckpt / names[-1]}: {done} of {done + 1} epochs done" in output, output[-4000:]
    assert f"Epoch {done + 1}/{done + 1}" in output and f"Epoch {done}/{done + 1}" not in output
    assert checkpoint.load(checkpoint.list_checkpoints(ckpt)[-1]).epoch == done + 1
    assert test_accuracy(output) > 0.5


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """Two slurmd on two "hosts" (network namespaces joined by a veth pair), the controller on the first."""
    reason = slurm_problem() or can_make_namespaces()
    if reason is None and not all(shutil.which(tool) for tool in ("nsenter", "unshare")):
        reason = "nsenter and unshare (util-linux) are needed to start a slurmd on each host"
    if reason is not None:
        pytest.skip(reason)
    with two_hosts("hvdtslurm") as hosts:
        nodes = [
            Node(f"node{letter}", ip, ns) for letter, ip, ns in zip("ab", hosts.ips, hosts.namespaces, strict=True)
        ]
        with slurm_cluster(tmp_path_factory.mktemp("slurm2"), nodes, cpus=2, env=job_env()) as cluster:
            yield cluster


@default_stack_only
def test_two_nodes_mpirun_starts_its_daemon_through_slurm(two_nodes: SlurmCluster, tmp_path: Path) -> None:
    """A 2-node x 1-task job: hvdtrain's mpirun command, Open MPI reaching node b through srun (ssh is disabled)."""
    allocation = ["salloc", "--nodes=2", "--ntasks-per-node=1"]
    run = [HVDTRAIN, "run", "digits", "--launcher", "mpirun", "--epochs", "2", "--dry-run"]
    line = two_nodes.run([*allocation, *run], cwd=tmp_path, timeout=JOB_TIMEOUT_S).stdout.strip()
    argv = shlex.split(line)
    assert argv[:2] == ["mpirun", "--allow-run-as-root"], line
    assert argv[argv.index("-np") + 1] == "2" and argv[argv.index("-H") + 1] == "nodea:1,nodeb:1", line
    # The same launch, with the test's worker (digits, saving each rank's weights) in place of the recipe module.
    start = argv.index("hvdtrain.recipes.digits") - 2
    assert argv[start : start + 2] == [sys.executable, "-m"], line
    out = tmp_path / "out"
    out.mkdir()
    argv[start:] = [sys.executable, str(WORKERS / "sync_worker.py"), str(out), *argv[start + 3 :]]
    script = tmp_path / "two-nodes.sbatch"
    real = [HVDTRAIN, "run", "digits", "--launcher", "mpirun", "--epochs", "1"]  # as a user would, then the worker
    script.write_text(f"#!/bin/bash\nset -e\n{shlex.join(real)}\n{shlex.join(argv)}\n")

    job_out = tmp_path / "job.out"
    no_ssh = {"OMPI_MCA_plm_rsh_agent": "/bin/false"}  # were Open MPI to try ssh, it would fail
    job = two_nodes.sbatch([*allocation[1:], f"--output={job_out}", str(script)], cwd=tmp_path, env=no_ssh)
    state = two_nodes.wait(job, JOB_TIMEOUT_S)
    output = job_output(job_out)
    assert state == "COMPLETED", output[-4000:]
    assert two_nodes.job(job)["NodeList"] == "nodea,nodeb"
    assert "recipe digits: 2 ranks" in output and test_accuracy(output) > 0.5, output[-4000:]
    # Each mpirun's daemon on node b came as a Slurm job step (mpirun ran `srun ... orted`), not over ssh.
    steps = re.findall(rf"launch task StepId={job}\.(\d+) request", two_nodes.log("slurmd-nodeb"))
    assert steps == ["0", "1"], (steps, output[-4000:])

    ranks = [np.load(out / f"rank-{rank}.npz") for rank in range(2)]
    assert [str(r["host"]) for r in ranks] == ["nodea", "nodeb"]
    assert all(int(r["size"]) == 2 for r in ranks)
    np.testing.assert_array_equal(ranks[0]["final"], ranks[1]["final"])
    assert float(ranks[0]["accuracy"]) == float(ranks[1]["accuracy"]) > 0.5


def test_two_nodes_horovodrun_without_ssh_is_one_line(two_nodes: SlurmCluster, tmp_path: Path) -> None:
    """horovodrun (the default launcher) reaches other nodes by ssh only; without ssh: one line and a hint."""
    job_out = tmp_path / "job.out"
    run = [HVDTRAIN, "run", "digits", "--epochs", "1"]
    script = tmp_path / "horovodrun.sbatch"
    script.write_text(f"#!/bin/bash\nexec {shlex.join(run)}\n")
    job = two_nodes.sbatch(["--nodes=2", "--ntasks-per-node=1", f"--output={job_out}", str(script)], cwd=tmp_path)
    assert two_nodes.wait(job, JOB_TIMEOUT_S) == "FAILED"
    output = job_output(job_out)
    assert "ssh not successful for host nodeb" in output, output[-4000:]
    assert "hvdtrain: error: horovodrun could not reach every host by ssh (see above);" in output, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
