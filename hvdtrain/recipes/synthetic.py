"""Synthetic-data throughput benchmark: a keras.applications model (default ResNet50) or many small layers.

The first thing to run when diagnosing a cluster: no data, no download, just forward/backward passes and Horovod's
gradient allreduce. Warmup batches (rounded up to whole iterations) are excluded; each iteration times
``--num-batches-per-iter`` batches, and rank 0 prints img/sec per rank and in total as mean +- 1.96 std over
iterations (Horovod's own benchmark convention).

    python -m hvdtrain.recipes.synthetic --image-size 32 --batch-size 8          # one process, small enough for a CPU
    horovodrun -np 2 -H localhost:2 python -m hvdtrain.recipes.synthetic --image-size 32 --batch-size 8
    horovodrun -np 8 -H node1:4,node2:4 python -m hvdtrain.recipes.synthetic --model ResNet101 --fp16-allreduce
    mpirun -np 2 -bind-to none -map-by slot python -m hvdtrain.recipes.synthetic --model small-layers --image-size 32

``--model`` takes any model in ``tf.keras.applications`` (built with ``weights=None``) or ``small-layers``: a small
convolution then ``--depth`` dense layers of ``--width`` units, i.e. hundreds of small gradient tensors, where
Horovod's tensor fusion and cycle time matter most. ``--no-gradient-sync`` leaves Horovod out of the steps (each rank
trains alone, same processes and threads): what the framework itself does, against which the allreduce's cost shows.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

from hvdtrain.options import fail, run_cli

SMALL_LAYERS = "small-layers"


class ModelError(ValueError):
    """An unknown model, or one that cannot take the requested input; the message is one line."""


@dataclass(frozen=True)
class SyntheticConfig:
    """The benchmark's options (each is also a command-line option: ``image_size`` -> ``--image-size``)."""

    model: str = "ResNet50"
    batch_size: int = 32
    image_size: int = 224
    num_classes: int = 1000
    num_warmup_batches: int = 10
    num_batches_per_iter: int = 10
    num_iters: int = 10
    fp16_allreduce: bool = False
    gradient_sync: bool = True
    threads: int | None = None
    depth: int = 100
    width: int = 64
    lr: float = 0.01
    json_path: Path | None = None
    backward_passes_per_step: int = 1
    mark_window: bool = False  # announce the timed window on stdout (hvdtrain.bench.window), for bench cluster


@dataclass
class SyntheticResult:
    """img/sec per rank (measured on rank 0) for each timed iteration, and the world size."""

    size: int
    img_sec_per_rank: list[float]

    def summary(self) -> dict[str, float]:
        values = self.img_sec_per_rank
        mean = statistics.fmean(values)
        ci = 1.96 * statistics.stdev(values) if len(values) > 1 else 0.0
        return {
            "img_sec_per_rank": mean,
            "img_sec_per_rank_ci": ci,
            "img_sec_total": mean * self.size,
            "img_sec_total_ci": ci * self.size,
        }


def application_names() -> list[str]:
    """The model constructors in ``tf.keras.applications`` (ResNet50, MobileNetV2, EfficientNetB0, ...)."""
    import tensorflow as tf

    apps = tf.keras.applications
    return sorted(n for n in dir(apps) if n[:1].isupper() and callable(getattr(apps, n)))


def build_small_layers(config: SyntheticConfig) -> Any:
    """One strided convolution, global pooling, then ``depth`` Dense(width) layers: many small gradient tensors."""
    import tensorflow as tf

    layers = [
        tf.keras.Input(shape=(config.image_size, config.image_size, 3)),
        tf.keras.layers.Conv2D(config.width, 3, strides=2, activation="relu"),
        tf.keras.layers.GlobalAveragePooling2D(),
    ]
    layers += [tf.keras.layers.Dense(config.width, activation="relu") for _ in range(config.depth)]
    layers.append(tf.keras.layers.Dense(config.num_classes, activation="softmax"))
    return tf.keras.Sequential(layers, name=f"small_layers_{config.depth}x{config.width}")


def build_model(config: SyntheticConfig) -> Any:
    """The model named by ``config.model``; ModelError if it is unknown or cannot take the input."""
    import tensorflow as tf

    if config.model == SMALL_LAYERS:
        return build_small_layers(config)
    constructor = getattr(tf.keras.applications, config.model, None)
    if config.model not in application_names() or constructor is None:
        raise ModelError(f"unknown --model {config.model!r}: use '{SMALL_LAYERS}' or a tf.keras.applications model")
    try:
        return constructor(
            weights=None, input_shape=(config.image_size, config.image_size, 3), classes=config.num_classes
        )
    except (ValueError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"--model {config.model} with --image-size {config.image_size}: {reason}") from None


