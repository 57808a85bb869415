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

from pathlib import Path

import numpy as np
import tensorflow as tf

from hvdtrain.config import TrainConfig
from hvdtrain.data import DataError, DataSplits, read_npz_splits
from hvdtrain.download import default_data_dir
from hvdtrain.download import download as fetch
from hvdtrain.recipe import Recipe, fetch_on_rank0
from hvdtrain.world import World

FILE_NAME = "mnist.npz"
ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"


def download(data_dir: Path) -> None:
    """Fetch mnist.npz into ``data_dir``; ``HVDTRAIN_MNIST_URL`` names a mirror."""
    instead = (
        f"put the Keras {FILE_NAME} at {data_dir / FILE_NAME} or train the 'digits' recipe, which needs no download"
    )
    fetch(data_dir, FILE_NAME, ORIGIN, SHA256, "HVDTRAIN_MNIST_URL", instead)


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
