"""Train the digits recipe on every rank and save what each rank ended with, for the multi-process tests.

    mpirun -np 2 python tests/workers/sync_worker.py OUT_DIR [digits recipe options]

Writes OUT_DIR/rank-<rank>.npz: initial weights (before Horovod's broadcast), final weights, the learning rate the
optimizer holds at the end, the scaled LR the run computed, the world size, the test accuracy and the host name.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from hvdtrain.config import TrainConfig
from hvdtrain.options import recipe_command, run_cli
from hvdtrain.recipe import Recipe, train
from hvdtrain.recipes import digits


def flat(weights: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([w.ravel() for w in weights])


def stall_before_fit(original_fit: Callable[..., object], rank: int) -> Callable[..., object]:
    """Test hook: ``rank`` stays alive (Horovod's thread keeps negotiating) but never reaches an allreduce."""
    import time

    import horovod.tensorflow as hvd

    def fit(*args: object, **kwargs: object) -> object:
        if hvd.rank() == rank:
            time.sleep(3600)
        return original_fit(*args, **kwargs)

    return fit


def main() -> int:
    out_dir = Path(sys.argv[1])
    initial: list[np.ndarray] = []

    def build_model(config: TrainConfig) -> tf.keras.Model:
        model = digits.build_model(config)
        stall_rank = os.environ.get("SYNC_WORKER_STALL_RANK")  # this rank stops submitting collectives
        if stall_rank is not None:
            model.fit = stall_before_fit(model.fit, int(stall_rank))
        initial.append(flat(model.get_weights()))
        return model

    recipe = Recipe(
        name="digits",
        description="",
        build_model=build_model,
        load_data=digits.load_data,
        defaults=digits.recipe.defaults,
    )

    def action(config: TrainConfig) -> int:
        comm = None
        if os.environ.get("SYNC_WORKER_MPI4PY") == "1":  # hand Horovod an mpi4py communicator
            from mpi4py import MPI

            comm = MPI.COMM_WORLD
        result = train(recipe, config, comm=comm)
        np.savez(
            out_dir / f"rank-{result.world.rank}.npz",
            initial=initial[0],
            final=flat(result.model.get_weights()),
            lr=float(tf.keras.backend.get_value(result.model.optimizer.learning_rate)),
            scaled_lr=result.scaled_lr,
            size=result.world.size,
            accuracy=result.test_metrics["accuracy"],
            epochs_run=len(result.history.get("loss", [])),
            host=socket.gethostname(),
        )
        return 0

    return run_cli(recipe_command(recipe, action), sys.argv[2:], prog_name="sync_worker")


if __name__ == "__main__":
    sys.exit(main())
