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
        schedule_multiplier("exponential", 1.0, 0, 10)


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


def test_step_divides_by_ten_at_half_and_three_quarters_after_warmup() -> None:
    # He et al. 2016: 0.1 until 32k of 64k iterations, 0.01 until 48k, then 0.001; here 2 warmup + 8 epochs.
    values = [schedule_multiplier("step", e, warmup_epochs=2, epochs=10) for e in (2.0, 5.99, 6.0, 7.99, 8.0, 9.9)]
    assert values == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


def test_sgdr_restarts_with_cycles_doubling() -> None:
    """Loshchilov & Hutter: cosine from 1 to 0 over T0 epochs, restart at 1, then over 2 T0, 4 T0, ..."""

    def sgdr(epoch: float) -> float:
        return schedule_multiplier("sgdr", epoch, warmup_epochs=1, epochs=100, cycle_epochs=2)

    # cycles (after the 1 warmup epoch): [0, 2), [2, 6), [6, 14)
    assert sgdr(1.0) == pytest.approx(1.0) and sgdr(2.0) == pytest.approx(0.5)
    assert sgdr(2.999) == pytest.approx(0.0, abs=1e-5)
    assert sgdr(3.0) == pytest.approx(1.0)  # the first restart
    assert sgdr(5.0) == pytest.approx(0.5)  # halfway through the 4-epoch cycle
    assert sgdr(7.0) == pytest.approx(1.0) and sgdr(11.0) == pytest.approx(0.5)  # the 8-epoch cycle
    # After warmup, lr_multiplier is the schedule; the cycle length reaches it.
    assert lr_multiplier(5.0, 10, 4, 1.0, "sgdr", 100, 2.0) == pytest.approx(0.5)
