"""What batch normalisation costs on this TensorFlow stack: one process, no Horovod.

``python -m hvdtrain.bench.batchnorm`` (run it with each stack's Python: ``.venv`` and ``.venv-tf2.15``) times
``train_on_batch`` on a network of 6 convolutions, 32x32 images, batch 32, with and without a ``BatchNormalization``
after each convolution, alternating, and prints the median steps/s of each. Keras 3's TensorFlow back end
normalises with ``tf.nn.moments`` + ``tf.nn.batch_normalization`` where Keras 2 used the fused kernel: this is
the measurement behind "Keras 3 against Keras 2" in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import tensorflow as tf

FILTERS = (64, 64, 128, 128, 256, 256)
POOL_AFTER = (64, 128)  # a 2x2 max-pool after each convolution of these widths


def build_model(batch_norm: bool) -> Any:
    """The 6-convolution network, with or without batch normalisation after each convolution."""
    keras = tf.keras
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for filters in FILTERS:
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm)(x)
        if batch_norm:
            x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
        if filters in POOL_AFTER:
            x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def steps_per_second(batch_norm: bool, steps: int, warmup: int = 5, batch_size: int = 32) -> float:
    """Training steps per second of a fresh model on one random batch (after ``warmup`` steps)."""
    model = build_model(batch_norm)
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.01), loss=loss)
    rng = np.random.default_rng(0)
    images = rng.random((batch_size, 32, 32, 3), dtype=np.float32)
    labels = rng.integers(0, 10, batch_size)
    for _ in range(warmup):
        model.train_on_batch(images, labels)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, labels)
    return steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each variant, alternating")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    args = parser.parse_args(argv)
    rates: dict[bool, list[float]] = {True: [], False: []}
    for run in range(args.runs):
        for batch_norm in (True, False):
            rates[batch_norm].append(steps_per_second(batch_norm, args.steps))
            print(f"run {run + 1}: batch norm {batch_norm}: {rates[batch_norm][-1]:.2f} steps/s", flush=True)
    with_bn, without = statistics.median(rates[True]), statistics.median(rates[False])
    print(
        f"TensorFlow {tf.__version__}: {with_bn:.2f} steps/s with batch norm, {without:.2f} without "
        f"(batch norm costs {1 - with_bn / without:.0%} of the step)"
    )


if __name__ == "__main__":
    main()
