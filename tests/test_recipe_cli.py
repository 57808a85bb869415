"""``python -m hvdtrain.recipes.<name>``: options reach the config; bad input is one line and exit 2."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import error_lines, recipe_program, run

from hvdtrain.backends import installed_keras_major
from hvdtrain.config import TrainConfig
from hvdtrain.options import recipe_command, run_cli

FAKE = SimpleNamespace(name="fake", description="A fake recipe.", defaults=TrainConfig(epochs=7, lr=0.5))


def parse(argv: list[str]) -> TrainConfig | int:
    seen: list[TrainConfig] = []
    code = run_cli(recipe_command(FAKE, lambda c: seen.append(c) or 0), argv, prog_name="fake")
    return seen[0] if seen else code


def test_options_layer_over_recipe_defaults() -> None:
    config = parse(["--batch-size", "16", "--fp16-allreduce", "--data-dir", "/data", "--lr-scaling", "sqrt"])
    assert isinstance(config, TrainConfig)
    assert (config.epochs, config.lr, config.batch_size) == (7, 0.5, 16)
    assert config.fp16_allreduce is True and config.data_dir == Path("/data") and config.lr_scaling == "sqrt"
    assert parse(["--no-fp16-allreduce"]).fp16_allreduce is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--lr", "0"], "--lr must be > 0.0"),
        (["--epochs", "ten"], "'ten' is not a valid integer"),
        (["--lr-scaling", "cube"], "'cube' is not one of"),
        (["--bogus"], "No such option"),
        (["--epochs", "2", "--warmup-epochs", "5"], "is longer than --epochs"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert parse(argv) == 2
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and err.startswith("hvdtrain: error: ") and message in err


def test_error_is_printed_by_rank0_only(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "1")
    assert parse(["--batch-size", "0"]) == 2
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--batch-size", "-3"], {}, "--batch-size must be >= 1"),
        pytest.param(
            ["--reduce-op", "adasum"],
            {},
            "adasum is not supported",
            marks=pytest.mark.skipif(installed_keras_major() != 2, reason="Keras 3 supports Adasum"),
        ),
        (["--epochs", "1"], {"OMPI_COMM_WORLD_SIZE": "3"}, "Horovod sees 1 rank(s) but mpirun started 3"),
    ],
)
def test_real_recipe_process_fails_cleanly(argv: list[str], env: dict[str, str], message: str) -> None:
    done = run(recipe_program("digits", *argv), env=env)
    assert done.returncode == 2
    errors = [line for line in error_lines(done.stderr) if not line.startswith("[rank ")]
    assert errors == [f"hvdtrain: error: {errors[0].removeprefix('hvdtrain: error: ')}"] and message in errors[0]
    assert "Traceback" not in done.stderr


def test_corrupt_mnist_file_is_one_line_and_kept(tmp_path: Path) -> None:
    corrupt = tmp_path / "mnist.npz"
    corrupt.write_bytes(b"not an npz file")
    done = run(recipe_program("mnist", "--data-dir", str(tmp_path)))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert [line for line in error_lines(done.stderr) if "error" in line][0].startswith("hvdtrain: error: cannot read")
    assert corrupt.read_bytes() == b"not an npz file"


def test_a_loss_that_becomes_nan_stops_the_run_at_once(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    done = run(recipe_program("digits", "--lr", "1e30", "--epochs", "50", "--checkpoint-dir", str(ckpt)))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    errors = [line for line in error_lines(done.stderr) if line.startswith("hvdtrain: error:")]
    assert len(errors) == 1 and "the loss became nan at epoch 1, step " in errors[0], done.stderr[-2000:]
    assert "test accuracy" not in done.stdout and "Epoch 2/50" not in done.stdout
    assert list(ckpt.iterdir()) == []  # stopped inside epoch 1: nothing written, nothing half-written


def test_a_peers_failure_is_told_apart_from_other_errors() -> None:
    import tensorflow as tf

    from hvdtrain.recipe import peer_failed

    gloo_peer_killed = "Graph execution error:\n\nDetected at node DistributedAdam_Allreduce/HorovodAllreduce_grads_4_0"
    assert peer_failed(tf.errors.UnknownError(None, None, gloo_peer_killed))
    assert peer_failed(RuntimeError("Horovod has been shut down. This was caused by an exception on one of the ranks"))
    assert not peer_failed(tf.errors.InvalidArgumentError(None, None, "Detected at node sequential/dense/MatMul"))
    assert not peer_failed(ValueError("Horovod"))  # not an op error
