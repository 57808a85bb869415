import logging
from pathlib import Path

import numpy as np
import pytest

from hvdtrain.config import ConfigError, TrainConfig
from hvdtrain.data import DataError, read_npz_splits, shard, shard_bounds, steps_per_epoch
from hvdtrain.log import get_logger


@pytest.mark.parametrize("n", [2, 7, 10, 1437, 60000])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 8])
def test_shards_partition_the_data(n: int, size: int) -> None:
    if n < size:
        return
    bounds = [shard_bounds(n, rank, size) for rank in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(stop == nxt for (_, stop), (nxt, _) in zip(bounds, bounds[1:], strict=False))
    lengths = [stop - start for start, stop in bounds]
    assert max(lengths) - min(lengths) <= 1 and min(lengths) >= 1


def test_shard_slices_the_array() -> None:
    data = np.arange(7)
    assert [shard(data, r, 2).tolist() for r in range(2)] == [[0, 1, 2, 3], [4, 5, 6]]


@pytest.mark.parametrize(
    ("n", "batch", "size", "steps"),
    [(1437, 32, 2, 23), (1437, 32, 1, 45), (64, 32, 2, 1), (65, 32, 2, 2), (10, 32, 2, 1), (60000, 64, 4, 235)],
)
def test_every_rank_runs_ceil_n_over_global_batch_steps(n: int, batch: int, size: int, steps: int) -> None:
    assert steps_per_epoch(n, batch, size) == steps


def test_fewer_samples_than_ranks_is_an_error() -> None:
    with pytest.raises(ConfigError, match="fewer than the 4 ranks"):
        steps_per_epoch(3, 32, 4)


def test_read_npz_splits(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((4, 2)), y_train=np.arange(4), x_test=np.ones((2, 2)), y_test=np.arange(2))
    splits = read_npz_splits(path)
    assert splits.x_train.shape == (4, 2) and splits.y_test.tolist() == [0, 1]


def test_read_npz_splits_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.npz"
    np.savez(missing, x_train=np.zeros(3), y_train=np.zeros(3))
    with pytest.raises(DataError, match="lacks array.*x_test"):
        read_npz_splits(missing)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="cannot read"):
        read_npz_splits(corrupt)
    uneven = tmp_path / "uneven.npz"
    np.savez(uneven, x_train=np.zeros(3), y_train=np.zeros(2), x_test=np.zeros(1), y_test=np.zeros(1))
    with pytest.raises(DataError, match="different lengths"):
        read_npz_splits(uneven)
    with pytest.raises(DataError, match="cannot read"):
        read_npz_splits(tmp_path / "absent.npz")


@pytest.mark.parametrize(
    ("batch", "size", "warned"), [(1000, 2, True), (5000, 1, True), (718, 2, False), (32, 2, False)]
)
def test_a_global_batch_larger_than_the_data_is_warned_about(batch: int, size: int, warned: bool) -> None:

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    get_logger().addHandler(handler)
    try:
        steps_per_epoch(1437, batch, size)
    finally:
        get_logger().removeHandler(handler)
    messages = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert bool(messages) == warned, messages  # before: nothing, and digits fell from 0.97 to 0.88
    if warned:
        assert (
            "is larger than the 1437 samples" in messages[0] and f"--batch-size {1437 // size} or less" in messages[0]
        )


def test_each_epochs_order_is_made_when_the_epoch_starts() -> None:
    """A run of 10^12 epochs builds its input at once (no order materialised up front), and the batches are each
    epoch's (seed, rank, epoch) permutation, epoch after epoch, from the first epoch asked for."""
    from hvdtrain.sources import ArraySource, Data, epoch_order, train_dataset

    x = np.arange(20, dtype=np.float32)[:, None]
    data = Data(ArraySource(x, np.arange(20)), ArraySource(x, np.arange(20)))
    config = TrainConfig(epochs=10**12, batch_size=4, seed=7)
    # 2 ranks: rank 1's shard is samples 10..19, 3 steps of 4 per epoch
    batches = train_dataset(data, config.batch_size, config.epochs, config.seed, 1, 2, first_epoch=5).take(6)
    seen = np.concatenate([batch_y.numpy() for _, batch_y in batches])
    expected = 10 + np.concatenate([epoch_order(10, 12, 7, 1, epoch) for epoch in (5, 6)])
    np.testing.assert_array_equal(seen, expected)
