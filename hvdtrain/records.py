"""TFRecord shards: ``hvdtrain data prepare`` writes them once, training streams them.

A prepared directory holds ``<split>-NNNNN-of-MMMMM.tfrecord`` files and ``manifest.json``: the recipe, the source it
was made from (name and SHA-256), and per split the record count of each file and each feature's dtype and shape. An
example ``(x, y)`` is stored as one ``tf.train.Example`` whose features are the raw bytes of each array (``x``, or
``x/<key>`` for a dict, and ``y``), so any recipe whose raw data reads into numpy arrays can be prepared.

:class:`RecordSource` streams one split: files divided among ranks (file ``i`` to rank ``i mod size``) when there
are at least as many files as ranks, else every rank reads all files and keeps every ``size``-th record; interleaved
reads, a shuffle buffer, parsing in ``tf.data``. Memory stays flat with the size of the data set.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from hvdtrain.data import DataError
from hvdtrain.sources import Source, epoch_rng

MANIFEST = "manifest.json"
FORMAT = 1
SPLITS = ("train", "test")
Chunk = tuple[Any, np.ndarray]  # (x: array or dict of arrays, y: array), the first axis is the example


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, or of a directory's files (relative names and contents, in sorted order)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _flat(x: Any, y: np.ndarray) -> dict[str, np.ndarray]:
    """An (x, y) chunk as named arrays: ``x`` (or ``x/<key>``) and ``y``."""
    named = {f"x/{k}": np.asarray(v) for k, v in x.items()} if isinstance(x, dict) else {"x": np.asarray(x)}
    return {**named, "y": np.asarray(y)}


def _feature_spec(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    return {name: {"dtype": a.dtype.str, "shape": list(a.shape[1:])} for name, a in arrays.items()}


@dataclass(frozen=True)
class SplitInfo:
    """One prepared split: its files (relative names) with their record counts, and the feature layout."""

    files: tuple[str, ...]
    counts: tuple[int, ...]
    features: dict[str, dict[str, Any]]

    @property
    def records(self) -> int:
        return sum(self.counts)


def write_split(out_dir: Path, split: str, chunks: Iterable[Chunk], shards: int) -> SplitInfo:
    """Write the examples of ``chunks`` round-robin into ``shards`` TFRecord files (record i to file i mod shards)."""
    names = [f"{split}-{i:05d}-of-{shards:05d}.tfrecord" for i in range(shards)]
    counts = [0] * shards
    features: dict[str, dict[str, Any]] | None = None
    writers = [tf.io.TFRecordWriter(str(out_dir / name)) for name in names]
    written = 0
    try:
        for x, y in chunks:
            arrays = _flat(x, y)
            spec = _feature_spec(arrays)
            if features is None:
                features = spec
            elif spec != features:
                raise DataError(f"split {split}: examples change layout mid-way ({features} then {spec})")
            for i in range(len(arrays["y"])):
                example = tf.train.Example(
                    features=tf.train.Features(
                        feature={
                            name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[a[i].tobytes()]))
                            for name, a in arrays.items()
                        }
                    )
                )
                writers[written % shards].write(example.SerializeToString())
                counts[written % shards] += 1
                written += 1
    finally:
        for writer in writers:
            writer.close()
    if features is None:
        raise DataError(f"split {split}: no examples to write")
    return SplitInfo(tuple(names), tuple(counts), features)


@dataclass(frozen=True)
class Manifest:
    """``manifest.json`` of a prepared directory."""

    directory: Path
    recipe: str
    source_name: str
    source_sha256: str
    splits: dict[str, SplitInfo]

    def write(self) -> None:
        body = {
            "format": FORMAT,
            "recipe": self.recipe,
            "source": {"name": self.source_name, "sha256": self.source_sha256},
            "splits": {
                name: {"files": list(s.files), "counts": list(s.counts), "records": s.records, "features": s.features}
                for name, s in self.splits.items()
            },
        }
        tmp = self.directory / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
        tmp.replace(self.directory / MANIFEST)  # written last: a directory with a manifest is complete

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        """Read and check ``directory/manifest.json``; DataError with one line if it is not usable."""
        path = directory / MANIFEST
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            if body.get("format") != FORMAT:
                raise DataError(f"{path}: format {body.get('format')!r}, expected {FORMAT}; prepare it again")
            splits = {
                name: SplitInfo(tuple(s["files"]), tuple(int(c) for c in s["counts"]), dict(s["features"]))
                for name, s in body["splits"].items()
            }
            manifest = cls(directory, body["recipe"], body["source"]["name"], body["source"]["sha256"], splits)
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"{path} is not a manifest hvdtrain wrote ({type(exc).__name__}: {exc})") from None
        for name, split in splits.items():
            missing = [f for f in split.files if not (directory / f).is_file()]
            if missing:
                raise DataError(f"{path}: split {name} lacks {len(missing)} file(s), e.g. {directory / missing[0]}")
        return manifest

    def source(self, split: str, shuffle_buffer: int = 10_000) -> RecordSource:
        """The split as a streamed source."""
        if split not in self.splits:
            raise DataError(f"{self.directory / MANIFEST} has no split {split!r} (has {', '.join(self.splits)})")
        info = self.splits[split]
        return RecordSource([self.directory / f for f in info.files], info.counts, info.features, shuffle_buffer)


def find_prepared(data_dir: Path, recipe: str) -> Manifest | None:
    """The prepared shards for ``recipe`` in ``data_dir`` or ``data_dir/tfrecords`` (None when there are none)."""
    for directory in (data_dir, data_dir / "tfrecords"):
        if (directory / MANIFEST).is_file():
            manifest = Manifest.read(directory)
            if manifest.recipe != recipe:
                raise DataError(f"{directory / MANIFEST} was prepared for recipe {manifest.recipe!r}, not {recipe!r}")
            return manifest
    return None


def _parser(features: dict[str, dict[str, Any]]) -> Callable[[tf.Tensor], tuple[Any, tf.Tensor]]:
    """Serialized ``tf.train.Example`` -> ``(x, y)`` tensors, as written by :func:`write_split`."""
    spec = {name: tf.io.FixedLenFeature([], tf.string) for name in features}

    def decode(raw: tf.Tensor, layout: dict[str, Any]) -> tf.Tensor:
        dtype = tf.as_dtype(np.dtype(layout["dtype"]))
        value = tf.io.decode_raw(raw, dtype) if dtype != tf.string else raw
        return tf.reshape(value, layout["shape"])

    def parse(serialized: tf.Tensor) -> tuple[Any, tf.Tensor]:
        parsed = tf.io.parse_single_example(serialized, spec)
        values = {name: decode(parsed[name], layout) for name, layout in features.items()}
        x = values["x"] if "x" in values else {k[2:]: v for k, v in values.items() if k.startswith("x/")}
        return x, values["y"]

    return parse


class RecordSource(Source):
    """TFRecord files streamed by each rank; see the module docstring for how they are divided."""

    def __init__(
        self, files: list[Path], counts: Iterable[int], features: dict[str, dict[str, Any]], shuffle_buffer: int
    ) -> None:
        self.files, self.counts = [str(f) for f in files], list(counts)
        self.parse = _parser(features)
        self.shuffle_buffer = shuffle_buffer

    @property
    def num_examples(self) -> int:
        return sum(self.counts)

    def by_file(self, size: int) -> bool:
        """Whether ranks get whole files (else every rank reads all files and keeps every size-th record)."""
        return len(self.files) >= size

    def shard_size(self, rank: int, size: int) -> int:
        if self.by_file(size):
            return sum(self.counts[rank::size])
        return len(range(rank, self.num_examples, size))

    def _records(self, rank: int, size: int, file_order: tf.Tensor | None) -> tf.data.Dataset:
        """This rank's serialized records; its files in ``file_order`` (positions in its list) or storage order."""
        if not self.by_file(size):
            return tf.data.TFRecordDataset(self.files).shard(size, rank)
        mine = tf.constant(self.files[rank::size])
        names = tf.data.Dataset.from_tensor_slices(mine if file_order is None else tf.gather(mine, file_order))
        cycle = min(len(self.files[rank::size]), 8)
        return names.interleave(
            tf.data.TFRecordDataset, cycle_length=cycle, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )

    def epoch(self, rank: int, size: int, seed: int, epoch: tf.Tensor, samples: int) -> tf.data.Dataset:
        n_files = len(self.files[rank::size]) if self.by_file(size) else 0

        def randomness(e: np.int64) -> tuple[np.ndarray, np.int64]:
            rng = epoch_rng(seed, rank, int(e))
            return rng.permutation(n_files).astype(np.int64), np.int64(rng.integers(1 << 31))

        file_order, shuffle_seed = tf.numpy_function(randomness, [epoch], (tf.int64, tf.int64), stateful=False)
        records = self._records(rank, size, tf.ensure_shape(file_order, [n_files]) if n_files else None)
        records = records.shuffle(self.shuffle_buffer, seed=tf.ensure_shape(shuffle_seed, []))
        return records.repeat().take(samples).map(self.parse, num_parallel_calls=tf.data.AUTOTUNE)

    def shard(self, rank: int, size: int) -> tf.data.Dataset:
        return self._records(rank, size, None).map(self.parse, num_parallel_calls=tf.data.AUTOTUNE)


