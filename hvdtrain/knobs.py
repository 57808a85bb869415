"""Horovod's runtime knobs, each defined once: flag -> environment variable -> conversion -> validation.

One row of :data:`KNOBS` per knob, the way Horovod's own ``horovod/runner/common/util/config_parser.py`` maps its
parameters to ``HOROVOD_*`` variables: the ``hvdtrain run`` flag (and ``[launch]`` preset key), the variables it
sets on every rank, horovodrun's flag(s), the value's type and range, and how a value becomes the variables' text.
:class:`HorovodKnobs` (a launch spec's knobs), ``LaunchConfig`` (the command line and presets) and ``build_command``
(horovodrun flags, ``mpirun -x``, the environment of ``--launcher none``) all read this table; ``hvdtrain.tuning``
(run on every rank) takes its variable names and formats from it.

Pure Python, standard library only: importing this module imports neither the launcher side, TensorFlow nor Horovod.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hvdtrain.config import range_problem

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "FATAL")  # horovodrun --log-level choices
MIB = 1024 * 1024
MAX_INT = (1 << 31) - 1  # Horovod reads its integer variables as C ints
MAX_FUSION_MB = 1 << 20  # 1 TiB
MAX_CYCLE_TIME_MS = 60_000.0
STALL_CHECK_DEFAULT_S = 60  # Horovod's default HOROVOD_STALL_CHECK_TIME_SECONDS
_INTERFACE_RE = re.compile(r"[A-Za-z0-9_.:-]+")


def format_number(value: float) -> str:
    """A number without a spurious ``.0`` (``5.0`` -> ``"5"``, ``0.5`` -> ``"0.5"``): what HOROVOD_CYCLE_TIME holds."""
    return str(int(value)) if value == int(value) else repr(float(value))


def interface_problem(name: object) -> str | None:
    """What is wrong with a network interface name (None if nothing): ``[A-Za-z0-9_.:-]+``, not starting with '-'
    (horovodrun hands it to ``/bin/sh`` unquoted)."""
    if not isinstance(name, str) or not _INTERFACE_RE.fullmatch(name) or name.startswith("-"):
        return f"invalid network interface {name!r}: use letters, digits, '_', '.', ':' and '-' only"
    return None


@dataclass(frozen=True)
class Knob:
    """One Horovod knob: where it comes from, what it sets, how its value is checked and written."""

    name: str  # the HorovodKnobs field
    option: str  # the LaunchConfig field and [launch] preset key; the flag is --option with dashes
    kind: type  # bool, int, float or str
    env: tuple[str, ...]  # the variables it sets on every rank (mpirun -x, --launcher none)
    horovodrun: tuple[str, ...]  # horovodrun's flag(s) for it (horovod/runner/launch.py)
    help: str
    to_env: Callable[[Any], tuple[str, ...]]  # a checked value -> the text of each variable in ``env``
    limits: Mapping[str, float] | None = None  # min / min_open / max of a number
    metavar: str | None = None
    requires: str | None = None  # another knob (by name) that must be set too
    check: Callable[[Any], Any] | None = None  # a str knob's check: the value normalised, or ValueError(problem)
    horovodrun_values: Callable[[Any], tuple[str, ...]] | None = None  # when horovodrun's unit is not the variable's

    @property
    def flag(self) -> str:
        """The ``hvdtrain run`` flag."""
        return "--" + self.option.replace("_", "-")

    def checked(self, value: Any) -> Any:
        """``value`` checked and normalised for this knob; ValueError with the problem (no name) if it cannot work."""
        if self.kind is bool:
            return bool(value)
        if self.kind in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"must be a finite number, got {value!r}")
            if (problem := range_problem(self.limits or {}, value)) is not None:
                raise ValueError(problem)
            if self.kind is int:
                if value != int(value):
                    raise ValueError(f"must be a whole number, got {value!r}")
                return int(value)
            return value
        if not isinstance(value, str):
            raise ValueError(f"must be a string, got {value!r}")
        return self.check(value) if self.check is not None else value

    def env_of(self, value: Any) -> dict[str, str]:
        """The variables for a checked, set ``value``."""
        return dict(zip(self.env, self.to_env(value), strict=True))

    def horovodrun_args(self, value: Any) -> list[str]:
        """horovodrun's flags for a checked, set ``value`` (a switch alone for a bool)."""
        if self.kind is bool:
            return list(self.horovodrun)
        values = self.horovodrun_values(value) if self.horovodrun_values else self.to_env(value)
        return [arg for pair in zip(self.horovodrun, values, strict=True) for arg in pair]


