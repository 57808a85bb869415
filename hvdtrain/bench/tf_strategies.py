"""TensorFlow's own distributed training on the synthetic benchmark's model and data: the contenders of
``hvdtrain bench cluster`` that do not use Horovod.

- ``--strategy mwms``: ``tf.distribute.MultiWorkerMirroredStrategy`` (synchronous; its ring all-reduce over gRPC)
  with the custom training loop of TensorFlow's guide. Every worker runs this program with its own ``TF_CONFIG``.
- ``--strategy ps``: ``tf.distribute.ParameterServerStrategy`` (asynchronous): the ``chief`` task is the
  coordinator, which schedules training steps on the workers with a ``ClusterCoordinator`` and a custom loop; the
  ``worker`` and ``ps`` tasks run a gRPC server until they are stopped. Variables are sharded over the servers
  (``MinSizePartitioner``) on Keras 2; Keras 3 cannot train sharded variables, so there they are placed whole,
  round-robin.

Same model, data and batch per worker as ``python -m hvdtrain.recipes.synthetic`` (its options mean the same). The
chief announces the timed window on stdout (:mod:`hvdtrain.bench.window`).

    TF_CONFIG='{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]}, "task": {"type": "worker", "index": 0}}' \\
        python -m hvdtrain.bench.tf_strategies --strategy mwms --image-size 32 --batch-size 16
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from hvdtrain.backends import installed_keras_major
from hvdtrain.bench.runner import PROGRESS_MARK
from hvdtrain.options import fail, run_cli
from hvdtrain.recipes.synthetic import SyntheticConfig, build_model

STRATEGIES = ("mwms", "ps")


def _threads(tf: Any, threads: int | None) -> None:
    if threads is not None:  # before the first TensorFlow op
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def _batch(tf: Any, config: SyntheticConfig, size: int) -> tuple[Any, Any]:
    images = tf.random.uniform((size, config.image_size, config.image_size, 3))
    labels = tf.random.uniform((size,), maxval=config.num_classes, dtype=tf.int64)
    return images, labels


def _announce(model: Any) -> None:
    from hvdtrain.bench.window import announce_model

    announce_model(sum(int(w.shape.num_elements()) for w in model.trainable_weights), len(model.trainable_weights))


def run_mwms(config: SyntheticConfig) -> None:
    """One worker of MultiWorkerMirroredStrategy: the custom training loop of TensorFlow's guide (Keras 3's
    ``model.fit`` fails under this strategy on TF 2.21: "Attempt to convert a value (PerReplica...)")."""
    import tensorflow as tf

    from hvdtrain.bench.window import Window

    _threads(tf, config.threads)
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    workers = strategy.num_replicas_in_sync
    global_batch = config.batch_size * workers
    chief = strategy.cluster_resolver.task_id == 0
    with strategy.scope():
        model = build_model(config)
        optimizer = tf.keras.optimizers.SGD(learning_rate=config.lr)
        optimizer.build(model.trainable_variables)  # its variables now, not inside the traced step
    # One global batch per step, read whole by every worker and split by the strategy (no file to shard).
    dataset = tf.data.Dataset.from_tensors(_batch(tf, config, global_batch)).repeat()
    data_options = tf.data.Options()
    data_options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    iterator = iter(strategy.experimental_distribute_dataset(dataset.with_options(data_options)))

    @tf.function
    def train_step(iterator: Any) -> Any:
        def replica_fn(batch: Any) -> Any:
            images, labels = batch
            with tf.GradientTape() as tape:
                predictions = model(images, training=True)
                per_example = tf.keras.losses.sparse_categorical_crossentropy(labels, predictions)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            gradients = tape.gradient(loss, model.trainable_variables)
            # The optimizer sums the gradients over the workers (the strategy's all-reduce) before applying them.
            optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
            return loss

        losses = strategy.run(replica_fn, args=(next(iterator),))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    if chief:
        _announce(model)
    for _ in range(max(config.num_warmup_batches, 1)):
        train_step(iterator)
    steps = config.num_iters * config.num_batches_per_iter
    window = Window() if chief else None
    if window is not None:
        window.start()
    for _ in range(steps):
        loss = train_step(iterator)
    float(loss)  # wait for the last step
    if window is not None:
        window.end(steps, steps * global_batch)
        print(f"Total img/sec on {workers} worker(s): {steps * global_batch / (window.seconds or 1):.1f}", flush=True)


def run_ps(config: SyntheticConfig) -> None:
    """A ParameterServerStrategy task: the chief coordinates the training; workers and ps serve until stopped."""
    import tensorflow as tf

    from hvdtrain.bench.window import Window

    _threads(tf, config.threads)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if resolver.task_type in ("worker", "ps"):
        server = tf.distribute.Server(
            resolver.cluster_spec(), job_name=resolver.task_type, task_index=resolver.task_id, protocol="grpc"
        )
        server.join()
        return
    workers = len(resolver.cluster_spec().as_dict().get("worker", []))
    servers = len(resolver.cluster_spec().as_dict().get("ps", []))
    # Variables sharded across the servers, as TensorFlow's guide does it: without a partitioner they are placed
    # whole, round-robin, and with kernels and biases alternating every kernel lands on the same server. Keras 3
    # cannot train ShardedVariables ("'ShardedVariable' object has no attribute 'handle'"): there they stay whole.
    partitioner = None
    if installed_keras_major() == 2:
        partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
            min_shard_bytes=256 << 10, max_shards=servers
        )
    strategy = tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)
    placement = "sharded" if partitioner else "whole, round-robin"
    print(f"{PROGRESS_MARK}variables {placement} over {servers} parameter server(s)", flush=True)
    with strategy.scope():
        model = build_model(config)
        optimizer = tf.keras.optimizers.SGD(learning_rate=config.lr)
        optimizer.build(model.trainable_variables)
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)

    def dataset_fn() -> Any:
        return tf.data.Dataset.from_tensors(_batch(tf, config, config.batch_size)).repeat()

    iterator = iter(coordinator.create_per_worker_dataset(dataset_fn))

    @tf.function
    def train_step(iterator: Any) -> Any:
        def replica_fn(batch: Any) -> Any:
            images, labels = batch
            with tf.GradientTape() as tape:
                predictions = model(images, training=True)
                # Each worker applies its own gradients (asynchronous): a plain mean over its batch.
                loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(labels, predictions))
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
            return loss

        return strategy.run(replica_fn, args=(next(iterator),))

    _announce(model)
    warmup = max(config.num_warmup_batches, 1) * workers
    for _ in range(warmup):
        coordinator.schedule(train_step, args=(iterator,))
    coordinator.join()
    # The same samples as a synchronous run: a "step" is one batch per worker (the global batch), here scheduled as
    # `workers` independent worker steps that run as the workers are free.
    steps = config.num_iters * config.num_batches_per_iter
    window = Window()
    window.start()
    for _ in range(steps * workers):
        coordinator.schedule(train_step, args=(iterator,))
    coordinator.join()
    samples = steps * workers * config.batch_size
    window.end(steps, samples)
    print(f"Total img/sec on {workers} worker(s): {samples / (window.seconds or 1):.1f}", flush=True)


@click.command(
    name="tf_strategies",
    help="One task of MultiWorkerMirroredStrategy or ParameterServerStrategy training the synthetic model.",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option("--strategy", type=click.Choice(STRATEGIES), required=True)
@click.option("--model", default="ResNet50", show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True, help="Batch size per worker.")
@click.option("--image-size", type=int, default=224, show_default=True)
@click.option("--num-classes", type=int, default=1000, show_default=True)
@click.option("--num-warmup-batches", type=int, default=10, show_default=True)
@click.option("--num-batches-per-iter", type=int, default=10, show_default=True)
@click.option("--num-iters", type=int, default=10, show_default=True)
@click.option("--threads", type=int, default=None)
@click.option("--depth", type=int, default=100, show_default=True)
@click.option("--width", type=int, default=64, show_default=True)
def command(strategy: str, **values: Any) -> int:
    from hvdtrain.recipes.synthetic import config_problem

    config = SyntheticConfig(**values)
    problem = config_problem(config)
    if problem is not None:
        return fail(problem)
    if "TF_CONFIG" not in os.environ:
        return fail("TF_CONFIG is not set: every task needs the cluster and its own task in it")
    try:
        json.loads(os.environ["TF_CONFIG"])
    except ValueError:
        return fail("TF_CONFIG is not valid JSON")
    (run_mwms if strategy == "mwms" else run_ps)(config)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    code = run_cli(command, argv, prog_name="python -m hvdtrain.bench.tf_strategies")
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
