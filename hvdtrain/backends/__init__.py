"""Distributed back ends, chosen by the installed Keras; recipes and the recipe base use :func:`current` only.

- :mod:`hvdtrain.backends.keras2`: Keras 2 (TensorFlow <= 2.15) through Horovod's Keras wrappers
  (``hvd.DistributedOptimizer``, its broadcast, metric-average, warmup and elastic callbacks).
- :mod:`hvdtrain.backends.keras3`: Keras 3 (TensorFlow >= 2.16) through Horovod's core collectives: gradients are
  ``hvd.grouped_allreduce``-d in the optimizer's ``apply``, since Horovod's Keras layer does not work on Keras 3
  (its ``DistributedOptimizer`` silently skips the averaging there).

Both share :mod:`hvdtrain.backends.core` (init, world, collectives) and offer the functions of :class:`Backend`.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    import numpy as np

    from hvdtrain.config import TrainConfig
    from hvdtrain.world import World

Fit = Callable[[int, list[Any]], dict[str, list[float]]]


class Backend(Protocol):
    """What a back end offers (module-level functions of ``keras2`` and ``keras3``)."""

    KERAS_MAJOR: int

    def init(self, comm: Any = None) -> World: ...

    def world(self) -> World: ...

    def distributed_optimizer(self, optimizer: Any, config: TrainConfig) -> Any: ...

    def compile_options(self) -> dict[str, Any]: ...

    def callbacks(
        self, config: TrainConfig, scaled_lr: float, steps_per_epoch: int, broadcast: bool = True
    ) -> list[Any]: ...

    def run_elastic(self, model: Any, first_epoch: int, fit: Fit, commit_every: int) -> dict[str, list[float]]: ...

    def global_sum(self, values: np.ndarray, name: str) -> np.ndarray: ...

    def broadcast_object(self, obj: Any, name: str) -> Any: ...

    def shutdown(self) -> None: ...


def installed_keras_major() -> int | None:
    """The major version of the installed ``keras`` package, without importing TensorFlow (None if absent)."""
    try:
        return int(importlib.metadata.version("keras").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        return None


def keras_version() -> str:
    """The version of the Keras that ``tf.keras`` is (2.15 on TensorFlow 2.15, 3.x from 2.16 on); imports TensorFlow.

    Keras 3 says so on ``tf.keras``; TensorFlow 2.15's ``tf.keras`` has no ``__version__``: it is the ``keras`` 2.15
    package's API.
    """
    import tensorflow as tf

    return str(getattr(tf.keras, "__version__", None) or importlib.metadata.version("keras"))


def keras_major() -> int:
    """The major version of :func:`keras_version`."""
    return int(keras_version().split(".")[0])


@cache
def current() -> Backend:
    """The back end for the installed Keras (imports TensorFlow and Horovod)."""
    if keras_major() >= 3:
        from hvdtrain.backends import keras3 as backend
    else:
        from hvdtrain.backends import keras2 as backend
    return cast(Backend, backend)
