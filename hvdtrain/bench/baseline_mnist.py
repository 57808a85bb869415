"""The baseline for ``hvdtrain bench overhead``: the mnist recipe written by hand with plain Horovod Keras.

Nothing from hvdtrain: ``hvd.init()``, ``hvd.DistributedOptimizer``, Horovod's callbacks and ``model.fit``, as in
Horovod's own ``tensorflow2_keras_mnist.py``. It does the work of ``python -m hvdtrain.recipes.mnist`` at its
defaults, so a speed difference is what hvdtrain adds: the same data file and preprocessing, contiguous shards (one
per rank) with ceil(n / (batch x size)) steps per epoch, the same model, Adam at lr x size with one epoch of warmup,
validation on the rank's test shard every epoch, the TensorFlow thread counts hvdtrain's back end sets, and the same
throughput measure (samples/s per epoch over epochs 2..E, an epoch timed from on_epoch_begin to on_epoch_end,
validation included). The input pipeline is the usual hand-written one (shuffle, repeat, batch, prefetch), not
hvdtrain's per-epoch index permutation, so a difference there counts as hvdtrain's overhead too.

    horovodrun -np 2 -H localhost:2 python -m hvdtrain.bench.baseline_mnist --data-dir ~/.keras/datasets
"""

import argparse
import math
import os
import statistics
import time

import horovod.tensorflow.keras as hvd
import numpy as np
import tensorflow as tf

parser = argparse.ArgumentParser(description="Hand-written Horovod Keras MNIST (hvdtrain's overhead baseline).")
parser.add_argument("--data-dir", default=os.path.expanduser("~/.keras/datasets"))
parser.add_argument("--epochs", type=int, default=4)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--warmup-epochs", type=float, default=1.0)
parser.add_argument("--seed", type=int, default=42)


def main() -> None:
    args = parser.parse_args()
    hvd.init()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    tf.config.threading.set_intra_op_parallelism_threads(max(1, cores // hvd.local_size()))
    tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, cores // hvd.local_size())))
    tf.keras.utils.set_random_seed(args.seed + hvd.rank())

    with np.load(os.path.join(args.data_dir, "mnist.npz")) as f:
        x_train, y_train, x_test, y_test = f["x_train"], f["y_train"], f["x_test"], f["y_test"]
    x_train = (x_train.astype(np.float32) / 255.0)[..., np.newaxis]
    x_test = (x_test.astype(np.float32) / 255.0)[..., np.newaxis]
    y_train, y_test = y_train.astype(np.int64), y_test.astype(np.int64)

    def my_shard(a):
        base, extra = divmod(len(a), hvd.size())
        start = hvd.rank() * base + min(hvd.rank(), extra)
        return a[start : start + base + (1 if hvd.rank() < extra else 0)]

    def pipeline(x, y, shuffle):
        ds = tf.data.Dataset.from_tensor_slices((my_shard(x), my_shard(y)))
        if shuffle:
            ds = ds.shuffle(len(my_shard(x)), seed=args.seed + hvd.rank(), reshuffle_each_iteration=True)
        return ds.repeat().batch(args.batch_size).prefetch(tf.data.AUTOTUNE)

    steps = max(1, math.ceil(len(x_train) / (args.batch_size * hvd.size())))
    val_steps = max(1, math.ceil(len(x_test) / (args.batch_size * hvd.size())))

    model = tf.keras.Sequential(
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
    scaled_lr = args.lr * hvd.size()
    opt = hvd.DistributedOptimizer(tf.keras.optimizers.Adam(learning_rate=scaled_lr))
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    class EpochTimer(tf.keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.rates = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.rates.append(steps * args.batch_size * hvd.size() / (time.perf_counter() - self.start))

    timer = EpochTimer()
    callbacks = [
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),
        hvd.callbacks.MetricAverageCallback(),
        hvd.callbacks.LearningRateWarmupCallback(
            initial_lr=scaled_lr, warmup_epochs=args.warmup_epochs, steps_per_epoch=steps
        ),
        timer,
    ]
    model.fit(
        pipeline(x_train, y_train, shuffle=True),
        steps_per_epoch=steps,
        epochs=args.epochs,
        validation_data=pipeline(x_test, y_test, shuffle=False),
        validation_steps=val_steps,
        callbacks=callbacks,
        verbose=2 if hvd.rank() == 0 else 0,
    )
    local = model.evaluate(pipeline(x_test, y_test, shuffle=False), steps=val_steps, verbose=0, return_dict=True)
    accuracy = hvd.allreduce(tf.constant(local["accuracy"]), op=hvd.Average, name="test_accuracy").numpy()
    if hvd.rank() == 0 and len(timer.rates) > 1:
        steady = timer.rates[1:]
        mean, std = statistics.fmean(steady), statistics.stdev(steady) if len(steady) > 1 else 0.0
        print(f"baseline throughput {mean:.1f} +- {1.96 * std:.1f} samples/s (global, epochs 2..{args.epochs})")
        print(f"test accuracy {accuracy:.4f}")


if __name__ == "__main__":
    main()