class IterationTimer:
    """A Keras callback that times each epoch (= one iteration of ``num_batches_per_iter`` batches) after the warmup;
    with ``window_samples`` (samples per batch over all ranks) it also announces the timed window
    (:mod:`hvdtrain.bench.window`)."""

    def __new__(
        cls, batches: int, batch_size: int, warmup_epochs: int, verbose: bool, window_samples: int | None = None
    ) -> Any:
        import tensorflow as tf

        from hvdtrain.bench.window import Window

        class Timer(tf.keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.img_secs: list[float] = []
                self._start = 0.0
                self._window = Window() if window_samples is not None else None

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                if self._window is not None and epoch == warmup_epochs:
                    self._window.start()
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                img_sec = batches * batch_size / (time.perf_counter() - self._start)
                if epoch < warmup_epochs:
                    if verbose:
                        print(f"Warmup #{epoch}: {img_sec:.1f} img/sec per rank (excluded)", flush=True)
                    return
                self.img_secs.append(img_sec)
                if verbose:
                    print(f"Iter #{epoch - warmup_epochs}: {img_sec:.1f} img/sec per rank", flush=True)
                if self._window is not None and epoch + 1 == self.params.get("epochs"):
                    steps = batches * len(self.img_secs)
                    self._window.end(steps, steps * window_samples)

        return Timer()


def run(config: SyntheticConfig) -> SyntheticResult:
    """Build, warm up, time; print the summary on rank 0 (and write ``json_path``)."""
    import tensorflow as tf

    from hvdtrain import backends
    from hvdtrain.config import TrainConfig
    from hvdtrain.log import log_defaults_applied, setup_logging
    from hvdtrain.world_check import check_world_size

    backend = backends.current()
    world = backend.init()
    if config.threads is not None:  # before the first TensorFlow op, which freezes the thread pools
        tf.config.threading.set_intra_op_parallelism_threads(config.threads)
        tf.config.threading.set_inter_op_parallelism_threads(config.threads)
    log = setup_logging(world.rank)
    log_defaults_applied(log, world.defaults_applied)
    check_world_size(world.size)
    tf.keras.utils.set_random_seed(1234 + world.rank)

    model = build_model(config)
    train_config = TrainConfig(
        fp16_allreduce=config.fp16_allreduce, backward_passes_per_step=config.backward_passes_per_step
    )
    optimizer = tf.keras.optimizers.SGD(learning_rate=config.lr)
    if config.gradient_sync:
        # Horovod: gradients averaged across ranks by the back end's optimizer.
        optimizer = backend.distributed_optimizer(optimizer, train_config)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", **backend.compile_options())
    optimizer.build(model.trainable_variables)  # the same optimizer variables on every rank, before any sync

    images = tf.random.uniform((config.batch_size, config.image_size, config.image_size, 3))
    labels = tf.random.uniform((config.batch_size,), maxval=config.num_classes, dtype=tf.int64)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()

    if world.is_root:
        threads = tf.config.threading.get_intra_op_parallelism_threads()
        log.info(
            "model %s: %d parameter tensors, %.1f M parameters; image %dx%d, batch %d per rank, %d rank(s), "
            "%s thread(s) per rank, fp16 allreduce %s%s",
            model.name,
            len(model.trainable_weights),
            model.count_params() / 1e6,
            config.image_size,
            config.image_size,
            config.batch_size,
            world.size,
            threads or "default",
            "on" if config.fp16_allreduce else "off",
            "" if config.gradient_sync else "; no gradient sync: each rank trains alone",
        )
    # One fit: the first epochs warm up (excluded; the first batch also broadcasts rank 0's initial weights), then
    # num_iters timed epochs of num_batches_per_iter batches. The timer comes first, so each epoch's time ends before
    # the Horovod callbacks' end-of-epoch work.
    warmup_epochs = math.ceil(config.num_warmup_batches / config.num_batches_per_iter)
    mark = config.mark_window and world.is_root
    if mark:
        from hvdtrain.bench.window import announce_model

        announce_model(sum(int(tf.size(w)) for w in model.trainable_weights), len(model.trainable_weights))
    timer = IterationTimer(
        config.num_batches_per_iter,
        config.batch_size,
        warmup_epochs,
        world.is_root,
        config.batch_size * world.size if mark else None,
    )
    model.fit(
        dataset,
        steps_per_epoch=config.num_batches_per_iter,
        epochs=warmup_epochs + config.num_iters,
        callbacks=[
            timer,
            *(backend.callbacks(train_config, config.lr, config.num_batches_per_iter) if config.gradient_sync else []),
        ],
        verbose=0,
    )
    result = SyntheticResult(world.size, timer.img_secs)
    if world.is_root:
        s = result.summary()
        print(f"Img/sec per rank: {s['img_sec_per_rank']:.1f} +-{s['img_sec_per_rank_ci']:.1f}")
        print(f"Total img/sec on {world.size} rank(s): {s['img_sec_total']:.1f} +-{s['img_sec_total_ci']:.1f}")
        sys.stdout.flush()
        if config.json_path is not None:
            document = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}}
            document |= {"size": world.size, "img_sec_per_rank_iters": result.img_sec_per_rank, **s}
            config.json_path.parent.mkdir(parents=True, exist_ok=True)
            config.json_path.write_text(json.dumps(document, indent=1) + "\n")
    return result


