import logging

import pytest

from hvdtrain.config import ConfigError
from hvdtrain.log import setup_logging
from hvdtrain.world_check import check_world_size, launched_size


def test_rank0_logs_info_with_its_rank(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(0).info("hello")
    assert capsys.readouterr().err == "[rank 0] hello\n"


def test_other_ranks_are_quiet_unless_asked(capsys: pytest.CaptureFixture[str]) -> None:
    log = setup_logging(1)
    log.info("hidden")
    log.warning("shown")
    assert capsys.readouterr().err == "[rank 1] shown\n"
    setup_logging(1, all_ranks=True).info("now visible")
    assert capsys.readouterr().err == "[rank 1] now visible\n"
    setup_logging(0, level=logging.INFO)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"OMPI_COMM_WORLD_SIZE": "4"}, 4),
        ({"HOROVOD_SIZE": "2", "OMPI_COMM_WORLD_SIZE": "4"}, 2),
        ({"SLURM_STEP_NUM_TASKS": "8"}, None),  # not inside an srun step
        ({"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "3"}, 8),
        ({"HVDTRAIN_EXPECTED_SIZE": "2", "SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"}, 2),
    ],
)
def test_launched_size(env: dict[str, str], expected: int | None) -> None:
    found = launched_size(env)
    assert (found[0] if found else None) == expected


def test_singletons_from_a_mislaunch_are_stopped() -> None:
    with pytest.raises(ConfigError, match=r"Horovod sees 1 rank\(s\) but srun started 4"):
        check_world_size(1, {"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "0"})
    check_world_size(4, {"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "0"})
    check_world_size(1, {})
