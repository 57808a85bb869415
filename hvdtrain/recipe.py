"""The recipe base: a recipe names its model, data and defaults; ``train`` does the distributed rest.

recipe = Recipe(name="digits", description="...", build_model=build_model, load_data=load_data,
                defaults=TrainConfig(epochs=30, batch_size=32, lr=1e-3))
recipe.main()   # python -m hvdtrain.recipes.digits [options], alone, under horovodrun or under mpirun

How a recipe plugs in:

- data: ``load_data(config, world)`` returns a :class:`hvdtrain.sources.Data` (train and test sources, per-example
  ``preprocess``/``augment``), or plain in-memory ``DataSplits``; see :mod:`hvdtrain.sources`. A recipe whose raw
  data can be written as TFRecord shards also gives ``raw_data(data_dir) -> RawData`` (``hvdtrain data prepare``,
  :mod:`hvdtrain.records`), and its ``load_data`` streams them when they are there.
- options: ``defaults`` may be an instance of a ``TrainConfig`` subclass with the recipe's own fields (model depth,
  sequence length, ...), defined in a module that does not import TensorFlow and registered in
  ``hvdtrain.recipes.CONFIGS``; they become ``hvdtrain run RECIPE`` options, preset ``[train]`` keys and ``hvdtrain
  show`` lines like the shared ones, and ``build_model(config)`` reads them.
- metrics: Keras metric names or zero-argument factories of Keras metric objects. The test result is exact over the
  whole test set: each rank evaluates its shard once, the metrics' state variables (totals, counts, confusion
  counts) are summed over ranks, and each metric's result is computed from the sums; so any metric whose state is
  additive is exact, mean or not (a metric keeping a max or min is not). ``evaluate`` replaces that whole step.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from hvdtrain import backends, checkpoint
from hvdtrain import callbacks as hvd_callbacks
from hvdtrain.config import ConfigError, TrainConfig
from hvdtrain.data import DataError, DataSplits, steps_per_epoch
from hvdtrain.log import log_defaults_applied, setup_logging
from hvdtrain.lr import scale_lr
from hvdtrain.options import EXIT_FAILURE, fail, recipe_command, run_cli
from hvdtrain.sources import Data, as_data, epoch_order, eval_dataset, train_dataset  # noqa: F401 - epoch_order
from hvdtrain.world import World, is_elastic
from hvdtrain.world_check import check_world_size


def adam(lr: float) -> tf.keras.optimizers.Optimizer:
    """The default optimizer."""
    return tf.keras.optimizers.Adam(learning_rate=lr)


@dataclass(frozen=True)
class Recipe:
    """What a recipe fills in; everything distributed is shared."""

    name: str
    description: str
    build_model: Callable[[TrainConfig], tf.keras.Model]
    load_data: Callable[[TrainConfig, World], Data | DataSplits]
    defaults: TrainConfig = field(default_factory=TrainConfig)
    build_optimizer: Callable[[float], tf.keras.optimizers.Optimizer] = adam
    loss: Any = "sparse_categorical_crossentropy"
    metrics: tuple[str | Callable[[], Any], ...] = ("accuracy",)
    # hvdtrain data prepare: the raw download as numpy chunks (hvdtrain.records.RawData), read from --data-dir.
    raw_data: Callable[[Path], Any] | None = None
    # Replaces the exact evaluation of the compiled metrics (see the module docstring); runs on every rank.
    evaluate: Callable[[tf.keras.Model, Data, TrainConfig, World], dict[str, float]] | None = None
    # Evaluate on this rank's test shard after each epoch (averaged over ranks: a progress figure, not exact).
    validate_each_epoch: bool = True

    def compile_metrics(self) -> list[Any]:
        """Fresh metric objects (or names) for ``model.compile``."""
        return [m if isinstance(m, str) else m() for m in self.metrics]

    def main(self, argv: Sequence[str] | None = None) -> None:
        """Parse the command line, train, print the test result on rank 0; exit 2 on bad input."""
        sys.exit(run_recipe_command(self, argv))


@dataclass
class TrainResult:
    """What a finished run leaves behind (identical on every rank except ``world``)."""

    model: tf.keras.Model
    history: dict[str, list[float]]
    test_metrics: dict[str, float]
    world: World
    scaled_lr: float
    throughput: tuple[float, float] | None


def fetch_on_rank0(world: World, path_exists: Callable[[], bool], fetch: Callable[[], None]) -> None:
    """Run ``fetch`` on rank 0 while the others wait; every rank raises DataError if it failed.

    In elastic runs each worker fetches for itself: one joining later must not wait on a collective that the
    running workers never make.
    """
    elastic = is_elastic()
    error = None
    if (world.is_root or elastic) and not path_exists():
        try:
            fetch()
        except Exception as exc:  # noqa: BLE001 - any failure becomes one line on every rank
            error = str(exc) or type(exc).__name__
    if not elastic:
        error = backends.current().broadcast_object(error, name="hvdtrain.fetch")
    if error:
        raise DataError(error)


def _training_callbacks(
    recipe: Recipe,
    config: TrainConfig,
    world: World,
    scaled_lr: float,
    steps: int,
    meter: hvd_callbacks.ThroughputMeter,
    resumed: bool,
) -> list[tf.keras.callbacks.Callback]:
    stack = backends.current().callbacks(config, scaled_lr, steps, broadcast=not is_elastic())
    stack += [
        hvd_callbacks.StopOnNonFiniteLoss(),
        AverageNonTrainable(),  # Horovod: batch-norm statistics the same on every rank before checkpoints
        meter,
    ]
    if not world.is_root:
        return stack
    if config.checkpoint_dir is not None:
        stack.append(
            hvd_callbacks.EpochCheckpoint(
                config.checkpoint_dir,
                recipe.name,
                config.to_dict(),
                world.size,
                every=config.checkpoint_every,
                keep=config.keep_checkpoints,
            )
        )
    if config.log_dir is not None:
        config.log_dir.mkdir(parents=True, exist_ok=True)
        stack.append(tf.keras.callbacks.CSVLogger(str(config.log_dir / "metrics.csv"), append=resumed))
        stack.append(hvd_callbacks.JsonLinesLogger(config.log_dir / "metrics.jsonl", append=resumed))
        if config.tensorboard:
            stack.append(tf.keras.callbacks.TensorBoard(log_dir=str(config.log_dir / "tensorboard")))
    return stack


def find_resume_point(recipe: Recipe, config: TrainConfig, world: World) -> checkpoint.Checkpoint | None:
    """Rank 0 looks for the newest usable checkpoint and sends it to every rank; any problem is raised everywhere.

    In elastic runs a worker may join while the others train, so nothing is sent here: rank 0 restores the
    checkpoint and Horovod's elastic state sync hands it to the others.
    """
    found: checkpoint.Checkpoint | None = None
    error = None
    if world.is_root and config.checkpoint_dir is not None:
        try:
            checkpoint.check_writable(config.checkpoint_dir)
            existing = checkpoint.list_checkpoints(config.checkpoint_dir)
            if config.resume == "never" and existing:
                raise ConfigError(
                    f"{config.checkpoint_dir} already holds checkpoints and --resume is never; "
                    "choose another --checkpoint-dir (nothing was overwritten)"
                )
            if config.resume != "never":
                found = checkpoint.load_latest(config.checkpoint_dir)
            if config.resume == "require" and found is None:
                raise ConfigError(f"no readable checkpoint in {config.checkpoint_dir} to resume from")
            if found is not None and found.recipe != recipe.name:
                raise ConfigError(
                    f"{found.path} was written by recipe {found.recipe!r}, not {recipe.name!r}; "
                    "choose another --checkpoint-dir"
                )
        except (ConfigError, DataError) as exc:
            error = (type(exc).__name__, str(exc))
    if not is_elastic():  # elastic runs must stay collective-free here; the state sync sends it later
        error, found = backends.current().broadcast_object((error, found), name="hvdtrain.resume")
    if error:
        raise (ConfigError if error[0] == "ConfigError" else DataError)(error[1])
    return found


def restore(model: tf.keras.Model, state: checkpoint.Checkpoint, scaled_lr: float) -> None:
    """Put the checkpoint's weights and optimizer state into ``model`` and set the LR for this world size."""
    try:
        model.set_weights(state.weights)
        variables = model.optimizer.variables
        if len(variables) != len(state.optimizer):
            raise ValueError(f"{len(state.optimizer)} optimizer variables saved, {len(variables)} expected")
        for variable, value in zip(variables, state.optimizer, strict=True):
            variable.assign(value)
    except ValueError as exc:
        raise ConfigError(f"{state.path} does not fit this model: {str(exc).splitlines()[0]}") from None
    model.optimizer.learning_rate.assign(scaled_lr)


