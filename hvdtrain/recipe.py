"""The recipe base: a recipe names its model, data and defaults; ``train`` does the distributed rest.

recipe = Recipe(name="digits", description="...", build_model=build_model, load_data=load_data,
                defaults=TrainConfig(epochs=30, batch_size=32, lr=1e-3))
recipe.main()   # python -m hvdtrain.recipes.digits [options], alone, under horovodrun or under mpirun
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from hvdtrain import backends, checkpoint
from hvdtrain import callbacks as hvd_callbacks
from hvdtrain.config import ConfigError, TrainConfig
from hvdtrain.data import DataError, DataSplits, shard, steps_per_epoch
from hvdtrain.log import log_defaults_applied, setup_logging
from hvdtrain.lr import scale_lr
from hvdtrain.options import EXIT_FAILURE, fail, recipe_command, run_cli
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
    load_data: Callable[[TrainConfig, World], DataSplits]
    defaults: TrainConfig = field(default_factory=TrainConfig)
    build_optimizer: Callable[[float], tf.keras.optimizers.Optimizer] = adam
    loss: str = "sparse_categorical_crossentropy"
    metrics: tuple[str, ...] = ("accuracy",)

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


def epoch_order(n: int, samples: int, seed: int, rank: int, epoch: int) -> np.ndarray:
    """Indices of one rank's shard for one epoch: a permutation fixed by (seed, rank, epoch), repeated to ``samples``.

    Fixing the order per epoch makes a resumed run see exactly the batches the uninterrupted run would have seen.
    """
    return np.resize(np.random.default_rng([seed, rank, epoch]).permutation(n), samples)


def _train_dataset(
    x: np.ndarray, y: np.ndarray, config: TrainConfig, steps: int, rank: int, first_epoch: int
) -> tf.data.Dataset:
    """Batches of this rank's shard for epochs ``first_epoch``..end; each epoch's order is made when that epoch
    starts, so memory does not grow with the number of epochs."""
    samples = steps * config.batch_size

    def order_of(epoch: np.int64) -> np.ndarray:
        return epoch_order(len(x), samples, config.seed, rank, int(epoch)).astype(np.int64)

    def epoch_indices(epoch: tf.Tensor) -> tf.data.Dataset:
        order = tf.numpy_function(order_of, [epoch], tf.int64, stateful=False)
        return tf.data.Dataset.from_tensor_slices(tf.ensure_shape(order, [samples]))

    x_all, y_all = tf.constant(x), tf.constant(y)
    return (
        tf.data.Dataset.range(first_epoch, config.epochs)
        .flat_map(epoch_indices)
        .batch(config.batch_size)
        .map(lambda i: (tf.gather(x_all, i), tf.gather(y_all, i)), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def _eval_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, repeat: bool) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    return (ds.repeat() if repeat else ds).batch(batch_size).prefetch(tf.data.AUTOTUNE)


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
    stack += [hvd_callbacks.StopOnNonFiniteLoss(), meter]
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


def evaluate(model: tf.keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int, world: World) -> dict[str, float]:
    """Exact metrics over the whole test set: each rank evaluates its shard, sums are allreduced by sample count."""
    x_shard, y_shard = shard(x, world.rank, world.size), shard(y, world.rank, world.size)
    local = model.evaluate(_eval_dataset(x_shard, y_shard, batch_size, repeat=False), verbose=0, return_dict=True)
    names = sorted(local)
    weighted = np.array([local[n] * len(x_shard) for n in names] + [len(x_shard)], dtype=np.float64)
    total = backends.current().global_sum(weighted, name="hvdtrain.evaluate")
    return {n: float(v / total[-1]) for n, v in zip(names, total[:-1], strict=True)}


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

    data = recipe.load_data(config, world)
    log.info(
        "recipe %s: %d ranks, %d train / %d test samples", recipe.name, world.size, len(data.x_train), len(data.x_test)
    )
    model = recipe.build_model(config)
    scaled_lr = scale_lr(config.lr, world.size, config.lr_scaling)
    optimizer = backend.distributed_optimizer(recipe.build_optimizer(scaled_lr), config)
    model.compile(optimizer=optimizer, loss=recipe.loss, metrics=list(recipe.metrics), **backend.compile_options())
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
        steps = steps_per_epoch(len(data.x_train), config.batch_size, world.size)
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
        x_train, y_train = shard(data.x_train, world.rank, world.size), shard(data.y_train, world.rank, world.size)
        x_val, y_val = shard(data.x_test, world.rank, world.size), shard(data.y_test, world.rank, world.size)
        meters.append(hvd_callbacks.ThroughputMeter(steps * config.batch_size * world.size))
        callbacks = _training_callbacks(recipe, config, world, lr, steps, meters[-1], resumed=epoch > 0)
        return model.fit(
            _train_dataset(x_train, y_train, config, steps, world.rank, epoch),
            steps_per_epoch=steps,
            epochs=config.epochs,
            initial_epoch=epoch,
            validation_data=_eval_dataset(x_val, y_val, config.batch_size, repeat=True),
            validation_steps=steps_per_epoch(len(data.x_test), config.batch_size, world.size),
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
    test_metrics = evaluate(model, data.x_test, data.y_test, config.batch_size, world)
    return TrainResult(model, history, test_metrics, world, scale_lr(config.lr, world.size, config.lr_scaling), summary)


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
            if "Horovod has been shut down" not in str(exc):
                raise
            # A peer died or stalled past --stall-timeout; Horovod's own report (missing ranks) is above.
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
