"""Turn a typed launch spec into the argv and environment for ``horovodrun``, ``mpirun`` or a plain process.

Pure Python: importing this module imports neither TensorFlow nor Horovod, so ``--dry-run`` works anywhere.

Flag names, environment names and the Open MPI arguments mirror Horovod 0.28.1
(``horovod/runner/launch.py``, ``horovod/runner/mpi_run.py``, ``horovod/runner/common/util/config_parser.py``).

Shell safety: both of horovodrun's launch paths hand a single command string to ``/bin/sh``
(``mpi_run`` via ``os.execve('/bin/sh', ['/bin/sh', '-c', cmd])``, ``gloo_run`` via ``subprocess.Popen(shell=True)``).
horovodrun quotes each program argument (and, for Gloo, each environment *value*) with ``shlex.quote``, but
interpolates host names, network interface names and environment variable *names* unquoted. So every host name,
interface name and variable name is validated here, and program arguments are passed as separate argv items.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hvdtrain.hosts import Host, format_hosts_arg, total_slots, validate_hostname

__all__ = [
    "HorovodKnobs",
    "Host",
    "LaunchCommand",
    "LaunchError",
    "LaunchSpec",
    "build_command",
    "validate_interface",
]

Launcher = Literal["horovodrun", "mpirun", "none"]
Controller = Literal["gloo", "mpi"]

LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "FATAL")  # horovodrun --log-level choices
STALL_CHECK_DEFAULT_S = 60  # Horovod's default HOROVOD_STALL_CHECK_TIME_SECONDS
LARGE_CLUSTER_HOSTS = 64  # horovod/runner/mpi_run.py _LARGE_CLUSTER_THRESHOLD
# What horovod/runner/mpi_run.py passes to Open MPI (_NO_BINDING_ARGS, then _OMPI_FLAGS).
OMPI_BINDING_ARGS = ("-bind-to", "none", "-map-by", "slot")
OMPI_FLAGS = ("-mca", "pml", "ob1", "-mca", "btl", "^openib")
ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
DISCOVERY_SCRIPT = Path(__file__).with_name("elastic_hosts.sh")  # hvdtrain's elastic host discovery
ELASTIC_COOLDOWN_S = (1, 30)  # horovodrun --blacklist-cooldown-range: a failed host is retried after 2 s, 4 s, ...

_INTERFACE_RE = re.compile(r"[A-Za-z0-9_.:-]+")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SAFE_PATH_RE = re.compile(r"[A-Za-z0-9_./+-]+")


class LaunchError(ValueError):
    """A launch spec that cannot work; the message is one line meant for the user."""


@dataclass(frozen=True)
class HorovodKnobs:
    """Horovod runtime parameters; ``None``/``False`` leaves Horovod's own default."""

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


@dataclass(frozen=True)
class Elastic:
    """``horovodrun --elastic``: ranks may leave and join between ``min_np`` and ``max_np`` (Gloo only).

    Hosts come from ``discovery_script`` (prints ``host:slots`` lines, re-run every second) or, without one, the
    fixed ``-H`` hosts.
    """

    min_np: int
    max_np: int
    discovery_script: str | None = None


@dataclass(frozen=True)
class LaunchSpec:
    """What to run, on how many ranks and hosts, with which launcher and knobs.

    ``program`` items are passed as separate argv items; horovodrun quotes each with ``shlex.quote``
    before its ``/bin/sh`` sees it, and mpirun/none never involve a shell.
    """

    program: Sequence[str]
    np: int
    hosts: Sequence[Host] = ()  # empty = localhost with np slots
    launcher: Launcher = "horovodrun"
    controller: Controller | None = None  # horovodrun --gloo/--mpi; mpirun implies MPI
    knobs: HorovodKnobs = HorovodKnobs()
    allow_run_as_root: bool = False  # mpirun: --allow-run-as-root; otherwise OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM)=1 in env
    extra_env: Mapping[str, str] = field(default_factory=dict)  # forwarded explicitly (-x for mpirun)
    elastic: Elastic | None = None  # horovodrun only


@dataclass(frozen=True)
class LaunchCommand:
    """The argv to execute and the variables to add to the launching process's environment."""

    argv: list[str]
    env: dict[str, str]

    def shell_line(self) -> str:
        """``NAME=value ... argv``, every item ``shlex.quote``-d, ready to paste into a POSIX shell."""
        parts = [f"{name}={shlex.quote(value)}" for name, value in self.env.items()]
        parts += [shlex.quote(arg) for arg in self.argv]
        return " ".join(parts)