_DEFAULTS = SyntheticConfig()
_OPTION_NAMES = {"json_path": "--json"}


def option_name(field: str) -> str:
    """The command-line option of a SyntheticConfig field: ``image_size`` -> ``--image-size``."""
    return _OPTION_NAMES.get(field, "--" + field.replace("_", "-"))


def config_problem(config: SyntheticConfig) -> str | None:
    """The first out-of-range option as one line, or None."""
    positive = ("batch_size", "image_size", "num_classes", "num_batches_per_iter", "num_iters", "depth", "width")
    for name in (*positive, "backward_passes_per_step"):
        if getattr(config, name) < 1:
            return f"{option_name(name)} must be >= 1, got {getattr(config, name)}"
    if config.num_warmup_batches < 0:
        return f"--num-warmup-batches must be >= 0, got {config.num_warmup_batches}"
    if config.threads is not None and config.threads < 1:
        return f"--threads must be >= 1, got {config.threads}"
    return None


def config_args(config: SyntheticConfig) -> list[str]:
    """The options that reproduce ``config`` (those that differ from the defaults), as argv items."""
    args: list[str] = []
    for name, value in asdict(config).items():
        if value == getattr(_DEFAULTS, name) or name == "lr":
            continue
        if isinstance(value, bool):
            args.append(option_name(name) if value else "--no-" + option_name(name)[2:])
        else:
            args += [option_name(name), str(value)]
    return args


@click.command(
    name="synthetic",
    help="Throughput on random images: img/sec per rank and total, warmup excluded.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--model", default=_DEFAULTS.model, show_default=True, help=f"A tf.keras.applications model or {SMALL_LAYERS}."
)
@click.option("--batch-size", type=int, default=_DEFAULTS.batch_size, show_default=True, help="Batch size per rank.")
@click.option("--image-size", type=int, default=_DEFAULTS.image_size, show_default=True, help="Image height and width.")
@click.option("--num-classes", type=int, default=_DEFAULTS.num_classes, show_default=True)
@click.option(
    "--num-warmup-batches",
    type=int,
    default=_DEFAULTS.num_warmup_batches,
    show_default=True,
    help="Untimed batches first (rounded up to whole iterations).",
)
@click.option("--num-batches-per-iter", type=int, default=_DEFAULTS.num_batches_per_iter, show_default=True)
@click.option("--num-iters", type=int, default=_DEFAULTS.num_iters, show_default=True, help="Timed iterations.")
@click.option("--fp16-allreduce/--no-fp16-allreduce", default=False, help="Compress gradients to float16.")
@click.option(
    "--gradient-sync/--no-gradient-sync",
    default=True,
    help="Off: each rank trains alone (no allreduce, no broadcast): the framework's own speed in the same processes, "
    "a control for benchmarks. [default: on]",
)
@click.option("--threads", type=int, default=None, help="TensorFlow threads per rank [default: cores / local ranks].")
@click.option("--depth", type=int, default=_DEFAULTS.depth, show_default=True, help=f"{SMALL_LAYERS}: dense layers.")
@click.option("--width", type=int, default=_DEFAULTS.width, show_default=True, help=f"{SMALL_LAYERS}: units per layer.")
@click.option(
    "--backward-passes-per-step",
    type=int,
    default=_DEFAULTS.backward_passes_per_step,
    show_default=True,
    help="Gradient accumulation: local batches per allreduce.",
)
@click.option("--mark-window/--no-mark-window", default=False, hidden=True, help="Announce the timed window.")
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Rank 0 writes results here."
)
def command(**values: Any) -> int:
    config = SyntheticConfig(**values)
    problem = config_problem(config)
    if problem is not None:
        return fail(problem)
    from hvdtrain.config import ConfigError

    try:
        run(config)
    except (ModelError, ConfigError) as exc:
        return fail(str(exc))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    code = run_cli(command, argv, prog_name="python -m hvdtrain.recipes.synthetic")
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
