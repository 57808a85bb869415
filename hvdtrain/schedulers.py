"""Cluster scheduler environments: what a Slurm, PBS or LSF job was granted.

Each environment reads only the job's environment variables (and, for PBS, the
node file they point to), so tests can pass plain dicts.  Host names go through
:func:`hvdtrain.hosts.validate_hostname` before anything else sees them.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar

import hostlist

from hvdtrain.hosts import Host, total_slots, validate_hostname

__all__ = [
    "ENVIRONMENTS",
    "ClusterEnvironment",
    "LSFEnvironment",
    "PBSEnvironment",
    "SchedulerError",
    "SlurmEnvironment",
    "detect_environment",
    "expected_world_size",
]

_COUNT_RE = re.compile(r"[0-9]+")
_ZERO_REPEAT_RE = re.compile(r"\(x0+\)")


class SchedulerError(ValueError):
    """The scheduler's environment is malformed or inconsistent."""


def _positive_int(env: Mapping[str, str], key: str) -> int | None:
    """Return ``env[key]`` as a positive integer, None if unset or empty."""
    value = env.get(key, "").strip()
    if not value:
        return None
    if not _COUNT_RE.fullmatch(value) or int(value) < 1:
        raise SchedulerError(f"{key} must be a positive integer, got {env[key]!r}")
    return int(value)


def _checked_name(name: str, source: str) -> str:
    """Validate a host name taken from ``source``, raising SchedulerError."""
    try:
        return validate_hostname(name)
    except ValueError as exc:
        raise SchedulerError(f"{source}: {exc}") from None


class ClusterEnvironment(ABC):
    """A scheduler allocation seen through the job's environment variables."""

    name: ClassVar[str]
    job_id_variable: ClassVar[str]  # the variable holding the scheduler's job id

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env: Mapping[str, str] = os.environ if env is None else env

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def job_id(self) -> str:
        """The scheduler's id of this job (e.g. Slurm's ``SLURM_JOB_ID``), as the scheduler's commands take it."""
        return self.env.get(self.job_id_variable, "").strip()

    @staticmethod
    @abstractmethod
    def detect(env: Mapping[str, str]) -> bool:
        """Return True if ``env`` belongs to a job of this scheduler."""

    @abstractmethod
    def hosts(self) -> list[Host]:
        """Return the allocation as hosts x slots, in scheduler order."""

    def world_size(self) -> int:
        """Return the total number of slots (processes) granted."""
        return total_slots(self.hosts())


