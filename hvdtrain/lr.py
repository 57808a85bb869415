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


STEP_POINTS = (0.5, 0.75)  # He et al. 2016 (CIFAR): x0.1 at 32k and 48k of 64k iterations
STEP_FACTOR = 0.1
SGDR_MULT = 2  # Loshchilov & Hutter 2017: each cycle twice as long as the one before


def schedule_multiplier(
    schedule: str, epoch: float, warmup_epochs: float, epochs: int, cycle_epochs: float = 10.0
) -> float:
    """Multiplier on the scaled LR at (fractional) ``epoch`` once warmup is over.

    constant: 1; step: x0.1 at 50% and x0.01 from 75% of the epochs after warmup; cosine: half a cosine from 1 to 0
    over the epochs after warmup; sgdr: cosine from 1 to 0 over ``cycle_epochs``, then again from 1 over twice as
    many epochs, and so on (warm restarts).
    """
    span = max(epochs - warmup_epochs, 1e-9)
    since = max(epoch - warmup_epochs, 0.0)
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        progress = since / span
        return STEP_FACTOR ** sum(progress >= point for point in STEP_POINTS)
    if schedule == "cosine":
        progress = min(since / span, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "sgdr":
        if cycle_epochs <= 0:
            raise ConfigError(f"--lr-cycle-epochs must be > 0, got {cycle_epochs}")
        start, length = 0.0, cycle_epochs
        while since >= start + length:  # a few dozen cycles at most: lengths double
            start, length = start + length, length * SGDR_MULT
        return 0.5 * (1.0 + math.cos(math.pi * (since - start) / length))
    raise ConfigError(f"unknown LR schedule {schedule!r} (choose constant, step, cosine or sgdr)")


def warmup_multiplier(epoch: float, size: int, warmup_epochs: float) -> float:
    """Horovod's warmup: from 1/size of the scaled LR at epoch 0 linearly up to all of it at ``warmup_epochs``."""
    return 1.0 / size * (epoch * (size - 1) / warmup_epochs + 1)


def lr_multiplier(
    epoch: float,
    steps_per_epoch: int,
    size: int,
    warmup_epochs: float,
    schedule: str,
    epochs: int,
    cycle_epochs: float = 10.0,
) -> float:
    """Multiplier on the scaled LR for the batch that starts at (fractional) ``epoch``.

    During warmup, the value Horovod's ``LearningRateWarmupCallback`` sets (which counts the batch as done, so each
    epoch ends on a round value); after it, :func:`schedule_multiplier`.
    """
    if epoch < warmup_epochs:
        return warmup_multiplier(min(epoch + 1.0 / steps_per_epoch, warmup_epochs), size, warmup_epochs)
    return schedule_multiplier(schedule, epoch, warmup_epochs, epochs, cycle_epochs)