def _progress_verbosity(world: World) -> int:
    """Keras ``verbose``: a live bar for one process on a terminal, one line per epoch under a launcher (whose
    ranks may see a pseudo-terminal), nothing on ranks > 0."""
    if not world.is_root:
        return 0
    return 1 if world.size == 1 and sys.stdout.isatty() else 2


class AverageNonTrainable(tf.keras.callbacks.Callback):
    """At each epoch end, average the model's non-trainable float weights (batch-norm moving statistics) over
    ranks: each rank updates them from its own batches only, and the model must be the same on every rank."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        average_non_trainable(self.model)


def average_non_trainable(model: tf.keras.Model) -> None:
    """Replace each non-trainable float weight of ``model`` by its mean over ranks (one allreduce for all)."""
    weights = [w for w in model.non_trainable_weights if "float" in str(w.dtype)]
    if not weights:
        return
    values = [np.asarray(w.numpy(), dtype=np.float64) for w in weights]
    size = backends.current().world().size
    # Horovod: one allreduce of all the statistics
    total = backends.current().global_sum(np.concatenate([v.ravel() for v in values]), name="hvdtrain.non_trainable")
    offset = 0
    for weight, value in zip(weights, values, strict=True):
        weight.assign((total[offset : offset + value.size] / size).reshape(value.shape))
        offset += value.size


def _metric_variables(model: tf.keras.Model) -> list[Any]:
    variables: list[Any] = []
    for metric in model.metrics:
        variables += [v for v in metric.variables if not any(v is seen for seen in variables)]
    return variables


def evaluate(model: tf.keras.Model, data: Data, batch_size: int, world: World) -> dict[str, float]:
    """Exact metrics over the whole test set, the same on every rank: each rank evaluates its shard once, the
    metrics' state variables are summed over ranks, and each result is computed from the sums."""
    model.evaluate(eval_dataset(data, batch_size, world.rank, world.size), verbose=0)
    variables = _metric_variables(model)
    local = [np.asarray(v.numpy(), dtype=np.float64) for v in variables]
    flat = np.concatenate([v.ravel() for v in local]) if local else np.zeros(0)
    # Horovod: one allreduce of every metric's state (totals, counts)
    total = backends.current().global_sum(flat, name="hvdtrain.evaluate")
    offset = 0
    for variable, value in zip(variables, local, strict=True):
        dtype = tf.as_dtype(variable.dtype).as_numpy_dtype
        variable.assign(total[offset : offset + value.size].reshape(value.shape).astype(dtype))
        offset += value.size
    results = model.get_metrics_result()
    return {name: float(value) for name, value in results.items() if np.ndim(value) == 0}