def validate_interface(name: object) -> str:
    """Return a network interface name matching ``[A-Za-z0-9_.:-]+`` (not starting with '-'), else raise."""
    if not isinstance(name, str) or not _INTERFACE_RE.fullmatch(name) or name.startswith("-"):
        raise LaunchError(f"invalid network interface {name!r}: use letters, digits, '_', '.', ':' and '-' only")
    return name


def _interfaces(value: str) -> str:
    """Validate a comma-separated interface list and return it normalised."""
    if not isinstance(value, str):
        raise LaunchError(f"network_interface must be a string, got {value!r}")
    names = [validate_interface(part) for part in value.split(",")]
    return ",".join(dict.fromkeys(names))


def _number(name: str, value: object, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LaunchError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise LaunchError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return value


def _whole(name: str, value: object, *, allow_zero: bool) -> int:
    number = _number(name, value, allow_zero=allow_zero)
    if number != int(number):
        raise LaunchError(f"{name} must be a whole number, got {value!r}")
    return int(number)


def _fmt(value: float) -> str:
    """Format a number without a spurious ``.0`` (``5.0`` -> ``5``, ``0.5`` -> ``0.5``)."""
    return str(int(value)) if value == int(value) else repr(float(value))


def _path(name: str, value: object) -> str:
    if not isinstance(value, str) or not value or "\0" in value or "\n" in value:
        raise LaunchError(f"{name} must be a non-empty path on one line, got {value!r}")
    if value.startswith("-"):
        raise LaunchError(f"{name} must not start with '-', got {value!r} (use ./{value})")
    return value


@dataclass(frozen=True)
class _Knobs:
    """Validated knob values, already formatted as strings."""

    fusion_mb: str | None  # whole MB for horovodrun (None if fractional)
    fusion_bytes: str | None
    cycle_ms: str | None
    cache: str | None
    hierarchical: bool
    timeline: str | None
    mark_cycles: bool
    autotune: bool
    autotune_log: str | None
    stall_warn_s: str | None
    stall_shutdown_s: str | None
    interfaces: str | None
    log_level: str | None

    def env(self) -> dict[str, str]:
        """The knobs as Horovod environment variables (names from horovod/runner/common/util/config_parser.py)."""
        pairs = [
            ("HOROVOD_FUSION_THRESHOLD", self.fusion_bytes),
            ("HOROVOD_CYCLE_TIME", self.cycle_ms),
            ("HOROVOD_CACHE_CAPACITY", self.cache),
            ("HOROVOD_HIERARCHICAL_ALLREDUCE", "1" if self.hierarchical else None),
            ("HOROVOD_TIMELINE", self.timeline),
            ("HOROVOD_TIMELINE_MARK_CYCLES", "1" if self.mark_cycles else None),
            ("HOROVOD_AUTOTUNE", "1" if self.autotune else None),
            ("HOROVOD_AUTOTUNE_LOG", self.autotune_log),
            ("HOROVOD_STALL_CHECK_TIME_SECONDS", self.stall_warn_s),
            ("HOROVOD_STALL_SHUTDOWN_TIME_SECONDS", self.stall_shutdown_s),
            ("HOROVOD_LOG_LEVEL", self.log_level),
        ]
        return {name: value for name, value in pairs if value is not None}

    def horovodrun_flags(self) -> list[str]:
        """The knobs as horovodrun's own flags (horovod/runner/launch.py)."""
        flags: list[str] = []
        if self.interfaces is not None:
            flags += ["--network-interfaces", self.interfaces]
        if self.fusion_bytes is not None:
            if self.fusion_mb is None:
                raise LaunchError("horovodrun's --fusion-threshold-mb takes whole megabytes; use a whole number")
            flags += ["--fusion-threshold-mb", self.fusion_mb]
        if self.cycle_ms is not None:
            flags += ["--cycle-time-ms", self.cycle_ms]
        if self.cache is not None:
            flags += ["--cache-capacity", self.cache]
        if self.hierarchical:
            flags.append("--hierarchical-allreduce")
        if self.timeline is not None:
            flags += ["--timeline-filename", self.timeline]
        if self.mark_cycles:
            flags.append("--timeline-mark-cycles")
        if self.autotune:
            flags.append("--autotune")
        if self.autotune_log is not None:
            flags += ["--autotune-log-file", self.autotune_log]
        if self.stall_warn_s is not None and self.stall_shutdown_s is not None:
            flags += ["--stall-check-warning-time-seconds", self.stall_warn_s]
            flags += ["--stall-check-shutdown-time-seconds", self.stall_shutdown_s]
        if self.log_level is not None:
            flags += ["--log-level", self.log_level]
        return flags


def _check_knobs(knobs: HorovodKnobs) -> _Knobs:
    if not isinstance(knobs, HorovodKnobs):
        raise LaunchError(f"knobs must be a HorovodKnobs, got {type(knobs).__name__}")
    fusion_mb = fusion_bytes = None
    if knobs.fusion_threshold_mb is not None:  # 0 disables tensor fusion
        mb = _number("fusion_threshold_mb", knobs.fusion_threshold_mb, allow_zero=True)
        fusion_bytes = str(round(mb * 1024 * 1024))
        fusion_mb = _fmt(mb) if mb == int(mb) else None
    cycle = None
    if knobs.cycle_time_ms is not None:
        cycle = _fmt(_number("cycle_time_ms", knobs.cycle_time_ms, allow_zero=True))
    cache = None
    if knobs.cache_capacity is not None:  # 0 disables the response cache
        if isinstance(knobs.cache_capacity, float):
            raise LaunchError(f"cache_capacity must be an integer, got {knobs.cache_capacity!r}")
        cache = str(_whole("cache_capacity", knobs.cache_capacity, allow_zero=True))
    timeline = None if knobs.timeline is None else _path("timeline", knobs.timeline)
    if knobs.timeline_mark_cycles and timeline is None:
        raise LaunchError("timeline_mark_cycles needs timeline (a timeline file path)")
    autotune_log = None if knobs.autotune_log is None else _path("autotune_log", knobs.autotune_log)
    if autotune_log is not None and not knobs.autotune:
        raise LaunchError("autotune_log needs autotune=True")
    warn = shutdown = None
    if knobs.stall_timeout_s is not None:
        seconds = _whole("stall_timeout_s", knobs.stall_timeout_s, allow_zero=False)
        # Horovod never shuts down if the shutdown time is below the warning time, and checks once per warning time.
        warn, shutdown = str(min(STALL_CHECK_DEFAULT_S, max(1, seconds // 2))), str(seconds)
    interfaces = None if knobs.network_interface is None else _interfaces(knobs.network_interface)
    level = None
    if knobs.log_level is not None:
        if not isinstance(knobs.log_level, str) or knobs.log_level.upper() not in LOG_LEVELS:
            raise LaunchError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {knobs.log_level!r}")
        level = knobs.log_level.upper()
    return _Knobs(
        fusion_mb=fusion_mb,
        fusion_bytes=fusion_bytes,
        cycle_ms=cycle,
        cache=cache,
        hierarchical=bool(knobs.hierarchical_allreduce),
        timeline=timeline,
        mark_cycles=bool(knobs.timeline_mark_cycles),
        autotune=bool(knobs.autotune),
        autotune_log=autotune_log,
        stall_warn_s=warn,
        stall_shutdown_s=shutdown,
        interfaces=interfaces,
        log_level=level,
    )


def _check_program(program: object) -> list[str]:
    if isinstance(program, str) or not isinstance(program, Sequence) or not program:
        raise LaunchError("program must be a non-empty list of arguments, e.g. [sys.executable, '-m', 'pkg']")
    args = list(program)
    for arg in args:
        if not isinstance(arg, str) or "\0" in arg:
            raise LaunchError(f"program arguments must be strings without NUL bytes, got {arg!r}")
    if not args[0] or args[0].startswith("-"):
        raise LaunchError(f"program must start with an executable, not {args[0]!r}")
    return args


def _check_hosts(hosts: object, np: int) -> str:
    """Validate hosts against np and return the ``-H`` value (``h1:4,h2:4``, or ``localhost:np``)."""
    if isinstance(hosts, str) or not isinstance(hosts, Sequence):
        raise LaunchError(f"hosts must be a list of Host(name, slots), got {hosts!r}")
    if not hosts:
        return f"localhost:{np}"
    seen: set[str] = set()
    for host in hosts:
        if not isinstance(host, Host):
            raise LaunchError(f"hosts must be Host(name, slots) items, got {host!r}")
        try:  # checked again: object.__setattr__ can forge a Host past its own __post_init__ checks
            validate_hostname(host.name)
        except (TypeError, ValueError) as exc:
            raise LaunchError(str(exc)) from None
        if isinstance(host.slots, bool) or not isinstance(host.slots, int) or host.slots < 1:
            raise LaunchError(f"host {host.name!r} needs slots >= 1, got {host.slots!r}")
        if host.name.lower() in seen:
            raise LaunchError(f"host {host.name!r} is listed twice")
        seen.add(host.name.lower())
    total = total_slots(hosts)
    if np > total:
        raise LaunchError(f"-np {np} is more than the {total} slot(s) on {len(hosts)} host(s)")
    return format_hosts_arg(hosts)


def _check_env(extra_env: object, reserved: set[str]) -> dict[str, str]:
    if not isinstance(extra_env, Mapping):
        raise LaunchError(f"extra_env must be a mapping of names to strings, got {extra_env!r}")
    env: dict[str, str] = {}
    for name, value in extra_env.items():
        if not isinstance(name, str) or not _ENV_NAME_RE.fullmatch(name):
            raise LaunchError(f"invalid environment variable name {name!r}")
        if not isinstance(value, str) or "\0" in value:
            raise LaunchError(f"environment variable {name} must be a string without NUL bytes, got {value!r}")
        if name in reserved:
            raise LaunchError(f"extra_env sets {name}, which the knobs already set; set it in one place only")
        env[name] = value
    return env


def _elastic_args(elastic: Elastic, spec: LaunchSpec, np: int, hosts_arg: str) -> tuple[list[str], dict[str, str]]:
    """``-np N --min-np A --max-np B``, where the hosts come from, the blacklist cooldown; and the variables for
    hvdtrain's discovery script.

    horovodrun's fixed ``-H`` hosts need two hosts or more (``Cannot run in fault tolerance mode with fewer than 2
    hosts``), and a host whose worker fails is blacklisted. So a single host, and any user discovery script, go
    through :data:`DISCOVERY_SCRIPT`, which lists one machine under two names (see the script); with the cooldown a
    blacklisted host comes back.
    """
    for name, value in (("min_np", elastic.min_np), ("max_np", elastic.max_np)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LaunchError(f"elastic {name} must be an integer >= 1, got {value!r}")
    if not elastic.min_np <= np <= elastic.max_np:
        raise LaunchError(
            f"elastic training needs --min-np <= -np <= --max-np, got {elastic.min_np}, {np}, {elastic.max_np}"
        )
    args = ["-np", str(np), "--min-np", str(elastic.min_np), "--max-np", str(elastic.max_np)]
    args += ["--blacklist-cooldown-range", *map(str, ELASTIC_COOLDOWN_S)]
    discovery = ["--host-discovery-script", str(DISCOVERY_SCRIPT)]
    if elastic.discovery_script is None:
        if spec.hosts and elastic.max_np > total_slots(spec.hosts):
            raise LaunchError(f"--max-np {elastic.max_np} is more than the {total_slots(spec.hosts)} slot(s) of -H")
        if len(spec.hosts) >= 2:
            return [*args, "-H", hosts_arg], {}
        return [*args, *discovery], {
            "HVDTRAIN_ELASTIC_HOSTS": hosts_arg if spec.hosts else f"localhost:{elastic.max_np}"
        }
    if spec.hosts:
        raise LaunchError("give elastic hosts by -H or by a discovery script, not both")
    script = _path("discovery script", elastic.discovery_script)
    if not _SAFE_PATH_RE.fullmatch(script):  # kept strict: it used to reach /bin/sh as it is
        raise LaunchError(f"discovery script path {script!r} may only hold letters, digits and _ . / + -")
    return [*args, *discovery], {"HVDTRAIN_DISCOVERY_SCRIPT": script}


def running_as_root() -> bool:
    """Whether this process is root: Open MPI then needs --allow-run-as-root (or its variables)."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def build_command(spec: LaunchSpec) -> LaunchCommand:
    """Validate ``spec`` and build its command; raise LaunchError with one clear message if it cannot work.

    - ``horovodrun``: knobs become horovodrun flags; ``env`` holds extra_env (horovodrun forwards its own
      environment to every rank) plus the Open MPI root override when asked.
    - ``mpirun``: mirrors horovodrun's Open MPI command line, but exports only the knobs and extra_env,
      each as ``-x NAME=VALUE``; ``env`` is empty.
    - ``none``: ``argv`` is ``program``; ``env`` holds the knobs as HOROVOD_* variables plus extra_env.
    """
    if not isinstance(spec, LaunchSpec):
        raise LaunchError(f"expected a LaunchSpec, got {type(spec).__name__}")
    program = _check_program(spec.program)
    np = spec.np
    if isinstance(np, bool) or not isinstance(np, int) or np < 1:
        raise LaunchError(f"-np must be an integer >= 1, got {np!r}")
    if spec.launcher not in ("horovodrun", "mpirun", "none"):
        raise LaunchError(f"launcher must be 'horovodrun', 'mpirun' or 'none', got {spec.launcher!r}")
    if spec.controller not in (None, "gloo", "mpi"):
        raise LaunchError(f"controller must be 'gloo', 'mpi' or None, got {spec.controller!r}")
    hosts_arg = _check_hosts(spec.hosts, np)
    knobs = _check_knobs(spec.knobs)
    knob_env = knobs.env()
    reserved = set(knob_env) | ({"NCCL_SOCKET_IFNAME"} if knobs.interfaces is not None else set())
    extra_env = _check_env(spec.extra_env, reserved)
    root_env = dict(ROOT_ENV) if spec.allow_run_as_root else {}

    if spec.elastic is not None and spec.launcher != "horovodrun":
        raise LaunchError("elastic training needs launcher 'horovodrun'")
    if spec.launcher == "horovodrun" and spec.elastic is not None:
        elastic_args, discovery_env = _elastic_args(spec.elastic, spec, np, hosts_arg)
        argv = ["horovodrun", *elastic_args]
        if spec.controller == "mpi":
            raise LaunchError("elastic training runs on the Gloo controller, not MPI")
        argv += knobs.horovodrun_flags()
        local_only = spec.elastic.discovery_script is None and all(h.name == "localhost" for h in spec.hosts)
        if knobs.interfaces is None and local_only:
            # Horovod otherwise waits for two hosts to agree on a common network interface.
            argv += ["--network-interfaces", "lo"]
        return LaunchCommand(argv=argv + program, env={**extra_env, **discovery_env, **root_env})
    if spec.launcher == "horovodrun":
        argv = ["horovodrun", "-np", str(np), "-H", hosts_arg]
        if spec.controller is not None:
            argv.append(f"--{spec.controller}")
        argv += knobs.horovodrun_flags()
        return LaunchCommand(argv=argv + program, env={**extra_env, **root_env})

    if spec.launcher == "mpirun":
        if spec.controller == "gloo":
            raise LaunchError("controller 'gloo' needs launcher 'horovodrun'; mpirun always uses the MPI controller")
        argv = ["mpirun"]
        if spec.allow_run_as_root:
            argv.append("--allow-run-as-root")
        argv += ["--tag-output", "-np", str(np), "-H", hosts_arg, *OMPI_BINDING_ARGS, *OMPI_FLAGS]
        host_count = len(hosts_arg.split(","))
        if host_count >= LARGE_CLUSTER_HOSTS:
            argv += ["-mca", "plm_rsh_no_tree_spawn", "true", "-mca", "plm_rsh_num_concurrent", str(host_count)]
        if knobs.interfaces is not None:
            argv += ["-mca", "btl_tcp_if_include", knobs.interfaces, "-x", f"NCCL_SOCKET_IFNAME={knobs.interfaces}"]
        for name, value in {**knob_env, **extra_env}.items():
            argv += ["-x", f"{name}={value}"]
        return LaunchCommand(argv=argv + program, env={})

    # launcher "none": one process, no launcher.
    if spec.controller is not None:
        raise LaunchError(f"controller {spec.controller!r} needs a launcher; launcher 'none' runs one plain process")
    if np != 1:
        raise LaunchError(f"launcher 'none' runs a single process; -np must be 1, got {np}")
    if spec.hosts:
        raise LaunchError("launcher 'none' runs on this machine only; leave hosts empty")
    env = dict(knob_env)
    if knobs.interfaces is not None:
        env["NCCL_SOCKET_IFNAME"] = knobs.interfaces
    return LaunchCommand(argv=program, env={**env, **extra_env, **root_env})
