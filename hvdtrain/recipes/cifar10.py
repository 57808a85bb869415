"""CIFAR-10 (32x32 colour images, 50k train / 10k test) with a ResNet-20/32/56 as in He et al. 2016.

The network of the paper's CIFAR section: a 3x3 convolution, three stages of n basic residual blocks (16, 32, 64
filters; depth 6n+2), global average pooling, a 10-way softmax; batch normalisation after every convolution.
Training as in the paper: SGD with momentum 0.9 and weight decay 1e-4, batch 128, LR 0.1 divided by 10 at 50% and
75% of the epochs (``--lr-schedule step``; ``cosine`` and ``sgdr`` are the other choices), pad-4 random crops and
horizontal flips. On several ranks the LR grows with the world size (``--lr-scaling``) after ``--warmup-epochs``.
Where the shape changes, the shortcut is a 1x1 convolution (the paper's option B; its CIFAR runs used A, zero
padding). Batch-norm statistics are averaged over ranks at each epoch end.

Literature, not measured here: ResNet-20 reaches 91.25% test accuracy (8.75% error), ResNet-32 92.49%, ResNet-56
93.03% (He et al. 2016, table 6; 164 epochs on 45k images).

Reads ``cifar-10-python.tar.gz`` or its extracted ``cifar-10-batches-py/`` from ``--data-dir`` (default: the Keras
cache, ``~/.keras/datasets``); when neither is there, rank 0 downloads the tarball (SHA-256 verified) while the
others wait. ``hvdtrain data prepare cifar10 --data-dir D`` writes TFRecord shards into ``D/tfrecords`` once; the
recipe then streams them instead of holding the arrays in memory.

    python -m hvdtrain.recipes.cifar10 --epochs 2                      # one process
    horovodrun -np 4 python -m hvdtrain.recipes.cifar10 --depth 32     # 4 ranks, Horovod's launcher
    mpirun -np 4 -bind-to none -map-by slot python -m hvdtrain.recipes.cifar10
    srun --ntasks=4 python -m hvdtrain.recipes.cifar10 --data-dir /scratch/cifar10
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from hvdtrain.data import DataError, DataSplits
from hvdtrain.download import default_data_dir
from hvdtrain.download import download as fetch
from hvdtrain.recipe import Recipe, fetch_on_rank0
from hvdtrain.recipes.cifar10_config import Cifar10Config
from hvdtrain.records import RawData, find_prepared
from hvdtrain.sources import ArraySource, Data
from hvdtrain.world import World

ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
ORIGIN = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
MEAN = (0.4914, 0.4822, 0.4465)  # per channel, over the 50k training images
STD = (0.2470, 0.2435, 0.2616)
MOMENTUM = 0.9


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays only: a batch file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 writes bytes in a protocol-2 pickle: str -> bytes, nothing more
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR batch -> (N x 32 x 32 x 3 uint8 images, N int64 labels); DataError if it is not one."""
    try:
        batch = _ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise DataError(f"{where} is not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(f"{where}: expected N x 3072 pixels and N labels, got {data.shape} and {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{where}: labels outside 0-9")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels  # stored as R, G, B planes


def find_raw(data_dir: Path) -> Path | None:
    """The extracted folder or the tarball in ``data_dir`` (the folder first), None when neither is there."""
    for path in (data_dir / FOLDER, data_dir / ARCHIVE):
        if path.exists():
            return path
    return None


def read_raw(path: Path) -> DataSplits:
    """The five training batches and the test batch, from the tarball or the extracted folder."""
    names = (*TRAIN_BATCHES, TEST_BATCH)
    if path.is_dir():
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise DataError(f"{path} lacks {', '.join(missing)}: not an extracted {ARCHIVE}")
        raw = {n: (path / n).read_bytes() for n in names}
    else:
        try:
            with tarfile.open(path, "r:*") as tar:
                members = {m.name.rsplit("/", 1)[-1]: m for m in tar.getmembers() if m.isfile()}
                missing = [n for n in names if n not in members]
                if missing:
                    raise DataError(f"{path} lacks {', '.join(missing)}: not the CIFAR-10 python tarball ({ARCHIVE})")
                raw = {n: tar.extractfile(members[n]).read() for n in names}  # type: ignore[union-attr]
        except (tarfile.TarError, OSError, EOFError) as exc:
            reason = str(exc).splitlines()[0].rstrip(":")
            raise DataError(f"cannot read {path}: {reason} (a corrupt or partial download? delete it)") from None
    train = [read_batch(raw[n], f"{path}:{n}") for n in TRAIN_BATCHES]
    x_test, y_test = read_batch(raw[TEST_BATCH], f"{path}:{TEST_BATCH}")
    return DataSplits(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), x_test, y_test)


def download(data_dir: Path) -> None:
    """Fetch the tarball into ``data_dir``; ``HVDTRAIN_CIFAR10_URL`` names a mirror."""
    fetch(data_dir, ARCHIVE, ORIGIN, SHA256, "HVDTRAIN_CIFAR10_URL", f"put {ARCHIVE} or {FOLDER}/ into {data_dir}")


def raw_data(data_dir: Path) -> RawData:
    """For ``hvdtrain data prepare cifar10``: the raw images and labels (downloaded first when missing)."""
    if find_raw(data_dir) is None:
        download(data_dir)
    path = find_raw(data_dir)
    assert path is not None
    splits = read_raw(path)
    return RawData(
        path,
        {
            "train": lambda: iter([(splits.x_train, splits.y_train)]),
            "test": lambda: iter([(splits.x_test, splits.y_test)]),
        },
    )


def normalize(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """uint8 pixels -> per-channel standardised floats; labels as int64."""
    x = (tf.cast(x, tf.float32) / 255.0 - tf.constant(MEAN)) / tf.constant(STD)
    return x, tf.cast(y, tf.int64)


def pad_crop_flip(x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """He et al.'s augmentation: 4 zero pixels on each side, a random 32x32 crop, a random horizontal flip."""
    x = tf.image.random_crop(tf.pad(x, [[4, 4], [4, 4], [0, 0]]), [32, 32, 3])
    return tf.image.random_flip_left_right(x), y


def load_data(config: Cifar10Config, world: World) -> Data:
    """The prepared TFRecord shards when ``--data-dir`` has them, else the tarball or folder read into memory."""
    data_dir = config.data_dir or default_data_dir()
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir} is not a directory")
    augment = pad_crop_flip if config.augment else None
    prepared = find_prepared(data_dir, "cifar10") if data_dir.is_dir() else None
    if prepared is not None:
        train, test = prepared.source("train", config.shuffle_buffer), prepared.source("test")
        return Data(train, test, preprocess=normalize, augment=augment)
    fetch_on_rank0(world, lambda: find_raw(data_dir) is not None, lambda: download(data_dir))
    path = find_raw(data_dir)
    assert path is not None
    splits = read_raw(path)
    return Data(
        ArraySource(splits.x_train, splits.y_train), ArraySource(splits.x_test, splits.y_test), normalize, augment
    )


def _conv(filters: int, stride: int, decay: float, kernel: int = 3) -> tf.keras.layers.Layer:
    return tf.keras.layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=tf.keras.regularizers.l2(decay / 2),  # the gradient of decay/2 x |w|^2 is decay x w
    )


def _bn() -> tf.keras.layers.Layer:
    """Batch normalisation with the moving-average momentum of the original ResNet code (Torch's 0.1)."""
    return tf.keras.layers.BatchNormalization(momentum=0.9)


def _block(x: tf.Tensor, filters: int, stride: int, decay: float) -> tf.Tensor:
    """A basic block: conv-BN-ReLU, conv-BN, plus the shortcut, ReLU."""
    shortcut = x
    y = tf.keras.layers.ReLU()(_bn()(_conv(filters, stride, decay)(x)))
    y = _bn()(_conv(filters, 1, decay)(y))
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _bn()(_conv(filters, stride, decay, kernel=1)(x))
    return tf.keras.layers.ReLU()(tf.keras.layers.Add()([y, shortcut]))


def build_model(config: Cifar10Config) -> tf.keras.Model:
    """ResNet-``depth`` for 32x32 images: 3 stages of (depth - 2) / 6 blocks with 16, 32 and 64 filters."""
    blocks = (config.depth - 2) // 6
    inputs = tf.keras.Input(shape=(32, 32, 3))
    x = tf.keras.layers.ReLU()(_bn()(_conv(16, 1, config.weight_decay)(inputs)))
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(blocks):
            x = _block(x, filters, 2 if stage > 0 and block == 0 else 1, config.weight_decay)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(
        10, activation="softmax", kernel_regularizer=tf.keras.regularizers.l2(config.weight_decay / 2)
    )(x)
    return tf.keras.Model(inputs, outputs, name=f"resnet{config.depth}")


def sgd(lr: float) -> tf.keras.optimizers.Optimizer:
    """SGD with momentum (the weight decay is in the layers' L2 terms)."""
    return tf.keras.optimizers.SGD(learning_rate=lr, momentum=MOMENTUM)


recipe = Recipe(
    name="cifar10",
    description="ResNet-20/32/56 on CIFAR-10 (He et al. 2016), in memory or streamed from prepared TFRecord shards.",
    build_model=build_model,  # type: ignore[arg-type]
    load_data=load_data,  # type: ignore[arg-type]
    defaults=Cifar10Config(epochs=160, batch_size=128, lr=0.1, warmup_epochs=2, lr_schedule="step"),
    build_optimizer=sgd,
    raw_data=raw_data,
)

if __name__ == "__main__":
    recipe.main()
