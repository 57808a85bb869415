"""The imdb recipe's own options (no TensorFlow here: ``hvdtrain run imdb -h`` reads them without it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hvdtrain.config import TrainConfig, recipe_option


@dataclass(frozen=True)
class ImdbConfig(TrainConfig):
    """TrainConfig plus the text pipeline's and the model's sizes."""

    seq_len: int = field(
        default=256, metadata=recipe_option("Words per review (its last ones; shorter ones padded).", min=1)
    )
    vocab_size: int = field(
        default=20_000,
        metadata=recipe_option("Vocabulary: the most frequent training words, with padding and unknown.", min=3),
    )
    embedding_dim: int = field(default=64, metadata=recipe_option("Size of each word's embedding.", min=1))
    filters: int = field(default=128, metadata=recipe_option("Filters of the 1-D convolution.", min=1))
