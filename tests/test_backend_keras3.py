"""The Keras 3 back end (TensorFlow >= 2.16): gradients through Horovod's core collectives, hvdtrain's callbacks.

One process here (Horovod at size 1); the multi-process behaviour (ranks identical, LR scaled, fp16 on the wire,
metrics averaged) is in test_training.py and below, marked multiproc.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import PYTHON, WORKERS, launch, launcher_argv, recipe_program, run

from hvdtrain.backends import keras_major
from hvdtrain.config import TrainConfig

pytestmark = pytest.mark.skipif(keras_major() != 3, reason="Keras 3 back end: runs on the tf2.21 stack")

if keras_major() == 3:
    import horovod.tensorflow as hvd

    from hvdtrain.backends import keras3 as backend


@pytest.fixture(scope="module", autouse=True)
def horovod_size_1() -> None:
    hvd.init()


def small_model(compile_with: TrainConfig | None = None, eager: bool = False) -> tf.keras.Model:
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3), tf.keras.layers.Dense(2)])
    if compile_with is not None:
        optimizer = backend.distributed_optimizer(tf.keras.optimizers.SGD(0.1), compile_with)
        model.compile(optimizer=optimizer, loss="mse", run_eagerly=eager, **backend.compile_options())
        optimizer.build(model.trainable_variables)
    return model


def test_optimizer_keeps_its_class_and_settings_and_never_goes_through_horovods_keras_layer() -> None:
    opt = backend.distributed_optimizer(tf.keras.optimizers.Adam(learning_rate=0.004, beta_1=0.8), TrainConfig())
    assert isinstance(opt, tf.keras.optimizers.Adam) and isinstance(opt, backend._AllreduceMixin)
    assert type(opt).__name__ == "DistributedAdam"
    assert not any(c.__module__.startswith("horovod") for c in type(opt).__mro__)
    assert float(opt.learning_rate.numpy()) == pytest.approx(0.004) and opt.beta_1 == 0.8


def test_compile_turns_xla_off() -> None:
    assert backend.compile_options() == {"jit_compile": False}


class _Recorder:
    """Wraps GradientSync.allreduce: counts calls and what went in."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[list[np.ndarray]] = []
        original = backend.GradientSync.allreduce

        def allreduce(sync: backend.GradientSync, grads: list) -> list:
            self.calls.append([np.asarray(g) for g in grads])
            return original(sync, grads)

        monkeypatch.setattr(backend.GradientSync, "allreduce", allreduce)


def _weights_after_each_step(model: tf.keras.Model, steps: int) -> list[np.ndarray]:
    seen: list[np.ndarray] = []
    flat = lambda: np.concatenate([w.ravel() for w in model.get_weights()])  # noqa: E731
    record = tf.keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(flat()))
    x = np.random.default_rng(1).normal(size=(steps * 2, 4)).astype(np.float32)
    y = np.random.default_rng(2).normal(size=(steps * 2, 2)).astype(np.float32)
    model.fit(x, y, batch_size=2, epochs=1, shuffle=False, verbose=0, callbacks=[record])
    return seen


def test_one_allreduce_and_one_update_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder(monkeypatch)
    model = small_model(TrainConfig(), eager=True)  # eager: Python runs every step, so calls can be counted
    before = np.concatenate([w.ravel() for w in model.get_weights()])
    seen = _weights_after_each_step(model, steps=3)
    assert len(recorder.calls) == 3
    assert [len(c) for c in recorder.calls] == [4, 4, 4]  # every gradient (2 kernels, 2 biases) in the one group
    assert not np.array_equal(before, seen[0]) and not np.array_equal(seen[0], seen[1])


