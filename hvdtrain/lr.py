"""Learning-rate arithmetic: scaling by world size and the post-warmup schedule (pure functions, no TF)."""

from __future__ import annotations

import math

from hvdtrain.config import ConfigError


def scale_lr(base_lr: float, size: int, rule: str = "linear") -> float:
    """The learning rate for ``size`` ranks: linear (base x size), sqrt (base x sqrt(size)) or none (base)."""
    if size < 1:
        raise ConfigError(f"world size must be >= 1, got {size}")
    if rule == "linear":
        return base_lr * size
    if rule == "sqrt":
        return base_lr * math.sqrt(size)
    if rule == "none":
        return base_lr
    raise ConfigError(f"unknown LR scaling rule {rule!r} (choose linear, sqrt or none)")


def schedule_multiplier(schedule: str, epoch: float, warmup_epochs: float, epochs: int) -> float:
    """Multiplier on the scaled LR at (fractional) ``epoch`` once warmup is over."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        span = max(epochs - warmup_epochs, 1e-9)
        progress = min(max((epoch - warmup_epochs) / span, 0.0), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ConfigError(f"unknown LR schedule {schedule!r} (choose constant or cosine)")


def warmup_multiplier(epoch: float, size: int, warmup_epochs: float) -> float:
    """Horovod's warmup: from 1/size of the scaled LR at epoch 0 linearly up to all of it at ``warmup_epochs``."""
    return 1.0 / size * (epoch * (size - 1) / warmup_epochs + 1)


def lr_multiplier(
    epoch: float, steps_per_epoch: int, size: int, warmup_epochs: float, schedule: str, epochs: int
) -> float:
    """Multiplier on the scaled LR for the batch that starts at (fractional) ``epoch``.

    During warmup, the value Horovod's ``LearningRateWarmupCallback`` sets (which counts the batch as done, so each
    epoch ends on a round value); after it, :func:`schedule_multiplier`.
    """
    if epoch < warmup_epochs:
        return warmup_multiplier(min(epoch + 1.0 / steps_per_epoch, warmup_epochs), size, warmup_epochs)
    return schedule_multiplier(schedule, epoch, warmup_epochs, epochs)
