"""Where this process sits in the job: the same for every back end."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class World:
    """This process's rank and the job's size, as Horovod sees them."""

    rank: int
    size: int
    local_rank: int
    local_size: int
    # What hvdtrain set before hvd.init() because the user had not (tuning.apply_runtime_defaults).
    defaults_applied: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def is_root(self) -> bool:
        return self.rank == 0


def is_elastic() -> bool:
    """Whether ``horovodrun --elastic`` started this process."""
    return os.environ.get("HOROVOD_ELASTIC") == "1"