def train(recipe: Recipe, config: TrainConfig, comm: Any = None) -> TrainResult:
    """Train ``recipe`` data-parallel on every rank of the job and evaluate it on the test set.

    Under ``horovodrun --elastic`` the epochs run inside Horovod's elastic loop: when workers leave or join, the
    last committed state is restored on every rank and training goes on with shards, steps and LR for the new size.
    """
    config.validate()
    backend = backends.current()
    world = backend.init(comm)
    log = setup_logging(world.rank, config.log_all_ranks)
    log_defaults_applied(log, world.defaults_applied)
    elastic = is_elastic()
    if not elastic:
        check_world_size(world.size)
    tf.keras.utils.set_random_seed(config.seed + world.rank)

    data = as_data(recipe.load_data(config, world))
    log.info(
        "recipe %s: %d ranks, %d train / %d test samples (%s)",
        recipe.name,
        world.size,
        data.train.num_examples,
        data.test.num_examples,
        type(data.train).__name__,
    )
    model = recipe.build_model(config)
    scaled_lr = scale_lr(config.lr, world.size, config.lr_scaling)
    optimizer = backend.distributed_optimizer(recipe.build_optimizer(scaled_lr), config)
    model.compile(optimizer=optimizer, loss=recipe.loss, metrics=recipe.compile_metrics(), **backend.compile_options())
    optimizer.build(model.trainable_variables)  # the same optimizer variables on every rank, before any sync

    state = find_resume_point(recipe, config, world)
    first_epoch = 0
    if state is not None:
        restore(model, state, scaled_lr)
        first_epoch = min(state.epoch, config.epochs)
        log.info("resumed from %s: %d of %d epochs done", state.path, state.epoch, config.epochs)
        if state.world_size != world.size:
            old_lr = scale_lr(config.lr, state.world_size, config.lr_scaling)
            log.warning(
                "checkpoint written by %d ranks, now %d: learning rate rescaled %g -> %g",
                state.world_size,
                world.size,
                old_lr,
                scaled_lr,
            )

    meters: list[hvd_callbacks.ThroughputMeter] = []

    def fit_from(epoch: int, extra_callbacks: list[tf.keras.callbacks.Callback]) -> dict[str, list[float]]:
        """Run epochs ``epoch``..end on the world as it is now (elastic runs call this again after a reset)."""
        world = backend.world()
        steps_per_epoch(data.train.num_examples, config.batch_size, world.size)  # warns about oversized batches
        steps = data.train.steps(config.batch_size, world.size)
        lr = scale_lr(config.lr, world.size, config.lr_scaling)
        model.optimizer.learning_rate.assign(lr)
        log.info(
            "global batch %d = %d per rank x %d ranks; %d steps per epoch",
            config.batch_size * world.size,
            config.batch_size,
            world.size,
            steps,
        )
        log.info("learning rate %g = base %g scaled %s for %d ranks", lr, config.lr, config.lr_scaling, world.size)
        if epoch >= config.epochs:
            return {}
        validation = {}
        if recipe.validate_each_epoch:  # each rank's shard once (no collective until the epoch-end average)
            validation = {"validation_data": eval_dataset(data, config.batch_size, world.rank, world.size)}
        meters.append(hvd_callbacks.ThroughputMeter(steps * config.batch_size * world.size))
        callbacks = _training_callbacks(recipe, config, world, lr, steps, meters[-1], resumed=epoch > 0)
        return model.fit(
            train_dataset(data, config.batch_size, config.epochs, config.seed, world.rank, world.size, epoch),
            steps_per_epoch=steps,
            epochs=config.epochs,
            initial_epoch=epoch,
            **validation,
            callbacks=extra_callbacks + callbacks,
            shuffle=False,  # the order is ours: fixed by (seed, rank, epoch)
            verbose=_progress_verbosity(world),
        ).history

    if elastic:
        history = backend.run_elastic(model, first_epoch, fit_from, config.commit_every)
    else:
        history = fit_from(first_epoch, [])
    world = backend.world()
    summary = meters[-1].summary() if meters else None
    if summary is not None:
        log.info("throughput %.0f +- %.0f samples/s (global, after the first epoch)", summary[0], 1.96 * summary[1])
    average_non_trainable(model)  # the same model on every rank (also after a resume with nothing left to train)
    if recipe.evaluate is not None:
        test_metrics = recipe.evaluate(model, data, config, world)
    else:
        test_metrics = evaluate(model, data, config.batch_size, world)
    return TrainResult(model, history, test_metrics, world, scale_lr(config.lr, world.size, config.lr_scaling), summary)


