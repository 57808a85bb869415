"""MNIST handwritten digits (28x28, 60k train / 10k test) with a small convolutional network.

Reads the Keras ``mnist.npz`` file from ``--data-dir`` (default: the Keras cache, ``~/.keras/datasets``). When it is
missing, rank 0 downloads it while the other ranks wait. Offline, put ``mnist.npz`` there by hand, or train the
``digits`` recipe, which needs no download.

    python -m hvdtrain.recipes.mnist --epochs 2                        # one process
    horovodrun -np 4 python -m hvdtrain.recipes.mnist                  # 4 ranks, Horovod's launcher
    mpirun -np 4 -bind-to none -map-by slot python -m hvdtrain.recipes.mnist
    srun --ntasks=4 python -m hvdtrain.recipes.mnist --data-dir /scratch/mnist
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from hvdtrain.config import TrainConfig
from hvdtrain.data import DataError, DataSplits, read_npz_splits
from hvdtrain.recipe import Recipe, fetch_on_rank0
from hvdtrain.world import World

FILE_NAME = "mnist.npz"
ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"


def default_data_dir() -> Path:
    """Where Keras caches its data sets."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


def download(data_dir: Path) -> None:
    """Fetch mnist.npz into ``data_dir`` (checksum verified by Keras); ``HVDTRAIN_MNIST_URL`` names a mirror."""
    url = os.environ.get("HVDTRAIN_MNIST_URL", ORIGIN)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        tf.keras.utils.get_file(FILE_NAME, origin=url, file_hash=SHA256, cache_dir=str(data_dir), cache_subdir="")
    except Exception as exc:  # noqa: BLE001 - offline, proxy, disk: all become one actionable line
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"cannot download {url} ({reason}); put the Keras {FILE_NAME} at {data_dir / FILE_NAME} "
            "or train the 'digits' recipe, which needs no download"
        ) from None


def load_data(config: TrainConfig, world: World) -> DataSplits:
    """Pixels scaled to [0, 1] with a channel axis; labels as integers."""
    data_dir = config.data_dir or default_data_dir()
    path = data_dir / FILE_NAME
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir} is not a directory")
    fetch_on_rank0(world, path.exists, lambda: download(data_dir))
    raw = read_npz_splits(path)
    if raw.x_train.ndim != 3 or raw.x_train.shape[1:] != (28, 28):
        raise DataError(f"{path}: expected 28x28 images, got shape {raw.x_train.shape}")

    def images(x: np.ndarray) -> np.ndarray:
        return (x.astype(np.float32) / 255.0)[..., np.newaxis]

    return DataSplits(
        images(raw.x_train), raw.y_train.astype(np.int64), images(raw.x_test), raw.y_test.astype(np.int64)
    )


def build_model(config: TrainConfig) -> tf.keras.Model:
    """Two convolutions, max-pooling, dropout, a dense head."""
    return tf.keras.Sequential(
        [
            tf.keras.Input(shape=(28, 28, 1)),
            tf.keras.layers.Conv2D(32, 3, activation="relu"),
            tf.keras.layers.Conv2D(64, 3, activation="relu"),
            tf.keras.layers.MaxPooling2D(),
            tf.keras.layers.Dropout(0.25),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(128, activation="relu"),
            tf.keras.layers.Dropout(0.5),
            tf.keras.layers.Dense(10, activation="softmax"),
        ]
    )


recipe = Recipe(
    name="mnist",
    description="Convolutional network on MNIST (Keras mnist.npz; downloaded by rank 0 when missing).",
    build_model=build_model,
    load_data=load_data,
    defaults=TrainConfig(epochs=4, batch_size=64, lr=1e-3, warmup_epochs=1),
)

if __name__ == "__main__":
    recipe.main()
