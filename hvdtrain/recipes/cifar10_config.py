"""The cifar10 recipe's own options (no TensorFlow here: ``hvdtrain run cifar10 -h`` reads them without it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hvdtrain.config import ConfigError, TrainConfig, recipe_option


@dataclass(frozen=True)
class Cifar10Config(TrainConfig):
    """TrainConfig plus the ResNet depth, weight decay, augmentation and the streaming shuffle buffer."""

    depth: int = field(
        default=20,
        metadata=recipe_option("ResNet depth, 6n+2: 20, 32, 56 (He et al. 2016), or 8 for a quick check.", min=8),
    )
    weight_decay: float = field(default=1e-4, metadata=recipe_option("Weight decay of the SGD update.", min=0.0))
    augment: bool = field(default=True, metadata=recipe_option("Pad-and-crop and horizontal flips of train images."))
    shuffle_buffer: int = field(
        default=10_000, metadata=recipe_option("Prepared shards: records in each rank's shuffle buffer.", min=1)
    )

    def validate(self) -> Cifar10Config:
        super().validate()
        if (self.depth - 2) % 6:
            raise ConfigError(f"--depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110, ...), got {self.depth}")
        return self
