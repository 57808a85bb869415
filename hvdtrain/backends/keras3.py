"""Keras 3 (TensorFlow >= 2.16) through Horovod's core collectives.

Horovod 0.28.1's Keras layer does not work on Keras 3: its ``DistributedOptimizer`` hooks methods Keras 3 no longer
calls, so ``fit`` runs and the ranks silently drift apart; its callbacks and ``DistributedGradientTape`` crash. Here
the optimizer's class gets a mixin whose ``apply`` (what ``fit``'s train step calls with the gradients) does one
``hvd.grouped_allreduce`` per step before the update, and the callbacks are hvdtrain's own:

- :class:`BroadcastInitialState`: rank 0's model and optimizer variables (the underlying ``tf.Variable`` of each Keras
  variable) to every rank before the first step;
- :class:`AverageMetrics`: epoch logs averaged over ranks;
- :class:`LearningRateControl`: Horovod's warmup (lr/size up to the scaled LR), then the schedule, per batch;
- elastic runs keep the model and optimizer in :class:`Keras3State` (numpy copies, synced with a broadcast).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import horovod.tensorflow as hvd
import numpy as np
import tensorflow as tf
from horovod.common.exceptions import HorovodInternalError

from hvdtrain.backends.core import broadcast_object, global_sum, init, shutdown, world  # noqa: F401 - shared
from hvdtrain.callbacks import ElasticEpochCounter
from hvdtrain.config import ConfigError, TrainConfig
from hvdtrain.lr import lr_multiplier

KERAS_MAJOR = 3

_OPS = {"average": hvd.Average, "sum": hvd.Sum, "adasum": hvd.Adasum}


@dataclass(frozen=True)
class GradientSync:
    """How gradients are combined across ranks (from the ``TrainConfig``)."""

    op: str = "average"
    fp16: bool = False
    backward_passes_per_step: int = 1
    sparse_as_dense: bool = False

    @classmethod
    def from_config(cls, config: TrainConfig) -> GradientSync:
        return cls(config.reduce_op, config.fp16_allreduce, config.backward_passes_per_step, config.sparse_as_dense)

    def allreduce(self, grads: list[Any]) -> list[Any]:
        """Every rank's gradients combined: one fused group (Adasum: one allreduce per tensor). ``None`` stays.

        One group, not one allreduce per tensor or several groups: inside Keras 3's compiled train step TensorFlow's
        automatic control dependencies run Horovod's ops one after another, so more ops add negotiations without
        overlapping the backward pass (measured slower across a 1 Gbit/s link, docs/cluster.md).
        """
        present = [i for i, g in enumerate(grads) if g is not None]
        tensors = [grads[i] for i in present]
        if not tensors:
            return list(grads)
        if self.sparse_as_dense or self.op == "adasum":  # Horovod's Adasum takes no IndexedSlices
            tensors = [tf.convert_to_tensor(t) if isinstance(t, tf.IndexedSlices) else t for t in tensors]
        compression = hvd.Compression.fp16 if self.fp16 else hvd.Compression.none
        if self.op == "adasum":  # horovod 0.28.1's grouped_allreduce fails on Adasum (an undefined name)
            reduced = [hvd.allreduce(t, op=hvd.Adasum, compression=compression) for t in tensors]
        else:
            # Sparse first: horovod 0.28.1's grouped_allreduce gives the i-th IndexedSlices the dense_shape of the
            # i-th tensor of the whole list, which breaks when a dense gradient comes before an embedding's.
            order = sorted(range(len(tensors)), key=lambda i: not isinstance(tensors[i], tf.IndexedSlices))
            done = hvd.grouped_allreduce([tensors[i] for i in order], op=_OPS[self.op], compression=compression)
            reduced = [None] * len(tensors)
            for i, tensor in zip(order, done, strict=True):
                reduced[i] = tensor
        out = list(grads)
        for i, tensor in zip(present, reduced, strict=True):
            out[i] = tensor
        return out


class _AllreduceMixin:
    """Put in front of an optimizer's class: ``apply`` combines the gradients of all ranks, then updates.

    With ``backward_passes_per_step`` N > 1, gradients are summed locally and the allreduce and update happen on
    every N-th call only (the local sum averaged over N first, as Horovod's Keras optimizer does).
    """

    _hvd_sync: GradientSync

    def build(self, variables: list[Any]) -> None:
        super().build(variables)  # type: ignore[misc]
        if self._hvd_sync.backward_passes_per_step > 1 and not hasattr(self, "_hvd_sums"):
            # Plain tf.Variables, outside the optimizer's own (checkpointed) variables.
            object.__setattr__(self, "_hvd_sums", [tf.Variable(tf.zeros(v.shape, v.dtype)) for v in variables])
            object.__setattr__(self, "_hvd_passes", tf.Variable(0, dtype=tf.int64))

    def apply(self, grads: Any, trainable_variables: Any = None) -> Any:
        sync = self._hvd_sync
        parent = super()
        grads = list(grads)
        if sync.backward_passes_per_step == 1:
            return parent.apply(sync.allreduce(grads), trainable_variables)  # type: ignore[misc]
        passes = sync.backward_passes_per_step
        for total, grad in zip(self._hvd_sums, grads, strict=True):
            if grad is not None:
                total.assign_add(tf.convert_to_tensor(grad))
        done = self._hvd_passes.assign_add(1)

        def update() -> tf.Tensor:
            means = [
                None if grad is None else total.read_value() / passes
                for total, grad in zip(self._hvd_sums, grads, strict=True)
            ]
            parent.apply(sync.allreduce(means), trainable_variables)  # type: ignore[misc]
            for total in self._hvd_sums:
                total.assign(tf.zeros_like(total))
            return tf.constant(True)

        tf.cond(done % passes == 0, update, lambda: tf.constant(False))
        return None


def distributed_optimizer(optimizer: Any, config: TrainConfig) -> Any:
    """``optimizer`` with gradients combined across ranks in ``apply`` (its class gets :class:`_AllreduceMixin`).

    Adasum needs Horovod's MPI controller (call after ``init``): ConfigError under Gloo.
    """
    if config.reduce_op == "adasum" and hvd.is_initialized() and not hvd.mpi_enabled():
        raise ConfigError("--reduce-op adasum needs the MPI controller (Horovod's Gloo has no Adasum); drop --gloo")
    cls = type(optimizer)
    wrapped = type(f"Distributed{cls.__name__}", (_AllreduceMixin, cls), {})
    distributed = wrapped.from_config(optimizer.get_config())
    object.__setattr__(distributed, "_hvd_sync", GradientSync.from_config(config))
    return distributed


def compile_options() -> dict[str, Any]:
    """Extra ``model.compile`` arguments: no XLA (Keras 3's "auto" turns it on with a GPU; Horovod's ops have no
    XLA kernels)."""
    return {"jit_compile": False}


def _tf_variables(variables: list[Any]) -> list[tf.Variable]:
    """The ``tf.Variable`` under each Keras 3 variable (Horovod's broadcast assigns to it), without the random seed
    states of dropout and the like, which stay different per rank as they would on Keras 2."""
    return [v.value for v in variables if "seed_generator" not in v.path]


def _model_and_optimizer_variables(model: Any) -> list[tf.Variable]:
    return _tf_variables(list(model.variables) + list(model.optimizer.variables))


class BroadcastInitialState(tf.keras.callbacks.Callback):
    """Rank 0's model and optimizer variables on every rank before the first step (build the optimizer first)."""

    def __init__(self) -> None:
        super().__init__()
        self.done = False

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if not self.done:
            hvd.broadcast_variables(_model_and_optimizer_variables(self.model), root_rank=0)
            self.done = True


class AverageMetrics(tf.keras.callbacks.Callback):
    """Each epoch's logs (loss, metrics, validation) averaged over ranks, before any logger sees them."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if not logs:
            return
        names = sorted(logs)
        values = np.array([float(logs[n]) for n in names], dtype=np.float64)
        averaged = global_sum(values, name="hvdtrain.metric_average") / hvd.size()
        logs.update(zip(names, (float(v) for v in averaged), strict=True))


class LearningRateControl(tf.keras.callbacks.Callback):
    """Set the LR before each batch: Horovod's warmup from lr/size, then the schedule (see :func:`lr_multiplier`)."""

    def __init__(self, config: TrainConfig, scaled_lr: float, steps_per_epoch: int, size: int) -> None:
        super().__init__()
        self.config, self.scaled_lr, self.steps_per_epoch, self.size = config, scaled_lr, steps_per_epoch, size
        self.epoch = 0
        self.current: float | None = None  # what the optimizer holds (assigned only when it changes)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.current = None  # fit may have been called again (elastic reset) with another LR in the optimizer

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        c = self.config
        multiplier = lr_multiplier(
            self.epoch + batch / self.steps_per_epoch,
            self.steps_per_epoch,
            self.size,
            c.warmup_epochs,
            c.lr_schedule,
            c.epochs,
            c.lr_cycle_epochs,
        )
        lr = self.scaled_lr * multiplier
        if lr != self.current:  # after warmup a constant schedule costs nothing per batch
            self.model.optimizer.learning_rate = lr
            self.current = lr


def callbacks(config: TrainConfig, scaled_lr: float, steps_per_epoch: int, broadcast: bool = True) -> list[Any]:
    """In order: broadcast (not in elastic runs, whose state sync does it), metric average, LR control."""
    stack: list[Any] = [BroadcastInitialState()] if broadcast else []
    stack.append(AverageMetrics())
    if config.warmup_epochs > 0 or config.lr_schedule != "constant":
        stack.append(LearningRateControl(config, scaled_lr, steps_per_epoch, hvd.size()))
    return stack


class Keras3State(hvd.elastic.ObjectState):
    """Elastic state: the model's and optimizer's variables (kept as numpy copies at each commit) and plain values
    such as ``epoch`` and ``batch`` (Horovod's ``TensorFlowKerasState`` calls Keras 2 APIs)."""

    def __init__(self, model: Any, **values: Any) -> None:
        self.model = model
        self._saved = self._snapshot()
        super().__init__(bcast_object=hvd.broadcast_object, get_rank=hvd.rank, **values)

    def _snapshot(self) -> list[np.ndarray]:
        return [v.numpy() for v in _model_and_optimizer_variables(self.model)]

    def save(self) -> None:
        self._saved = self._snapshot()
        super().save()

    def restore(self) -> None:
        for variable, value in zip(_model_and_optimizer_variables(self.model), self._saved, strict=True):
            variable.assign(value)
        super().restore()

    def sync(self) -> None:
        hvd.broadcast_variables(_model_and_optimizer_variables(self.model), root_rank=0)
        self._saved = self._snapshot()
        super().sync()


class CommitState(tf.keras.callbacks.Callback):
    """Commit the elastic state every ``every`` batches and at each epoch end."""

    def __init__(self, state: Keras3State, every: int) -> None:
        super().__init__()
        self.state, self.every, self.batches = state, every, 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.state.batch = batch + 1
        self.batches += 1
        if self.batches % self.every == 0:
            self.state.commit()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.state.batch = 0
        self.state.commit()


def run_elastic(model: Any, first_epoch: int, fit: Any, commit_every: int) -> dict[str, list[float]]:
    """Run ``fit(epoch, callbacks)`` in Horovod's elastic loop, committing state every ``commit_every`` batches.

    After workers leave or join, the committed model and optimizer state is synced from rank 0 and ``fit`` is
    called again from the committed epoch (that epoch starts over, from the committed weights).
    """
    state = Keras3State(model, batch=0, epoch=first_epoch)

    @hvd.elastic.run
    def loop(state: Keras3State) -> dict[str, list[float]]:
        try:
            # At each epoch end the counter runs first, so the commit records the epochs finished.
            return fit(state.epoch, [ElasticEpochCounter(state), CommitState(state, commit_every)])
        except tf.errors.OpError as exc:
            # A lost peer fails the step's HorovodGroupedAllreduce, which hvd.elastic.run's own check (it looks for
            # 'HorovodAllreduce', 'HorovodAllgather', 'HorovodBroadcast') misses: make it the error that resets.
            if "Horovod" in (exc.message or ""):
                raise HorovodInternalError(exc) from exc
            raise

    return loop(state)
