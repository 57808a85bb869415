"""The data seam: what a recipe's ``load_data`` returns, and how each rank reads it.

A recipe returns a :class:`Data`: a train and a test :class:`Source`, plus optional per-example ``preprocess``
(both splits) and ``augment`` (training only) functions that run inside ``tf.data``. A source is one split as the
ranks see it; two kinds exist:

- :class:`ArraySource`: in-memory numpy arrays (digits, mnist; small sets), sharded contiguously by rank;
- :class:`hvdtrain.records.RecordSource`: TFRecord shards written by ``hvdtrain data prepare``, streamed (files
  divided among ranks, or records when there are fewer files than ranks).

Whatever the kind, the recipe base (:mod:`hvdtrain.recipe`) relies on two guarantees, which a new source must keep:

- :meth:`Source.epoch` yields exactly ``samples`` examples of this rank's shard (repeating it when the shard is
  short), so every rank runs the same number of steps and uneven data never hangs an allreduce;
- the order of one epoch is fixed by (seed, rank, epoch) alone, so a run resumed at epoch e reads what the
  uninterrupted run would have read (the epoch is a tensor: the order is made when the epoch starts).

:meth:`Source.shard` yields this rank's shard once, in storage order: over all ranks, every example exactly once
(what exact evaluation needs).

A recipe plugs in with ``load_data(config, world) -> Data`` (returning the older :class:`hvdtrain.data.DataSplits`
still works: it becomes two array sources). Examples are ``(x, y)``: ``x`` a tensor or a dict of tensors.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from hvdtrain.config import ConfigError
from hvdtrain.data import DataSplits, shard_bounds

Example = tuple[Any, Any]
ExampleFn = Callable[[Any, Any], Example]


def epoch_rng(seed: int, rank: int, epoch: int) -> np.random.Generator:
    """The random generator of one rank's epoch: everything random about an epoch's order comes from it."""
    return np.random.default_rng([seed, rank, epoch])


def epoch_order(n: int, samples: int, seed: int, rank: int, epoch: int) -> np.ndarray:
    """Indices of one rank's shard for one epoch: a permutation fixed by (seed, rank, epoch), repeated to ``samples``.

    Fixing the order per epoch makes a resumed run see exactly the batches the uninterrupted run would have seen.
    """
    return np.resize(epoch_rng(seed, rank, epoch).permutation(n), samples)


class Source(ABC):
    """One split of a data set as the ranks read it (see the module docstring for the guarantees)."""

    @property
    @abstractmethod
    def num_examples(self) -> int:
        """Examples in the whole split (all ranks)."""

    @abstractmethod
    def shard_size(self, rank: int, size: int) -> int:
        """Examples in ``rank``'s shard when ``size`` ranks read the split."""

    @abstractmethod
    def epoch(self, rank: int, size: int, seed: int, epoch: tf.Tensor, samples: int) -> tf.data.Dataset:
        """Exactly ``samples`` examples of ``rank``'s shard for ``epoch`` (an int64 tensor), in an order fixed by
        (seed, rank, epoch)."""

    @abstractmethod
    def shard(self, rank: int, size: int) -> tf.data.Dataset:
        """``rank``'s shard once, in storage order (over all ranks: every example exactly once)."""

    def steps(self, batch_size: int, size: int) -> int:
        """Steps per epoch that let the largest shard be read once: the same on every rank."""
        if self.num_examples < size:
            raise ConfigError(f"data set has {self.num_examples} samples, fewer than the {size} ranks")
        largest = max(self.shard_size(rank, size) for rank in range(size))
        return max(1, math.ceil(largest / batch_size))


class ArraySource(Source):
    """In-memory arrays (``x`` an array or a dict of arrays, ``y`` an array), sharded contiguously by rank."""

    def __init__(self, x: Any, y: np.ndarray) -> None:
        lengths = {len(a) for a in tf.nest.flatten(x)} | {len(y)}
        if len(lengths) != 1:
            raise ConfigError("data set has inputs and labels of different lengths")
        self.x, self.y = x, y

    @property
    def num_examples(self) -> int:
        return len(self.y)

    def shard_size(self, rank: int, size: int) -> int:
        start, stop = shard_bounds(self.num_examples, rank, size)
        return stop - start

    def _tensors(self, rank: int, size: int) -> tuple[Any, tf.Tensor]:
        start, stop = shard_bounds(self.num_examples, rank, size)
        x = tf.nest.map_structure(lambda a: tf.constant(a[start:stop]), self.x)
        return x, tf.constant(self.y[start:stop])

    def epoch(self, rank: int, size: int, seed: int, epoch: tf.Tensor, samples: int) -> tf.data.Dataset:
        n = self.shard_size(rank, size)
        x, y = self._tensors(rank, size)

        def order_of(e: np.int64) -> np.ndarray:
            return epoch_order(n, samples, seed, rank, int(e)).astype(np.int64)

        order = tf.numpy_function(order_of, [epoch], tf.int64, stateful=False)
        indices = tf.data.Dataset.from_tensor_slices(tf.ensure_shape(order, [samples]))
        return indices.map(lambda i: (tf.nest.map_structure(lambda t: tf.gather(t, i), x), tf.gather(y, i)))

    def shard(self, rank: int, size: int) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices(self._tensors(rank, size))


@dataclass(frozen=True)
class Data:
    """What a recipe's ``load_data`` returns: the two splits and the per-example functions run in ``tf.data``."""

    train: Source
    test: Source
    preprocess: ExampleFn | None = None  # both splits: decode, scale, ...
    augment: ExampleFn | None = None  # training only, after preprocess: random crops, flips, ...

    @classmethod
    def from_arrays(cls, splits: DataSplits, **functions: Any) -> Data:
        """In-memory train and test arrays."""
        return cls(ArraySource(splits.x_train, splits.y_train), ArraySource(splits.x_test, splits.y_test), **functions)


def as_data(loaded: Data | DataSplits) -> Data:
    """What ``load_data`` returned, as :class:`Data`."""
    return loaded if isinstance(loaded, Data) else Data.from_arrays(loaded)


def train_dataset(data: Data, batch_size: int, epochs: int, seed: int, rank: int, size: int, first_epoch: int) -> Any:
    """Batches of this rank's shard for epochs ``first_epoch``..``epochs``: ``steps x batch_size`` examples per epoch,
    each epoch's order made when it starts (memory does not grow with the number of epochs)."""
    samples = data.train.steps(batch_size, size) * batch_size
    examples = tf.data.Dataset.range(first_epoch, epochs).flat_map(
        lambda e: data.train.epoch(rank, size, seed, e, samples)
    )
    for function in (data.preprocess, data.augment):
        if function is not None:
            examples = examples.map(function, num_parallel_calls=tf.data.AUTOTUNE)
    return examples.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def eval_dataset(data: Data, batch_size: int, rank: int, size: int, repeat: bool = False) -> tf.data.Dataset:
    """This rank's shard of the test split, preprocessed (not augmented), in batches; once, or repeated."""
    examples = data.test.shard(rank, size)
    if data.preprocess is not None:
        examples = examples.map(data.preprocess, num_parallel_calls=tf.data.AUTOTUNE)
    if repeat:
        return examples.repeat().batch(batch_size).prefetch(tf.data.AUTOTUNE)
    batches = math.ceil(data.test.shard_size(rank, size) / batch_size)
    # Keras learns the length of a finite data set from its cardinality (files have none): no "ran out" warning.
    return examples.batch(batch_size).apply(tf.data.experimental.assert_cardinality(batches)).prefetch(tf.data.AUTOTUNE)
