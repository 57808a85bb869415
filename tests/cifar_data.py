"""Generated data in the exact CIFAR-10 python format (no download): class k is a square of colour k on noise."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

FOLDER = "cifar-10-batches-py"
COLOURS = np.array(
    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255], [255, 255, 255],
     [128, 0, 0], [0, 128, 0], [0, 0, 128]],
    dtype=np.uint8,
)  # fmt: skip


def images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 32x32x3 uint8 images and their labels: a 12x12 square of the label's colour at a random place."""
    labels = rng.integers(0, 10, n)
    x = rng.integers(0, 90, (n, 32, 32, 3)).astype(np.uint8)
    for i, k in enumerate(labels):
        row, col = rng.integers(0, 21, 2)
        x[i, row : row + 12, col : col + 12] = COLOURS[k]
    return x, labels


def batch_bytes(x: np.ndarray, labels: np.ndarray, name: str) -> bytes:
    """One batch pickled as CIFAR-10's are: a dict of bytes keys, ``data`` N x 3072 uint8 as R, G, B planes."""
    batch = {
        b"batch_label": name.encode(),
        b"labels": [int(k) for k in labels],
        b"data": x.transpose(0, 3, 1, 2).reshape(len(x), 3072),
        b"filenames": [f"img_{i}.png".encode() for i in range(len(x))],
    }
    return pickle.dumps(batch, protocol=2)


def write_tarball(path: Path, per_batch: int, test: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    """``cifar-10-python.tar.gz`` with 5 training batches of ``per_batch`` images and a test batch of ``test``;
    returns (x_train, y_train, x_test, y_test) as written."""
    rng = np.random.default_rng(seed)
    parts = [images(per_batch, rng) for _ in range(5)]
    x_test, y_test = images(test, rng)
    files = {f"data_batch_{i + 1}": batch_bytes(x, y, f"training batch {i + 1} of 5") for i, (x, y) in enumerate(parts)}
    files["test_batch"] = batch_bytes(x_test, y_test, "testing batch 1 of 1")
    files["batches.meta"] = pickle.dumps({b"label_names": [b"c%d" % k for k in range(10)]}, protocol=2)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    x_train = np.concatenate([x for x, _ in parts])
    y_train = np.concatenate([y for _, y in parts])
    return x_train, y_train, x_test, y_test
