import math

import pytest

from hvdtrain.config import ConfigError
from hvdtrain.lr import lr_multiplier, scale_lr, schedule_multiplier


@pytest.mark.parametrize("size", [1, 2, 3, 8, 64])
def test_scaling_rules(size: int) -> None:
    assert scale_lr(0.01, size, "linear") == pytest.approx(0.01 * size)
    assert scale_lr(0.01, size, "sqrt") == pytest.approx(0.01 * math.sqrt(size))
    assert scale_lr(0.01, size, "none") == 0.01


def test_linear_is_the_default() -> None:
    assert scale_lr(0.1, 4) == pytest.approx(0.4)


@pytest.mark.parametrize(("size", "rule"), [(0, "linear"), (2, "cubic")])
def test_bad_scaling_input_is_an_error(size: int, rule: str) -> None:
    with pytest.raises(ConfigError):
        scale_lr(0.1, size, rule)


def test_cosine_runs_from_one_to_zero_after_warmup() -> None:
    assert schedule_multiplier("cosine", 2.0, warmup_epochs=2, epochs=10) == pytest.approx(1.0)
    assert schedule_multiplier("cosine", 6.0, warmup_epochs=2, epochs=10) == pytest.approx(0.5)
    assert schedule_multiplier("cosine", 10.0, warmup_epochs=2, epochs=10) == pytest.approx(0.0)
    assert schedule_multiplier("constant", 7.5, warmup_epochs=2, epochs=10) == 1.0
    with pytest.raises(ConfigError):
        schedule_multiplier("step", 1.0, 0, 10)


def test_warmup_matches_horovods_callback_batch_by_batch() -> None:
    """Horovod's LearningRateWarmupCallback sets, before batch b of epoch e (4 ranks, 2 warmup epochs, 5 steps),
    1/size x ((e + (b + 1)/steps) x (size - 1) / warmup + 1): from about 1/size up to exactly 1 at the warmup's end."""
    steps, size, warmup = 5, 4, 2.0
    for epoch in range(2):
        for batch in range(steps):
            done = epoch + (batch + 1) / steps
            expected = (done * (size - 1) / warmup + 1) / size
            assert lr_multiplier(epoch + batch / steps, steps, size, warmup, "constant", 10) == pytest.approx(expected)
    assert lr_multiplier(1 + 4 / steps, steps, size, warmup, "constant", 10) == pytest.approx(1.0)
    assert lr_multiplier(2.0, steps, size, warmup, "constant", 10) == 1.0


def test_schedule_follows_the_warmup() -> None:
    assert lr_multiplier(6.0, 10, 2, 2.0, "cosine", 10) == pytest.approx(0.5)  # halfway from epoch 2 to 10
    assert lr_multiplier(0.0, 10, 1, 0.0, "cosine", 10) == pytest.approx(1.0)
