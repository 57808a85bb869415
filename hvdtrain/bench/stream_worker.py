"""One rank of ``hvdtrain bench stream``: training on the streamed shards, then input-pipeline and model step rates.

    mpirun -np 2 python -m hvdtrain.bench.stream_worker SHARDS OUT_DIR STEPS BATCH

Writes OUT_DIR/rank-<rank>.json: this rank's peak RSS while training one epoch on the shards (the recipe's own
``train``, start-up included in its rate), then examples/s of the input pipeline alone (read, parse, augment, batch)
and of the model alone (ResNet-8 on one cached batch, without the allreduce).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

import tensorflow as tf

from hvdtrain.bench.runner import PROGRESS_MARK
from hvdtrain.recipe import train
from hvdtrain.recipes import cifar10
from hvdtrain.recipes.cifar10_config import Cifar10Config
from hvdtrain.sources import train_dataset


def rate(batches: int, batch: int, run: object) -> float:
    start = time.perf_counter()
    run()  # type: ignore[operator]
    return batches * batch / (time.perf_counter() - start)


def report_progress(start: float, every_s: float = 30.0) -> None:
    """Every ``every_s`` seconds while the epoch runs, rank 0 says how long it has trained and its RSS now."""
    while True:
        time.sleep(every_s)
        with open(f"/proc/{os.getpid()}/statm", encoding="ascii") as statm:
            rss_mib = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
        sys.stderr.write(
            f"{PROGRESS_MARK}rank 0 training: {time.perf_counter() - start:.0f} s, RSS {rss_mib:.0f} MiB\n"
        )
        sys.stderr.flush()


def main() -> int:
    shards, out_dir, steps, batch = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    if os.environ.get("OMPI_COMM_WORLD_RANK", "0") == "0":
        threading.Thread(target=report_progress, args=(time.perf_counter(),), daemon=True).start()
    config = Cifar10Config(data_dir=shards, depth=8, epochs=1, batch_size=batch, lr=0.01, warmup_epochs=0)
    start = time.perf_counter()
    result = train(cifar10.recipe, config)  # starts Horovod; one epoch over every shard
    elapsed = time.perf_counter() - start
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    world = result.world
    data = cifar10.load_data(config, world)
    train_rate = data.train.steps(batch, world.size) * batch / elapsed

    pipeline = train_dataset(data, batch, 1, config.seed, world.rank, world.size, 0).take(steps)
    input_rate = rate(steps, batch, lambda: [None for _ in pipeline])
    model = cifar10.build_model(config)
    model.compile(optimizer=cifar10.sgd(0.01), loss="sparse_categorical_crossentropy")
    cached = tf.data.Dataset.from_tensors(next(iter(pipeline.take(1)))).repeat(steps)
    model.fit(cached.take(2), verbose=0)  # trace first
    model_rate = rate(steps, batch, lambda: model.fit(cached, verbose=0))
    report = {
        "rank": world.rank,
        "size": world.size,
        "records": data.train.num_examples,
        "input_examples_per_s": input_rate,
        "model_examples_per_s": model_rate,
        "train_examples_per_s_incl_start": train_rate,
        "test_accuracy": result.test_metrics.get("accuracy"),
        "peak_rss_mib": peak_rss_mib,
    }
    (out_dir / f"rank-{world.rank}.json").write_text(json.dumps(report) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