class SlurmEnvironment(ClusterEnvironment):
    """Slurm: ``SLURM_JOB_NODELIST`` plus ``SLURM_TASKS_PER_NODE`` / ``SLURM_NTASKS``."""

    name: ClassVar[str] = "slurm"
    job_id_variable: ClassVar[str] = "SLURM_JOB_ID"

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        """Slurm jobs set SLURM_JOB_ID and SLURM_JOB_NODELIST (or the older SLURM_NODELIST)."""
        return bool(env.get("SLURM_JOB_ID")) and bool(env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST"))

    def nodes(self) -> list[str]:
        """Return the expanded, validated node list, in Slurm's order."""
        key = "SLURM_JOB_NODELIST" if self.env.get("SLURM_JOB_NODELIST") else "SLURM_NODELIST"
        value = self.env.get(key, "").strip()
        if not value:
            raise SchedulerError("neither SLURM_JOB_NODELIST nor SLURM_NODELIST is set")
        try:
            names: list[str] = hostlist.expand_hostlist(value, allow_duplicates=True)
        except hostlist.BadHostlist as exc:
            raise SchedulerError(f"{key}={value!r} is not a valid host list: {exc}") from None
        if not names:
            raise SchedulerError(f"{key}={value!r} expands to no hosts")
        seen: set[str] = set()
        for name in names:
            _checked_name(name, key)
            if name.lower() in seen:
                raise SchedulerError(f"{key}={value!r} lists host {name!r} twice")
            seen.add(name.lower())
        return names

    def _ntasks(self) -> int | None:
        ntasks = _positive_int(self.env, "SLURM_NTASKS")
        return ntasks if ntasks is not None else _positive_int(self.env, "SLURM_NPROCS")

    def tasks_per_node(self, num_nodes: int) -> list[int]:
        """Return the task count of each of ``num_nodes`` nodes.

        From ``SLURM_TASKS_PER_NODE`` (compressed, e.g. ``4(x2),2``), else
        ``SLURM_NTASKS_PER_NODE`` on every node, else ``SLURM_NTASKS`` laid out
        in blocks as Slurm does (earlier nodes take the remainder), else 1 each.
        """
        value = self.env.get("SLURM_TASKS_PER_NODE", "").strip()
        if value:
            try:
                counts: list[int] = hostlist.parse_slurm_tasks_per_node(value)
            except hostlist.BadHostlist:
                raise SchedulerError(
                    f"SLURM_TASKS_PER_NODE={value!r} is malformed; expected counts like '4(x2),2'"
                ) from None
            if _ZERO_REPEAT_RE.search(value):
                raise SchedulerError(f"SLURM_TASKS_PER_NODE={value!r} has a repeat count of zero")
            if any(c < 1 for c in counts):
                raise SchedulerError(f"SLURM_TASKS_PER_NODE={value!r} gives a node no tasks")
            if len(counts) != num_nodes:
                raise SchedulerError(
                    f"SLURM_TASKS_PER_NODE={value!r} describes {len(counts)} nodes but the node list has {num_nodes}"
                )
            return counts
        per_node = _positive_int(self.env, "SLURM_NTASKS_PER_NODE")
        if per_node is not None:
            return [per_node] * num_nodes
        ntasks = self._ntasks()
        if ntasks is not None:
            if ntasks < num_nodes:
                raise SchedulerError(f"SLURM_NTASKS={ntasks} is fewer than the {num_nodes} allocated nodes")
            base, extra = divmod(ntasks, num_nodes)
            return [base + 1] * extra + [base] * (num_nodes - extra)
        return [1] * num_nodes

    def hosts(self) -> list[Host]:
        """Return the allocated nodes with their task counts."""
        names = self.nodes()
        return [Host(n, c) for n, c in zip(names, self.tasks_per_node(len(names)), strict=True)]

    def world_size(self) -> int:
        """Return SLURM_NTASKS, checked against the per-node counts (their sum if unset)."""
        total = total_slots(self.hosts())
        ntasks = self._ntasks()
        if ntasks is not None and ntasks != total:
            raise SchedulerError(f"SLURM_NTASKS={ntasks} but the tasks per node add up to {total}")
        return total


class PBSEnvironment(ClusterEnvironment):
    """PBS / Torque: ``PBS_NODEFILE`` lists one host per line, one line per slot."""

    name: ClassVar[str] = "pbs"
    job_id_variable: ClassVar[str] = "PBS_JOBID"

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        """PBS jobs set PBS_JOBID and PBS_NODEFILE."""
        return bool(env.get("PBS_JOBID")) and bool(env.get("PBS_NODEFILE"))

    def hosts(self) -> list[Host]:
        """Count the node file's lines per host, hosts in first-seen order."""
        path = self.env.get("PBS_NODEFILE", "")
        if not path:
            raise SchedulerError("PBS_NODEFILE is not set")
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise SchedulerError(f"cannot read PBS_NODEFILE {path!r}: {exc}") from None
        counts: dict[str, int] = {}
        spelling: dict[str, str] = {}
        for lineno, line in enumerate(lines, start=1):
            name = line.strip()
            if not name:
                continue
            _checked_name(name, f"{path}:{lineno}")
            key = name.lower()
            spelling.setdefault(key, name)
            counts[key] = counts.get(key, 0) + 1
        if not counts:
            raise SchedulerError(f"PBS_NODEFILE {path!r} lists no hosts")
        return [Host(spelling[k], c) for k, c in counts.items()]


class LSFEnvironment(ClusterEnvironment):
    """IBM LSF: ``LSB_MCPU_HOSTS`` is ``"hostA 4 hostB 4"``, used as is."""

    name: ClassVar[str] = "lsf"
    job_id_variable: ClassVar[str] = "LSB_JOBID"

    @staticmethod
    def detect(env: Mapping[str, str]) -> bool:
        """LSF jobs set LSB_JOBID and LSB_MCPU_HOSTS."""
        return bool(env.get("LSB_JOBID")) and bool(env.get("LSB_MCPU_HOSTS"))

    def hosts(self) -> list[Host]:
        """Parse the host/count pairs of LSB_MCPU_HOSTS."""
        value = self.env.get("LSB_MCPU_HOSTS", "")
        tokens = value.split()
        if not tokens:
            raise SchedulerError("LSB_MCPU_HOSTS is empty")
        if len(tokens) % 2:
            raise SchedulerError(f"LSB_MCPU_HOSTS={value!r} has an odd number of fields; expected 'host count' pairs")
        result: list[Host] = []
        seen: set[str] = set()
        for name, count in zip(tokens[::2], tokens[1::2], strict=True):
            _checked_name(name, "LSB_MCPU_HOSTS")
            if not _COUNT_RE.fullmatch(count) or int(count) < 1:
                raise SchedulerError(f"LSB_MCPU_HOSTS: count for {name!r} must be a positive integer, got {count!r}")
            if name.lower() in seen:
                raise SchedulerError(f"LSB_MCPU_HOSTS lists host {name!r} twice")
            seen.add(name.lower())
            result.append(Host(name, int(count)))
        return result


ENVIRONMENTS: tuple[type[ClusterEnvironment], ...] = (
    SlurmEnvironment,
    PBSEnvironment,
    LSFEnvironment,
)


def detect_environment(
    env: Mapping[str, str] | None = None,
) -> ClusterEnvironment | None:
    """Return the first scheduler (Slurm, PBS, LSF) whose job variables are set, else None."""
    env = os.environ if env is None else env
    for cls in ENVIRONMENTS:
        if cls.detect(env):
            return cls(env)
    return None


def expected_world_size(env: Mapping[str, str] | None = None) -> int | None:
    """Return the number of processes the scheduler granted, or None outside a job.

    Raises SchedulerError if the job's variables are malformed or inconsistent.
    """
    cluster = detect_environment(env)
    return None if cluster is None else cluster.world_size()
