from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hvdtrain import checkpoint
from hvdtrain.data import DataError


def state(epoch: int) -> checkpoint.Checkpoint:
    rng = np.random.default_rng(epoch)
    return checkpoint.Checkpoint(
        epoch=epoch,
        recipe="digits",
        world_size=2,
        config={"lr": 0.001},
        weights=[rng.normal(size=(3, 2)), rng.normal(size=2)],
        optimizer=[np.array(epoch * 10), rng.normal(size=(3, 2))],
    )


def test_round_trip_and_keep_the_newest(tmp_path: Path) -> None:
    for epoch in range(1, 6):
        checkpoint.save(tmp_path, state(epoch), keep=3)
    assert [p.name for p in checkpoint.list_checkpoints(tmp_path)] == [
        "epoch-0003.npz",
        "epoch-0004.npz",
        "epoch-0005.npz",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in checkpoint.list_checkpoints(tmp_path)]
    loaded = checkpoint.load_latest(tmp_path)
    assert loaded is not None and loaded.epoch == 5 and loaded.recipe == "digits" and loaded.world_size == 2
    for got, want in zip(loaded.weights + loaded.optimizer, state(5).weights + state(5).optimizer, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_newest_is_skipped_with_a_warning(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint.save(tmp_path, state(1), keep=5)
    newest = checkpoint.save(tmp_path, state(2), keep=5)
    data = newest.read_bytes()
    newest.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\0" * 100, "empty": b""}[damage])
    logging.getLogger("hvdtrain").propagate = True
    with caplog.at_level(logging.WARNING, logger="hvdtrain"):
        loaded = checkpoint.load_latest(tmp_path)
    assert loaded is not None and loaded.epoch == 1
    assert "skipping checkpoint" in caplog.text and "epoch-0002.npz" in caplog.text


def test_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    bad = state(1)
    bad.config = {"not json": object()}
    with pytest.raises(TypeError):
        checkpoint.save(tmp_path, bad, keep=3)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_directory_is_a_data_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DataError, match="cannot write checkpoints"):
        checkpoint.check_writable(blocker / "ckpt")


def test_a_save_removes_the_temporary_file_an_interrupted_save_left(tmp_path: Path) -> None:
    stale = tmp_path / ".tmp-k1ll3d.npz"
    stale.write_bytes(b"PK\x03\x04 half of a checkpoint")  # what SIGTERM/SIGKILL mid-save leaves behind
    checkpoint.save(tmp_path, state(1), keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0001.npz"]
    assert checkpoint.load_latest(tmp_path).epoch == 1


SAVE_FOREVER = """
import sys
from pathlib import Path
import numpy as np
from hvdtrain import checkpoint
weights = [np.zeros((4, 1 << 20), np.float32)]  # 16 MiB: most of the loop's time is inside save
ckpt = checkpoint.Checkpoint(1, "digits", 1, {}, weights, [])
print("saving", flush=True)
while True:
    checkpoint.save(Path(sys.argv[1]), ckpt, keep=1)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_during_a_save_leaves_no_temporary_file(tmp_path: Path, signum: int) -> None:
    """A scheduler's cancel (SIGTERM) lands mid-save: the process still ends by that signal, the temporary file goes."""
    saver = subprocess.Popen([sys.executable, "-c", SAVE_FOREVER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert saver.stdout is not None and saver.stdout.readline() == "saving\n"
    time.sleep(1.0)
    saver.send_signal(signum)
    assert saver.wait(timeout=30) == -signum
    names = [p.name for p in tmp_path.iterdir()]
    assert names == ["epoch-0001.npz"], names
    assert checkpoint.load(tmp_path / "epoch-0001.npz").epoch == 1
