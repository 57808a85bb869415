"""Streamed TFRecord shards: each record once per epoch over the ranks, fewer files than ranks, resumes, manifests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from hvdtrain.data import DataError
from hvdtrain.records import MANIFEST, Manifest, RawData, find_prepared, prepare
from hvdtrain.sources import Data, eval_dataset, train_dataset

RECORDS = 48


def prepared(tmp_path: Path, files: int, records: int = RECORDS) -> Manifest:
    """Shards whose record i holds x = [i, i] (float) and y = i, in ``files`` files per split."""
    source = tmp_path / "raw.bin"
    source.write_bytes(b"raw")
    ids = np.arange(records)
    chunks = [
        (np.stack([ids, ids], axis=1)[s : s + 10].astype(np.float32), ids[s : s + 10]) for s in range(0, records, 10)
    ]
    raw = RawData(source, {"train": lambda: iter(chunks), "test": lambda: iter(chunks)})
    manifest, written = prepare("toy", raw, tmp_path / "shards", files)
    assert written
    return manifest


def seen(data: Data, rank: int, size: int, epochs: int, first_epoch: int = 0, batch: int = 4) -> list[np.ndarray]:
    """The labels rank ``rank`` trains on, one array per epoch (as train() would build its input)."""
    tf.keras.utils.set_random_seed(3 + rank)  # what train() does: seed + rank
    steps = data.train.steps(batch, size)
    labels = [y.numpy() for _, y in train_dataset(data, batch, epochs, 3, rank, size, first_epoch)]
    flat = np.concatenate(labels)
    assert len(flat) == steps * batch * (epochs - first_epoch)
    return np.split(flat, epochs - first_epoch)


def data_of(manifest: Manifest, buffer: int = 16) -> Data:
    return Data(manifest.source("train", buffer), manifest.source("test"))


@pytest.mark.parametrize(("files", "size"), [(4, 2), (6, 3), (2, 4)])
def test_every_record_once_per_epoch_over_the_ranks(tmp_path: Path, files: int, size: int) -> None:
    """48 records divide evenly among 1-4 ranks in batches of 4; with files < ranks the records are sharded instead."""
    data = data_of(prepared(tmp_path, files))
    assert data.train.by_file(size) == (files >= size)  # type: ignore[attr-defined]
    per_rank = [seen(data, rank, size, epochs=3) for rank in range(size)]
    for epoch in range(3):
        together = np.concatenate([epochs[epoch] for epochs in per_rank])
        assert sorted(together.tolist()) == list(range(RECORDS)), f"epoch {epoch}"
    assert not np.array_equal(per_rank[0][0], per_rank[0][1]), "each epoch should have its own order"


def test_uneven_records_keep_every_rank_on_the_same_step_count(tmp_path: Path) -> None:
    data = data_of(prepared(tmp_path, files=3, records=47))  # files of 16, 16, 15 records: 2 to rank 0
    steps = data.train.steps(4, 2)
    assert steps == 8  # rank 0 has 31 records: 8 batches of 4 let it read each once
    counts = [len(np.concatenate(seen(data, rank, 2, epochs=1))) for rank in range(2)]
    assert counts == [steps * 4, steps * 4]
    rank0 = seen(data, 0, 2, epochs=1)[0]
    assert set(range(47)) - set(rank0) == set(seen(data, 1, 2, epochs=1)[0]), "rank 0 reads all of its files"


@pytest.mark.parametrize("files", [4, 1])
def test_a_resumed_run_reads_what_the_uninterrupted_run_read(tmp_path: Path, files: int) -> None:
    data = data_of(prepared(tmp_path, files))
    for rank in range(2):
        whole = seen(data, rank, 2, epochs=4)
        resumed = seen(data, rank, 2, epochs=4, first_epoch=2)
        np.testing.assert_array_equal(np.concatenate(whole[2:]), np.concatenate(resumed))


def test_evaluation_shards_hold_each_test_record_once(tmp_path: Path) -> None:
    data = data_of(prepared(tmp_path, files=3))
    for size in (1, 2, 3, 5):
        labels = [np.concatenate([y.numpy() for _, y in eval_dataset(data, 5, r, size)]) for r in range(size)]
        assert sorted(np.concatenate(labels).tolist()) == list(range(RECORDS))
        assert [len(a) for a in labels] == [data.test.shard_size(r, size) for r in range(size)]


def test_records_keep_their_values_and_the_manifest_its_counts(tmp_path: Path) -> None:
    manifest = prepared(tmp_path, files=5)
    again = Manifest.read(manifest.directory)
    assert again.splits["train"].counts == (10, 10, 10, 9, 9) and again.splits["train"].records == RECORDS
    x, y = next(iter(manifest.source("test").shard(0, 1).batch(RECORDS)))
    np.testing.assert_array_equal(x.numpy(), np.stack([y.numpy(), y.numpy()], axis=1).astype(np.float32))
    assert x.dtype == tf.float32 and y.dtype == tf.int64


def test_prepare_runs_once_and_refuses_another_source(tmp_path: Path) -> None:
    manifest = prepared(tmp_path, files=2)
    raw = RawData(tmp_path / "raw.bin", {"train": lambda: iter([])})
    assert prepare("toy", raw, manifest.directory, 2) == (Manifest.read(manifest.directory), False)
    other = tmp_path / "other.bin"
    other.write_bytes(b"something else")
    with pytest.raises(DataError, match="prepared from another source.*--force"):
        prepare("toy", RawData(other, {}), manifest.directory, 2)
    assert Manifest.read(manifest.directory).source_sha256 == manifest.source_sha256  # nothing destroyed


def test_unusable_manifests_are_one_line(tmp_path: Path) -> None:
    manifest = prepared(tmp_path, files=2)
    with pytest.raises(DataError, match="prepared for recipe 'toy', not 'cifar10'"):
        find_prepared(manifest.directory, "cifar10")
    assert find_prepared(tmp_path, "toy") is None  # neither tmp_path nor tmp_path/tfrecords holds one
    (manifest.directory / manifest.splits["train"].files[1]).unlink()
    with pytest.raises(DataError, match="split train lacks 1 file"):
        Manifest.read(manifest.directory)
    (manifest.directory / MANIFEST).write_text(json.dumps({"format": 1, "recipe": "toy"}))
    with pytest.raises(DataError, match="is not a manifest hvdtrain wrote"):
        Manifest.read(manifest.directory)
