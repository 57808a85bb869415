"""Train a registered recipe on every rank and save what each rank ended with, for the multi-process tests.

    horovodrun -np 2 python tests/workers/recipe_worker.py OUT_DIR RECIPE [recipe options]

Writes OUT_DIR/rank-<rank>.npz (the final weights, flattened; the world size) and OUT_DIR/rank-<rank>.json (the
test metrics that rank computed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from hvdtrain.config import TrainConfig
from hvdtrain.options import recipe_command, run_cli
from hvdtrain.recipe import train
from hvdtrain.recipes import load_recipe


def main() -> int:
    out_dir, name = Path(sys.argv[1]), sys.argv[2]
    recipe = load_recipe(name)

    def action(config: TrainConfig) -> int:
        result = train(recipe, config)
        rank = result.world.rank
        weights = np.concatenate([w.ravel() for w in result.model.get_weights()])
        np.savez(out_dir / f"rank-{rank}.npz", weights=weights, size=result.world.size)
        (out_dir / f"rank-{rank}.json").write_text(json.dumps(result.test_metrics))
        return 0

    return run_cli(recipe_command(recipe, action), sys.argv[3:], prog_name="recipe_worker")


if __name__ == "__main__":
    sys.exit(main())
