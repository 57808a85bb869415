from pathlib import Path

import pytest

from hvdtrain.config import ConfigError, TrainConfig


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch_size": 0}, "--batch-size must be >= 1, got 0"),
        ({"lr": 0.0}, "--lr must be > 0.0, got 0.0"),
        ({"lr": -1.0}, "--lr must be > 0.0"),
        ({"epochs": 0}, "--epochs must be >= 1"),
        ({"warmup_epochs": -1.0}, "--warmup-epochs must be >= 0.0"),
        ({"epochs": 2, "warmup_epochs": 3.0}, "--warmup-epochs (3) is longer than --epochs (2)"),
        ({"backward_passes_per_step": 0}, "--backward-passes-per-step must be >= 1"),
        ({"tensorboard": True}, "--tensorboard needs --log-dir"),
    ],
)
def test_bad_values_are_one_line_errors(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        TrainConfig().with_overrides(overrides).validate()
    assert message in str(err.value) and "\n" not in str(err.value)


def test_overrides_skip_none_and_reject_unknown_keys() -> None:
    base = TrainConfig(epochs=5)
    merged = base.with_overrides({"epochs": None, "lr": 0.5, "data_dir": Path("/d")})
    assert (merged.epochs, merged.lr, merged.data_dir) == (5, 0.5, Path("/d"))
    with pytest.raises(ConfigError, match="unknown option"):
        base.with_overrides({"epoch": 3})


def test_to_dict_is_json_friendly() -> None:
    assert TrainConfig(log_dir=Path("/x")).to_dict()["log_dir"] == "/x"
