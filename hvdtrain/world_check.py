"""Start-up check that Horovod's world is the one the launcher started.

A mis-launch (e.g. ``srun -n 4`` with an MPI that does not speak Slurm's PMI) starts N singletons of size 1 that
would each train their own model. Every launcher leaves its process count in the environment; compare.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from hvdtrain.config import ConfigError

# (variable, who sets it), most specific first.
_SIZE_VARIABLES = (
    ("HVDTRAIN_EXPECTED_SIZE", "hvdtrain run"),
    ("HOROVOD_SIZE", "horovodrun"),
    ("OMPI_COMM_WORLD_SIZE", "mpirun"),
    ("PMI_SIZE", "the process manager"),
    ("SLURM_STEP_NUM_TASKS", "srun"),
)


def launched_size(env: Mapping[str, str] | None = None) -> tuple[int, str, str] | None:
    """(processes started, variable, launcher) from the environment, or None when launched alone."""
    env = os.environ if env is None else env
    for name, launcher in _SIZE_VARIABLES:
        value = env.get(name, "")
        if name == "SLURM_STEP_NUM_TASKS" and "SLURM_PROCID" not in env:
            continue  # only inside an srun step
        if value.isdigit() and int(value) > 0:
            return int(value), name, launcher
    return None


def check_world_size(size: int, env: Mapping[str, str] | None = None) -> None:
    """Raise ConfigError when Horovod's ``size`` differs from what the launcher started."""
    launched = launched_size(env)
    if launched is None or launched[0] == size:
        return
    count, name, launcher = launched
    hint = (
        "each process would train its own model; launch with horovodrun or mpirun, or srun --mpi=pmix with an MPI "
        "built for Slurm"
        if size == 1
        else "check the launcher's -np and host slots"
    )
    raise ConfigError(f"Horovod sees {size} rank(s) but {launcher} started {count} ({name}={count}): {hint}")