def peer_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is how a collective ends when another rank dies or stalls: Horovod's shut-down error, or a
    TensorFlow op error raised by one of Horovod's ops (under Gloo a killed peer fails the step's allreduce with
    ``UnknownError ... HorovodAllreduce ...`` before the launcher stops this rank)."""
    if "Horovod has been shut down" in str(exc):
        return True
    return isinstance(exc, tf.errors.OpError) and "Horovod" in str(exc)


def run_recipe_command(recipe: Recipe, argv: Sequence[str] | None = None) -> int:
    """``python -m hvdtrain.recipes.<name> [options]``: train, print the test result on rank 0, return exit code."""

    def action(config: TrainConfig) -> int:
        try:
            result = train(recipe, config)
        except (ConfigError, DataError) as exc:
            return fail(str(exc))
        except hvd_callbacks.TrainingDiverged as exc:
            fail(str(exc))
            return EXIT_FAILURE
        except Exception as exc:
            if not peer_failed(exc):
                raise
            # A peer died or stalled past --stall-timeout; Horovod's (or the launcher's) report is above.
            fail("Horovod shut down because another rank failed or stalled (its report is above)")
            return EXIT_FAILURE
        if result.world.is_root:
            for name, value in sorted(result.test_metrics.items()):
                if name != "accuracy":
                    print(f"test {name} {value:.4f}")
            if "accuracy" in result.test_metrics:
                print(f"test accuracy {result.test_metrics['accuracy']:.4f}")
        sys.stdout.flush()
        return 0

    code = run_cli(recipe_command(recipe, action), argv, prog_name=f"python -m hvdtrain.recipes.{recipe.name}")
    return code if isinstance(code, int) else 0
