"""The cifar10 recipe: its loader on generated files in the real format, its options, and training at np=2."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cifar_data import FOLDER, write_tarball
from conftest import PYTHON, WORKERS, error_lines, launch, recipe_program, run

from hvdtrain.cli import cli
from hvdtrain.data import DataError
from hvdtrain.options import run_cli
from hvdtrain.recipes.cifar10 import ARCHIVE, read_raw

HVDTRAIN = str(Path(PYTHON).with_name("hvdtrain"))
Invoke = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[np.ndarray, ...]]:
    """A data dir holding a generated cifar-10-python.tar.gz: 5 x 80 training and 120 test images."""
    directory = tmp_path_factory.mktemp("cifar")
    arrays = write_tarball(directory / ARCHIVE, per_batch=80, test=120)
    return directory, arrays


def test_reads_the_tarball_and_the_extracted_folder(
    cifar_dir: tuple[Path, tuple[np.ndarray, ...]], tmp_path: Path
) -> None:
    directory, (x_train, y_train, x_test, y_test) = cifar_dir
    splits = read_raw(directory / ARCHIVE)
    for got, want in zip((splits.x_train, splits.y_train, splits.x_test, splits.y_test), cifar_dir[1], strict=True):
        np.testing.assert_array_equal(got, want)
    assert splits.x_train.shape == (400, 32, 32, 3) and splits.x_train.dtype == np.uint8
    with tarfile.open(directory / ARCHIVE) as tar:
        tar.extractall(tmp_path, filter="data")
    np.testing.assert_array_equal(read_raw(tmp_path / FOLDER).x_test, x_test)


def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


class _Runs:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("a pickle that runs code",))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p, good: p.write_bytes(good[: len(good) // 2]), "cannot read"),  # a partial download
        (lambda p, good: p.write_bytes(b"<html>not found</html>"), "cannot read"),
        (lambda p, good: _tarball(p, {"data_batch_1": b"x"}), "lacks data_batch_2"),
        (
            lambda p, good: _tarball(
                p, {n: pickle.dumps(_Runs()) for n in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]}
            ),
            "refusing to load builtins.print",
        ),
        (
            lambda p, good: _tarball(
                p,
                {
                    n: pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
                    for n in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
                },
            ),
            "expected N x 3072 pixels",
        ),
    ],
    ids=["truncated", "html", "missing-batches", "code", "wrong-shape"],
)
def test_a_corrupt_or_foreign_file_is_one_clear_error(
    cifar_dir: tuple[Path, tuple[np.ndarray, ...]], tmp_path: Path, make: object, message: str
) -> None:
    bad = tmp_path / ARCHIVE
    make(bad, (cifar_dir[0] / ARCHIVE).read_bytes())  # type: ignore[operator]
    with pytest.raises(DataError, match=message) as caught:
        read_raw(bad)
    assert "\n" not in str(caught.value)


def test_a_corrupt_tarball_stops_the_recipe_with_one_line_and_is_kept(tmp_path: Path) -> None:
    bad = tmp_path / ARCHIVE
    bad.write_bytes(b"\x1f\x8b not really gzip")
    done = run(recipe_program("cifar10", "--data-dir", str(tmp_path), "--depth", "8", "--epochs", "2"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    errors = [line for line in error_lines(done.stderr) if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(f"hvdtrain: error: cannot read {bad}"), done.stderr[-2000:]
    assert bad.read_bytes() == b"\x1f\x8b not really gzip"


@pytest.fixture
def invoke(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """``hvdtrain ARGS`` in this process: (exit code, stdout, stderr)."""

    def call(*args: str) -> tuple[int, str, str]:
        code = run_cli(cli, args, prog_name="hvdtrain")
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return call


def test_recipe_options_reach_help_show_presets_and_the_command(tmp_path: Path, invoke: Invoke) -> None:
    code, out, _ = invoke("run", "cifar10", "-h")
    assert code == 0 and "cifar10 options" in out and "--depth" in out and "[default: 20]" in out
    assert out.index("--depth") < out.index("Training options")
    preset = tmp_path / "p.toml"
    preset.write_text('recipe = "cifar10"\n[train]\ndepth = 56\nweight-decay = 0.0005\nepochs = 3\n')
    code, out, _ = invoke("show", "cifar10", "--config", str(preset), "--no-augment")
    assert code == 0, out
    lines = {line.split("#")[0].strip(): line.split("#")[-1].strip() for line in out.splitlines() if "=" in line}
    assert lines["depth = 56"] == str(preset) and lines["weight_decay = 0.0005"] == str(preset)
    assert lines["augment = false"] == "command line" and lines['lr_schedule = "step"'] == "recipe default"
    code, out, _ = invoke("run", "cifar10", "--config", str(preset), "--depth", "32", "--dry-run", "-np", "2")
    assert code == 0 and "--depth 32 --weight-decay 0.0005" in out and "--epochs 3" in out


@pytest.mark.parametrize(
    ("args", "preset", "message"),
    [
        (["--depth", "21"], None, "--depth must be 6n+2"),
        (["--depth", "2"], None, "--depth must be >= 8"),
        ([], 'recipe = "cifar10"\n[train]\ndepth = 21\n', "--depth must be 6n+2"),
        ([], '[train]\ndepth = "deep"\n', "[train] depth: expected an integer"),
    ],
)
def test_bad_recipe_options_are_one_line(
    tmp_path: Path, invoke: Invoke, args: list[str], preset: str | None, message: str
) -> None:
    if preset is not None:
        (tmp_path / "p.toml").write_text(preset)
        args = [*args, "--config", str(tmp_path / "p.toml")]
    code, _, err = invoke("run", "cifar10", "--dry-run", *args)
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_other_recipes_do_not_take_cifar10_options(tmp_path: Path, invoke: Invoke) -> None:
    code, _, err = invoke("run", "digits", "--depth", "20", "--dry-run")
    assert code == 2 and "No such option '--depth'" in err
    (tmp_path / "p.toml").write_text("[train]\ndepth = 20\n")
    code, _, err = invoke("run", "digits", "--config", str(tmp_path / "p.toml"), "--dry-run")
    assert code == 2 and "unknown key 'depth'" in err


def test_data_prepare_writes_once(cifar_dir: tuple[Path, tuple[np.ndarray, ...]], tmp_path: Path) -> None:
    shutil.copy(cifar_dir[0] / ARCHIVE, tmp_path / ARCHIVE)
    first = run([HVDTRAIN, "data", "prepare", "cifar10", "--data-dir", str(tmp_path), "--shards", "3"])
    assert first.returncode == 0, first.stderr[-2000:]
    assert "train 400 records in 3 files, test 120 records in 3 files" in first.stderr
    again = run([HVDTRAIN, "data", "prepare", "cifar10", "--data-dir", str(tmp_path), "--shards", "3"])
    assert again.returncode == 0 and "already prepared" in again.stderr
    digits = run([HVDTRAIN, "data", "prepare", "digits", "--data-dir", str(tmp_path)])
    assert digits.returncode == 2
    assert [line for line in error_lines(digits.stderr)] == [
        "hvdtrain: error: recipe 'digits' reads its data into memory; it has nothing to prepare"
    ]


def worker_run(out: Path, np_: int, *options: str) -> list[dict[str, np.ndarray]]:
    out.mkdir()
    program = [PYTHON, str(WORKERS / "recipe_worker.py"), str(out), "cifar10", *options]
    done = launch("mpirun", np_, program)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = []
    for r in range(np_):
        metrics = json.loads((out / f"rank-{r}.json").read_text())
        ranks.append(
            {"final": np.load(out / f"rank-{r}.npz")["weights"]} | {f"metric_{k}": v for k, v in metrics.items()}
        )
    return ranks


@pytest.mark.multiproc
def test_cifar10_learns_at_np2_and_evaluates_the_same_everywhere(
    cifar_dir: tuple[Path, tuple[np.ndarray, ...]], tmp_path: Path
) -> None:
    """ResNet-8, 3 epochs at np=2 on images whose class is a coloured square: far above chance (0.1); the same
    weights on both ranks; the same test metrics on both ranks, and at np=1 from the last checkpoint (streamed from
    prepared shards this time, so both input paths evaluate the same)."""
    data_dir, ckpt = cifar_dir[0], tmp_path / "ckpt"
    options = ["--data-dir", str(data_dir), "--depth", "8", "--epochs", "3", "--batch-size", "25", "--lr", "0.05"]
    ranks = worker_run(tmp_path / "np2", 2, *options, "--checkpoint-dir", str(ckpt))
    np.testing.assert_array_equal(ranks[0]["final"], ranks[1]["final"])
    assert float(ranks[0]["metric_accuracy"]) >= 0.6, ranks[0]
    for name in ("metric_accuracy", "metric_loss"):
        assert float(ranks[0][name]) == float(ranks[1][name])

    shards = tmp_path / "shards"
    done = run(
        [HVDTRAIN, "data", "prepare", "cifar10", "--data-dir", str(data_dir), "-o", str(shards), "--shards", "2"]
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (single,) = worker_run(tmp_path / "np1", 1, *options[2:], "--data-dir", str(shards), "--checkpoint-dir", str(ckpt))
    np.testing.assert_array_equal(single["final"], ranks[0]["final"])  # resumed after the last epoch: no training
    assert float(single["metric_accuracy"]) == float(ranks[0]["metric_accuracy"])
    assert float(single["metric_loss"]) == pytest.approx(float(ranks[0]["metric_loss"]), rel=1e-5)