def check_path(value: str) -> str:
    """A path Horovod opens: non-empty, on one line, not an option."""
    if not value or "\0" in value or "\n" in value:
        raise ValueError(f"must be a non-empty path on one line, got {value!r}")
    if value.startswith("-"):
        raise ValueError(f"must not start with '-', got {value!r} (use ./{value})")
    return value


def check_interfaces(value: str) -> str:
    """A comma-separated list of network interfaces, duplicates dropped."""
    names = value.split(",")
    for name in names:
        if (problem := interface_problem(name)) is not None:
            raise ValueError(problem)
    return ",".join(dict.fromkeys(names))


def check_log_level(value: str) -> str:
    """One of :data:`LOG_LEVELS`, any case; returned in upper case."""
    if value.upper() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, got {value!r}")
    return value.upper()


def _fusion_mb(mb: float) -> tuple[str, ...]:
    if mb != int(mb):
        raise ValueError("horovodrun's --fusion-threshold-mb takes whole megabytes; use a whole number")
    return (format_number(mb),)


def _stall(seconds: int) -> tuple[str, str]:
    # Horovod never shuts down if the shutdown time is below the warning time, and checks once per warning time.
    return str(min(STALL_CHECK_DEFAULT_S, max(1, seconds // 2))), str(seconds)


def _on(value: bool) -> tuple[str, ...]:
    return ("1",)


KNOBS: tuple[Knob, ...] = (
    Knob(
        "network_interface",
        "network_interface",
        str,
        ("NCCL_SOCKET_IFNAME",),
        ("--network-interfaces",),
        "Network interface(s) for Horovod and NCCL, e.g. eth0 or ib0,eth0.",
        lambda names: (names,),
        metavar="IF",
        check=check_interfaces,
    ),
    Knob(
        "fusion_threshold_mb",
        "fusion_threshold_mb",
        float,
        ("HOROVOD_FUSION_THRESHOLD",),
        ("--fusion-threshold-mb",),
        "Tensor fusion buffer in MB; 0 disables fusion [Horovod: 64].",
        lambda mb: (str(round(mb * MIB)),),
        limits={"min": 0, "max": MAX_FUSION_MB},
        metavar="MB",
        horovodrun_values=_fusion_mb,
    ),
    Knob(
        "cycle_time_ms",
        "cycle_time_ms",
        float,
        ("HOROVOD_CYCLE_TIME",),
        ("--cycle-time-ms",),
        "Milliseconds between Horovod's fusion cycles.",
        lambda ms: (format_number(ms),),
        limits={"min": 0, "max": MAX_CYCLE_TIME_MS},
        metavar="MS",
    ),
    Knob(
        "cache_capacity",
        "cache_capacity",
        int,
        ("HOROVOD_CACHE_CAPACITY",),
        ("--cache-capacity",),
        "Response cache entries; 0 disables the cache [Horovod: 1024].",
        lambda n: (str(n),),
        limits={"min": 0, "max": MAX_INT},
        metavar="N",
    ),
    Knob(
        "hierarchical_allreduce",
        "hierarchical_allreduce",
        bool,
        ("HOROVOD_HIERARCHICAL_ALLREDUCE",),
        ("--hierarchical-allreduce",),
        "Allreduce within each host first, then across hosts.",
        _on,
    ),
    Knob(
        "timeline",
        "timeline",
        str,
        ("HOROVOD_TIMELINE",),
        ("--timeline-filename",),
        "Write a Horovod timeline (chrome://tracing) to FILE.",
        lambda path: (path,),
        metavar="FILE",
        check=check_path,
    ),
    Knob(
        "timeline_mark_cycles",
        "timeline_mark_cycles",
        bool,
        ("HOROVOD_TIMELINE_MARK_CYCLES",),
        ("--timeline-mark-cycles",),
        "Mark fusion cycles in the timeline.",
        _on,
        requires="timeline",
    ),
    Knob(
        "autotune",
        "autotune",
        bool,
        ("HOROVOD_AUTOTUNE",),
        ("--autotune",),
        "Let Horovod tune fusion and cycle time while training.",
        _on,
    ),
    Knob(
        "autotune_log",
        "autotune_log",
        str,
        ("HOROVOD_AUTOTUNE_LOG",),
        ("--autotune-log-file",),
        "Log the autotuner's trials to FILE (needs --autotune).",
        lambda path: (path,),
        metavar="FILE",
        requires="autotune",
        check=check_path,
    ),
    Knob(
        "stall_timeout_s",
        "stall_timeout",
        int,
        ("HOROVOD_STALL_CHECK_TIME_SECONDS", "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS"),
        ("--stall-check-warning-time-seconds", "--stall-check-shutdown-time-seconds"),
        "Shut down after ranks stall this long (warns at half, at most 60 s).",
        _stall,
        limits={"min": 1, "max": MAX_INT},
        metavar="SECONDS",
    ),
    Knob(
        "log_level",
        "horovod_log_level",
        str,
        ("HOROVOD_LOG_LEVEL",),
        ("--log-level",),
        "Horovod's own log level.",
        lambda level: (level,),
        check=check_log_level,
    ),
)
KNOB = {knob.name: knob for knob in KNOBS}


@dataclass(frozen=True)
class HorovodKnobs:
    """Horovod runtime parameters (one field per row of :data:`KNOBS`); ``None``/``False`` leaves Horovod's own
    default."""

    fusion_threshold_mb: float | None = None
    cycle_time_ms: float | None = None
    cache_capacity: int | None = None
    hierarchical_allreduce: bool = False
    timeline: str | None = None  # path of a Horovod timeline file (chrome://tracing), written by rank 0
    timeline_mark_cycles: bool = False
    autotune: bool = False
    autotune_log: str | None = None
    stall_timeout_s: float | None = None  # shut down after this many stalled seconds; warns at min(60, t/2)
    network_interface: str | None = None  # e.g. "eth0", "ib0" or "eth0,ib0"
    log_level: str | None = None  # TRACE, DEBUG, INFO, WARNING, ERROR or FATAL (any case)

    def values(self) -> dict[str, Any]:
        """The knobs that are set (not None, not False), in table order, unchecked."""
        return {k.name: v for k in KNOBS if (v := getattr(self, k.name)) is not None and v is not False}


def check_knobs(knobs: HorovodKnobs) -> dict[str, Any]:
    """The knobs that are set, checked and normalised (name -> value, in table order); ValueError naming the field
    (``cycle_time_ms must be a finite number, got nan``) if one cannot work."""
    checked: dict[str, Any] = {}
    for name, value in knobs.values().items():
        try:
            checked[name] = KNOB[name].checked(value)
        except ValueError as exc:
            raise ValueError(f"{name} {exc}") from None
    if (problem := requirement_problem(checked, lambda knob: knob.name)) is not None:
        raise ValueError(problem)
    return checked


def requirement_problem(
    values: Mapping[str, Any], label: Callable[[Knob], str], needed: Callable[[Knob], str] | None = None
) -> str | None:
    """A knob set without the knob it needs (``timeline_mark_cycles needs timeline``), named by ``label`` (the
    needed one by ``needed``, if given)."""
    for knob in KNOBS:
        if knob.requires is not None and values.get(knob.name) and not values.get(knob.requires):
            return f"{label(knob)} needs {(needed or label)(KNOB[knob.requires])}"
    return None


def knob_env(checked: Mapping[str, Any]) -> dict[str, str]:
    """The variables of checked knobs (what ``mpirun -x`` exports and ``--launcher none`` sets)."""
    return {name: text for knob, value in _set(checked) for name, text in knob.env_of(value).items()}


def horovodrun_flags(checked: Mapping[str, Any]) -> list[str]:
    """horovodrun's flags for checked knobs; ValueError where horovodrun cannot take a value."""
    return [arg for knob, value in _set(checked) for arg in knob.horovodrun_args(value)]


def _set(checked: Mapping[str, Any]) -> list[tuple[Knob, Any]]:
    return [(knob, value) for knob in KNOBS if (value := checked.get(knob.name)) is not None and value is not False]