def test_accumulation_reduces_and_updates_every_n_steps_only(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder(monkeypatch)
    model = small_model(TrainConfig(backward_passes_per_step=3), eager=True)
    before = np.concatenate([w.ravel() for w in model.get_weights()])
    seen = _weights_after_each_step(model, steps=6)
    assert len(recorder.calls) == 2  # steps 3 and 6
    np.testing.assert_array_equal(seen[0], before)
    np.testing.assert_array_equal(seen[1], before)
    assert not np.array_equal(seen[2], before)
    np.testing.assert_array_equal(seen[3], seen[2])
    np.testing.assert_array_equal(seen[4], seen[2])
    assert not np.array_equal(seen[5], seen[2])


def test_accumulated_update_is_the_mean_of_the_passes() -> None:
    """Two passes with gradients g1, g2 then one SGD step: w - lr * (g1 + g2) / 2."""
    variable = tf.Variable([1.0, 2.0])
    opt = backend.distributed_optimizer(tf.keras.optimizers.SGD(0.5), TrainConfig(backward_passes_per_step=2))
    opt.build([variable])
    opt.apply([tf.constant([1.0, 1.0])], [variable])
    np.testing.assert_array_equal(variable.numpy(), [1.0, 2.0])
    opt.apply([tf.constant([3.0, -1.0])], [variable])
    np.testing.assert_allclose(variable.numpy(), [1.0 - 0.5 * 2.0, 2.0 - 0.5 * 0.0])


def test_graph_mode_training_updates_the_weights() -> None:
    model = small_model(TrainConfig(fp16_allreduce=True))
    before = np.concatenate([w.ravel() for w in model.get_weights()])
    seen = _weights_after_each_step(model, steps=2)
    assert not np.array_equal(before, seen[-1])


def test_sparse_gradients_stay_sparse_unless_sparse_as_dense() -> None:
    grad = tf.IndexedSlices(tf.constant([[1.0, 2.0], [3.0, 4.0]]), tf.constant([0, 2]), tf.constant([4, 2]))
    sparse = backend.GradientSync().allreduce([grad, None])
    assert isinstance(sparse[0], tf.IndexedSlices) and sparse[1] is None
    dense = backend.GradientSync(sparse_as_dense=True).allreduce([grad])[0]
    assert not isinstance(dense, tf.IndexedSlices)
    np.testing.assert_array_equal(tf.convert_to_tensor(sparse[0]).numpy(), dense.numpy())


def test_sparse_gradients_after_dense_ones_keep_their_shape() -> None:
    """Horovod 0.28.1 pairs each IndexedSlices with the dense_shape of the tensor at its position in the whole
    list: a dense gradient first (NeuMF's towers) used to crash or mix shapes up."""
    dense = tf.constant([1.0, 2.0, 3.0])
    user = tf.IndexedSlices(tf.constant([[1.0, 2.0]]), tf.constant([1]), tf.constant([5, 2]))
    item = tf.IndexedSlices(tf.constant([[3.0], [4.0]]), tf.constant([0, 2]), tf.constant([3, 1]))
    out = backend.GradientSync().allreduce([dense, user, None, item])
    np.testing.assert_array_equal(out[0].numpy(), dense.numpy())
    assert out[2] is None
    for got, grad in ((out[1], user), (out[3], item)):
        assert isinstance(got, tf.IndexedSlices)
        np.testing.assert_array_equal(tf.convert_to_tensor(got).numpy(), tf.convert_to_tensor(grad).numpy())


def test_fp16_compression_returns_the_gradient_dtype_and_adasum_runs() -> None:
    grad = tf.constant([1.0 + 2**-12, 3.0])  # 1 + 2^-12 is not a float16
    (fp16,) = backend.GradientSync(fp16=True).allreduce([grad])
    assert fp16.dtype == tf.float32 and fp16.numpy()[0] == 1.0
    (adasum,) = backend.GradientSync(op="adasum").allreduce([grad])
    np.testing.assert_allclose(adasum.numpy(), grad.numpy())


def test_lr_control_sets_warmup_then_schedule_per_batch() -> None:
    model = small_model(TrainConfig())
    config = TrainConfig(epochs=4, warmup_epochs=1, lr_schedule="cosine")
    control = backend.LearningRateControl(config, scaled_lr=0.8, steps_per_epoch=4, size=4)
    control.set_model(model)
    control.on_epoch_begin(0)
    control.on_train_batch_begin(0)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.8 * (1 + 0.25 * 3) / 4)
    control.on_epoch_begin(2)
    control.on_train_batch_begin(2)  # epoch 2.5 of a cosine from 1 to 4: halfway
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.8 * 0.5)


def test_callback_order_broadcast_then_average_then_lr() -> None:
    plain = backend.callbacks(TrainConfig(), scaled_lr=0.02, steps_per_epoch=10)
    assert [type(c) for c in plain] == [backend.BroadcastInitialState, backend.AverageMetrics]
    elastic = backend.callbacks(TrainConfig(epochs=3, warmup_epochs=1), 0.02, 10, broadcast=False)
    assert [type(c) for c in elastic] == [backend.AverageMetrics, backend.LearningRateControl]


def test_broadcast_leaves_dropout_seeds_alone() -> None:
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dropout(0.5), tf.keras.layers.Dense(2)])
    model.compile(optimizer=backend.distributed_optimizer(tf.keras.optimizers.Adam(), TrainConfig()), loss="mse")
    model.optimizer.build(model.trainable_variables)
    names = [v.path for v in model.variables]
    assert any("seed_generator" in n for n in names)
    synced = backend._model_and_optimizer_variables(model)
    assert len(synced) == len(names) - 1 + len(model.optimizer.variables)
    assert all(isinstance(v, tf.Variable) for v in synced)


_AVERAGE = """
import horovod.tensorflow as hvd
from hvdtrain.backends import keras3
hvd.init()
logs = {"loss": float(hvd.rank()), "accuracy": 0.5 + hvd.rank() / 4}
keras3.AverageMetrics().on_epoch_end(0, logs)
print(f"rank {hvd.rank()}: {sorted(logs.items())}")
"""


