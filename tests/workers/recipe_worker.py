"""Train a registered recipe on every rank and save what each rank ended with, for the multi-process tests.

    mpirun -np 2 python tests/workers/recipe_worker.py OUT_DIR RECIPE [recipe options]

Writes OUT_DIR/rank-<rank>.npz: the final weights (flattened), the world size, and the test metrics this rank
computed (``metric_<name>``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from hvdtrain.config import TrainConfig
from hvdtrain.options import recipe_command, run_cli
from hvdtrain.recipe import train
from hvdtrain.recipes import load_recipe


def main() -> int:
    out_dir, recipe = Path(sys.argv[1]), load_recipe(sys.argv[2])

    def action(config: TrainConfig) -> int:
        result = train(recipe, config)
        np.savez(
            out_dir / f"rank-{result.world.rank}.npz",
            final=np.concatenate([w.ravel() for w in result.model.get_weights()]),
            size=result.world.size,
            **{f"metric_{name}": value for name, value in result.test_metrics.items()},
        )
        return 0

    return run_cli(recipe_command(recipe, action), sys.argv[3:], prog_name="recipe_worker")


if __name__ == "__main__":
    sys.exit(main())
