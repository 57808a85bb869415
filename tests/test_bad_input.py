"""Bad input through the ``hvdtrain`` command: one clear line, exit code 2, no traceback, nothing overwritten."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import error_lines, run

from hvdtrain import checkpoint
from hvdtrain.doctor import controller_problem

HVDTRAIN = str(Path(sys.executable).with_name("hvdtrain"))
OFFLINE = {"HVDTRAIN_MNIST_URL": "http://127.0.0.1:9/mnist.npz"}  # nothing listens on the discard port


def fingerprint(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a hash of its bytes: what must be the same after a refused run."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def saved_checkpoint(directory: Path, recipe: str) -> Path:
    state = checkpoint.Checkpoint(1, recipe, 2, {}, [np.zeros((64, 128), np.float32)], [np.array(5)])
    return checkpoint.save(directory, state, keep=3)


# Each case: (id, files to create in tmp_path -> argv tail, expected fragment of the error line)
Case = tuple[str, Callable[[Path], list[str]], str]
CASES: list[Case] = [
    ("unknown recipe", lambda d: ["run", "nosuch"], "nosuch"),
    ("unknown option", lambda d: ["run", "digits", "--bogus"], "No such option"),
    ("np zero", lambda d: ["run", "digits", "-np", "0", "--dry-run"], "-np"),
    ("np negative", lambda d: ["run", "digits", "-np", "-2", "--dry-run"], "-np"),
    ("np above slots", lambda d: ["run", "digits", "-np", "5", "-H", "localhost:2", "--dry-run"], "more than the 2"),
    (
        "hostfile bad slots",
        lambda d: ["run", "digits", "--hostfile", str(write(d / "h", "a slots=2\nb slots=x\n")), "--dry-run"],
        "h:2:",
    ),
    (
        "hostfile zero slots",
        lambda d: ["run", "digits", "--hostfile", str(write(d / "h", "# c\n\na slots=0\n")), "--dry-run"],
        "h:3:",
    ),
    (
        "hostfile unknown key",
        lambda d: ["run", "digits", "--hostfile", str(write(d / "h", "a slots=2 gpus=4\n")), "--dry-run"],
        "h:1:",
    ),
    ("host with ;", lambda d: ["run", "digits", "-H", "a;rm -rf /:2", "--dry-run"], "-H"),
    ("host with $()", lambda d: ["run", "digits", "-H", "$(reboot):1", "--dry-run"], "-H"),
    ("host starting with -", lambda d: ["run", "digits", "-H", "-oProxyCommand=x:1", "--dry-run"], "-H"),
    ("batch size 0", lambda d: ["run", "digits", "--batch-size", "0", "--dry-run"], "--batch-size"),
    ("lr 0", lambda d: ["run", "digits", "--lr", "0", "--dry-run"], "--lr"),
    ("lr negative", lambda d: ["run", "digits", "--lr", "-0.1", "--dry-run"], "--lr"),
    (
        "warmup longer than training",
        lambda d: ["run", "digits", "--epochs", "2", "--warmup-epochs", "3", "--dry-run"],
        "--warmup-epochs",
    ),
    (
        "preset unknown key",
        lambda d: ["run", "digits", "--config", str(write(d / "p.toml", "[train]\nepoch = 3\n")), "--dry-run"],
        "epoch",
    ),
    (
        "preset wrong type",
        lambda d: ["run", "digits", "--config", str(write(d / "p.toml", '[train]\nepochs = "ten"\n')), "--dry-run"],
        "epochs",
    ),
    (
        "preset for another recipe",
        lambda d: ["run", "digits", "--config", str(write(d / "p.toml", 'recipe = "mnist"\n')), "--dry-run"],
        "mnist",
    ),
    (
        "preset not TOML",
        lambda d: ["run", "digits", "--config", str(write(d / "p.toml", "[train\n")), "--dry-run"],
        "p.toml",
    ),
    ("elastic with mpirun", lambda d: ["run", "digits", "--elastic", "--launcher", "mpirun"], "--elastic"),
    (
        "discovery script not executable",
        lambda d: ["run", "digits", "--elastic", "--host-discovery-script", str(write(d / "s.sh", "echo a:1"))],
        "not an executable file",
    ),
    (
        "missing data directory, offline",
        lambda d: ["run", "mnist", "--launcher", "none", "--data-dir", str(d / "absent")],
        "cannot download",
    ),
    (
        "corrupt data file",
        lambda d: ["run", "mnist", "--launcher", "none", "--data-dir", str(write(d / "mnist.npz", "junk").parent)],
        "cannot read",
    ),
    (
        "data directory is a file",
        lambda d: ["run", "mnist", "--launcher", "none", "--data-dir", str(write(d / "f", "x"))],
        "is not a directory",
    ),
    (
        "checkpoint directory not writable",
        lambda d: ["run", "digits", "--launcher", "none", "--checkpoint-dir", str(write(d / "f", "x") / "ckpt")],
        "cannot write checkpoints",
    ),
    (
        "checkpoint from another recipe",
        lambda d: ["run", "digits", "--launcher", "none", "--checkpoint-dir", str(saved_checkpoint(d, "mnist").parent)],
        "written by recipe 'mnist'",
    ),
    (
        "resume required, none there",
        lambda d: ["run", "digits", "--launcher", "none", "--resume", "require", "--checkpoint-dir", str(d / "c")],
        "no readable checkpoint",
    ),
    (
        "resume never over checkpoints",
        lambda d: [
            "run",
            "digits",
            "--launcher",
            "none",
            "--resume",
            "never",
            "--checkpoint-dir",
            str(saved_checkpoint(d, "digits").parent),
        ],
        "already holds checkpoints",
    ),  # fmt: skip
    (
        "digits with a data directory",
        lambda d: ["run", "digits", "--launcher", "none", "--data-dir", str(d)],
        "the digits recipe uses scikit-learn's bundled data; --data-dir",
    ),
    (
        "checkpoint directory is a file",
        lambda d: ["run", "digits", "--launcher", "none", "--checkpoint-dir", str(write(d / "f", "x"))],
        "/f is not a directory (it is a file)",  # before: only "File exists"
    ),
    (
        "log directory is a file",
        lambda d: ["run", "digits", "--launcher", "none", "--epochs", "1", "--log-dir", str(write(d / "f", "x"))],
        "--log-dir ",  # before: a FileExistsError traceback after the model was built, exit 1
    ),
    (
        "timeline under a file",
        lambda d: ["run", "digits", "--launcher", "none", "--timeline", str(write(d / "f", "x") / "t.json")],
        "/t.json: cannot create its directory: ",
    ),
    *[
        (
            f"{flag} not UTF-8",
            lambda d, flag=flag, recipe=recipe: [
                "run",
                recipe,
                "--launcher",
                "none",
                "--epochs",
                "2",
                flag,
                str(d / "caf\udce9"),
            ],
            f"{flag} must be a UTF-8 path, got b'",
        )
        for flag, recipe in (("--log-dir", "digits"), ("--checkpoint-dir", "digits"), ("--data-dir", "mnist"))
    ],
]


@pytest.mark.parametrize(("make", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_destroys_nothing(
    tmp_path: Path, make: Callable[[Path], list[str]], fragment: str
) -> None:
    argv = make(tmp_path)
    before = fingerprint(tmp_path)
    done = run([HVDTRAIN, *argv], env=OFFLINE)
    errors = [line for line in error_lines(done.stderr) if not line.startswith("[rank ")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(errors) == 1 and errors[0].startswith("hvdtrain: error: "), done.stderr[-2000:]
    assert fragment in errors[0]
    assert "Traceback" not in done.stderr and "test accuracy" not in done.stdout
    assert fingerprint(tmp_path) == before


def test_there_are_at_least_twenty_bad_inputs() -> None:
    assert len(CASES) >= 20


def test_both_controllers_are_built_here() -> None:
    assert controller_problem("mpi") is None and controller_problem("gloo") is None


@pytest.mark.parametrize("flag", ["--timeline", "--autotune-log"])
def test_timeline_and_autotune_log_directories_are_created(tmp_path: Path, flag: str) -> None:
    target = tmp_path / "new" / "dir" / "out.json"
    extra = ["--autotune"] if flag == "--autotune-log" else []
    done = run([HVDTRAIN, "run", "digits", "--launcher", "none", "--epochs", "1", *extra, flag, str(target)])
    assert done.returncode == 0, done.stderr[-2000:]
    assert target.is_file()  # before: "Error opening the Horovod Timeline file", no file, exit 0