@dataclass(frozen=True)
class RawData:
    """What a recipe's ``raw_data`` hook gives ``hvdtrain data prepare``: the source file and each split's chunks."""

    source: Path
    splits: dict[str, Callable[[], Iterator[Chunk]]]


def prepare(
    recipe: str,
    raw: RawData,
    out_dir: Path,
    shards: int,
    force: bool = False,
    progress: Callable[[str], None] = lambda line: None,
) -> tuple[Manifest, bool]:
    """Write the shards and manifest into ``out_dir``; (manifest, False) when it already holds them for this source."""
    progress(f"checksum of {raw.source}")
    checksum = sha256_of(raw.source)
    if (out_dir / MANIFEST).is_file() and not force:
        existing = Manifest.read(out_dir)
        if existing.recipe == recipe and existing.source_sha256 == checksum:
            return existing, False
        raise DataError(
            f"{out_dir} already holds shards prepared from another source ({existing.recipe}, "
            f"{existing.source_name}); use --force to replace them or choose another --output"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # until the new one is written, the directory is incomplete
    splits = {}
    for name, chunks in raw.splits.items():
        progress(f"writing split {name} into {shards} files in {out_dir}")
        splits[name] = write_split(out_dir, name, chunks(), shards)
        progress(f"split {name}: {splits[name].records} records")
    manifest = Manifest(out_dir, recipe, raw.source.name, checksum, splits)
    manifest.write()
    return manifest, True


def prepare_recipe(
    name: str, data_dir: Path, out_dir: Path | None, shards: int, force: bool, progress: Callable[[str], None]
) -> Manifest:
    """``hvdtrain data prepare``: the recipe's raw data from ``data_dir`` as shards in ``out_dir`` (default
    ``data_dir/tfrecords``, where the recipe looks for them); DataError when the recipe cannot be prepared."""
    from hvdtrain.recipes import load_recipe

    recipe = load_recipe(name)
    if recipe.raw_data is None:
        raise DataError(f"recipe {name!r} reads its data into memory; it has nothing to prepare")
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir} is not a directory")
    out_dir = out_dir or data_dir / "tfrecords"
    manifest, written = prepare(name, recipe.raw_data(data_dir), out_dir, shards, force, progress)
    counts = ", ".join(
        f"{split} {info.records} records in {len(info.files)} files" for split, info in manifest.splits.items()
    )
    progress(
        f"{'prepared' if written else 'already prepared'} {out_dir}: {counts} (source {manifest.source_name}, "
        f"sha256 {manifest.source_sha256[:12]})"
    )
    return manifest
