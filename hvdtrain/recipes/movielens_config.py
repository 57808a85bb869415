"""The movielens recipe's own options (no TensorFlow here: ``hvdtrain run movielens -h`` reads them without it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hvdtrain.config import TrainConfig, recipe_option


@dataclass(frozen=True)
class MovielensConfig(TrainConfig):
    """TrainConfig plus NeuMF's embedding sizes and the negatives sampled per training interaction."""

    negatives: int = field(
        default=4, metadata=recipe_option("Unseen items sampled per training interaction, each epoch.", min=1)
    )
    gmf_dim: int = field(default=8, metadata=recipe_option("Embedding size of the GMF tower.", min=1))
    mlp_dim: int = field(
        default=32,
        metadata=recipe_option("Embedding size of the MLP tower (its layers: this, half, a quarter).", min=4),
    )