@pytest.mark.multiproc
def test_metrics_are_averaged_over_ranks() -> None:
    done = run([*launcher_argv("mpirun", 2), PYTHON, "-c", _AVERAGE])
    assert done.returncode == 0, done.stderr[-2000:]
    for rank in (0, 1):
        assert f"rank {rank}: [('accuracy', 0.625), ('loss', 0.5)]" in done.stdout


def _allreduced_dtypes(timeline: Path) -> set[str]:
    """The dtypes Horovod's timeline shows for the allreduced tensors of a run (one timeline "process" a tensor)."""
    text = timeline.read_text().rstrip()
    events = json.loads(text if text.endswith("]") else text.rstrip(",") + "]")  # closed at shutdown, or not
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name" and "name" in e["args"]}
    return {
        e["args"]["dtype"]
        for e in events
        if "dtype" in e.get("args", {}) and "allreduce" in names.get(e.get("pid"), "").lower()
    }


@pytest.mark.multiproc
@pytest.mark.parametrize(("options", "dtype"), [([], "float32"), (["--fp16-allreduce"], "float16")])
def test_fp16_compression_puts_float16_on_the_wire(tmp_path: Path, options: list[str], dtype: str) -> None:
    timeline = tmp_path / "timeline.json"
    program = [PYTHON, str(WORKERS / "sync_worker.py"), str(tmp_path), "--epochs", "1", *options]
    done = launch("mpirun", 2, program, env={"HOROVOD_TIMELINE": str(timeline)})
    assert done.returncode == 0, done.stderr[-3000:]
    # The gradients in ``dtype``; float64 is hvdtrain's own sums (metric average, evaluation).
    assert _allreduced_dtypes(timeline) == {dtype, "float64"}


@pytest.mark.multiproc
@pytest.mark.parametrize("launcher", ["mpirun", "horovodrun"])
def test_adasum_keeps_ranks_identical_under_mpi_and_is_refused_under_gloo(tmp_path: Path, launcher: str) -> None:
    program = [PYTHON, str(WORKERS / "sync_worker.py"), str(tmp_path), "--epochs", "2", "--reduce-op", "adasum"]
    if launcher == "horovodrun":  # horovodrun --gloo: Horovod's Gloo controller has no Adasum
        digits = recipe_program("digits", "--epochs", "1", "--reduce-op", "adasum")
        done = run([*launcher_argv("horovodrun", 2)[:1], "--gloo", *launcher_argv("horovodrun", 2)[1:], *digits])
        assert done.returncode != 0
        assert "hvdtrain: error: --reduce-op adasum needs the MPI controller" in done.stdout + done.stderr
        return
    done = launch(launcher, 2, program)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (np.load(tmp_path / f"rank-{r}.npz") for r in range(2))
    np.testing.assert_array_equal(rank0["final"], rank1["final"])
    assert not np.array_equal(rank0["final"], rank0["initial"]) and float(rank0["accuracy"]) > 0.8


_EMBEDDING = """
import sys
import numpy as np
import tensorflow as tf
from hvdtrain.backends import keras3
from hvdtrain.config import TrainConfig
world = keras3.init()
tf.keras.utils.set_random_seed(world.rank)  # different initial weights and data on each rank
model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Embedding(50, 4), tf.keras.layers.Flatten(),
                             tf.keras.layers.Dense(2)])
config = TrainConfig(sparse_as_dense=sys.argv[1] == "dense")
model.compile(optimizer=keras3.distributed_optimizer(tf.keras.optimizers.Adam(0.05), config),
              loss="sparse_categorical_crossentropy", **keras3.compile_options())
model.optimizer.build(model.trainable_variables)
seen = []  # the type of the embedding's gradient as it goes to Horovod
original = keras3.hvd.grouped_allreduce
def grouped_allreduce(tensors, **kwargs):
    seen.append(type(tensors[0]).__name__)
    return original(tensors, **kwargs)
keras3.hvd.grouped_allreduce = grouped_allreduce
x = np.random.default_rng(world.rank).integers(0, 50, (64, 3))
y = np.random.default_rng(world.rank).integers(0, 2, 64)
model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=keras3.callbacks(config, 0.05, 4))
flat = np.concatenate([w.ravel() for w in model.get_weights()])
print(f"rank {world.rank}: grads {sorted(set(seen))} checksum {flat.sum():.6f} {flat[:3].round(6).tolist()}")
"""


@pytest.mark.multiproc
@pytest.mark.parametrize(("mode", "grad_type"), [("sparse", "IndexedSlices"), ("dense", "SymbolicTensor")])
def test_embedding_gradients_sparse_or_dense_keep_ranks_identical(mode: str, grad_type: str) -> None:
    done = run([*launcher_argv("mpirun", 2), PYTHON, "-c", _EMBEDDING, mode])
    assert done.returncode == 0, done.stderr[-3000:]
    lines = sorted(line for line in done.stdout.splitlines() if line.startswith("rank "))
    assert len(lines) == 2 and f"grads ['{grad_type}']" in lines[0]
    assert lines[0].split(": ", 1)[1] == lines[1].split(": ", 1)[1]  # same gradients type, same weights
