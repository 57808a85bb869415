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

import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hvdtrain.hosts import Host, format_hosts_arg, total_slots, validate_hostname
from hvdtrain.knobs import (
    LOG_LEVELS,
    HorovodKnobs,
    Knob,
    check_knobs,
    check_path,
    horovodrun_flags,
    interface_problem,
    knob_env,
    requirement_problem,
)

__all__ = [
    "LOG_LEVELS",
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

LARGE_CLUSTER_HOSTS = 64  # horovod/runner/mpi_run.py _LARGE_CLUSTER_THRESHOLD
# What horovod/runner/mpi_run.py passes to Open MPI (_NO_BINDING_ARGS, then _OMPI_FLAGS).
OMPI_BINDING_ARGS = ("-bind-to", "none", "-map-by", "slot")
OMPI_FLAGS = ("-mca", "pml", "ob1", "-mca", "btl", "^openib")
ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
DISCOVERY_SCRIPT = Path(__file__).with_name("elastic_hosts.sh")  # hvdtrain's elastic host discovery
ELASTIC_COOLDOWN_S = (1, 30)  # horovodrun --blacklist-cooldown-range: a failed host is retried after 2 s, 4 s, ...

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SAFE_PATH_RE = re.compile(r"[A-Za-z0-9_./+-]+")


class LaunchError(ValueError):
    """A launch spec that cannot work; the message is one line meant for the user."""


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
    if (problem := interface_problem(name)) is not None:
        raise LaunchError(problem)
    return str(name)


def _path(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise LaunchError(f"{name} must be a non-empty path on one line, got {value!r}")
    try:
        return check_path(value)
    except ValueError as exc:
        raise LaunchError(f"{name} {exc}") from None


@dataclass(frozen=True)
class Terms:
    """How the launch rules name things: as ``hvdtrain run`` flags or as LaunchSpec fields."""

    controller: Callable[[str], str]
    launcher: Callable[[str], str]
    elastic: str
    hosts: str
    discovery: str
    knob: Callable[[Knob], str]
    needed_knob: Callable[[Knob], str]  # a knob another one needs


SPEC_TERMS = Terms(
    controller=lambda c: f"controller {c!r}",
    launcher=lambda name: f"launcher {name!r}",
    elastic="elastic training",
    hosts="-H",
    discovery="a discovery script",
    knob=lambda knob: knob.name,
    needed_knob=lambda knob: knob.name,
)


def rule_problem(
    launcher: str,
    controller: str | None,
    elastic: bool,
    hosts_and_discovery: bool,
    knobs: Mapping[str, Any],
    terms: Terms = SPEC_TERMS,
) -> str | None:
    """The first rule between launch settings that a launch breaks, as one line in ``terms`` (None if none):
    checked by ``LaunchConfig.validate`` (in flags) and again by :func:`build_command` (in field names)."""
    if (problem := requirement_problem(knobs, terms.knob, terms.needed_knob)) is not None:
        return problem
    if controller == "gloo" and launcher == "mpirun":
        return f"{terms.controller('gloo')} needs {terms.launcher('horovodrun')}; mpirun always uses the MPI controller"
    if controller is not None and launcher == "none":
        return f"{terms.controller(controller)} needs a launcher; {terms.launcher('none')} runs one plain process"
    if elastic and launcher != "horovodrun":
        return f"{terms.elastic} needs {terms.launcher('horovodrun')}"
    if elastic and controller == "mpi":
        return f"{terms.elastic} runs on the Gloo controller, not MPI; drop {terms.controller('mpi')}"
    if elastic and hosts_and_discovery:
        return f"give elastic hosts by {terms.hosts} or by {terms.discovery}, not both"
    return None


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
    if not isinstance(spec.knobs, HorovodKnobs):
        raise LaunchError(f"knobs must be a HorovodKnobs, got {type(spec.knobs).__name__}")
    try:
        knobs = check_knobs(spec.knobs)
        flags = horovodrun_flags(knobs) if spec.launcher == "horovodrun" else []
    except ValueError as exc:
        raise LaunchError(str(exc)) from None
    env_of_knobs = knob_env(knobs)
    extra_env = _check_env(spec.extra_env, set(env_of_knobs))
    root_env = dict(ROOT_ENV) if spec.allow_run_as_root else {}
    both = spec.elastic is not None and spec.elastic.discovery_script is not None and bool(spec.hosts)
    if (problem := rule_problem(spec.launcher, spec.controller, spec.elastic is not None, both, knobs)) is not None:
        raise LaunchError(problem)
    interfaces = knobs.get("network_interface")

    if spec.launcher == "horovodrun" and spec.elastic is not None:
        elastic_args, discovery_env = _elastic_args(spec.elastic, spec, np, hosts_arg)
        argv = ["horovodrun", *elastic_args, *flags]
        local_only = spec.elastic.discovery_script is None and all(h.name == "localhost" for h in spec.hosts)
        if interfaces is None and local_only:
            # Horovod otherwise waits for two hosts to agree on a common network interface.
            argv += ["--network-interfaces", "lo"]
        return LaunchCommand(argv=argv + program, env={**extra_env, **discovery_env, **root_env})
    if spec.launcher == "horovodrun":
        argv = ["horovodrun", "-np", str(np), "-H", hosts_arg]
        if spec.controller is not None:
            argv.append(f"--{spec.controller}")
        return LaunchCommand(argv=argv + flags + program, env={**extra_env, **root_env})

    if spec.launcher == "mpirun":
        argv = ["mpirun"]
        if spec.allow_run_as_root:
            argv.append("--allow-run-as-root")
        argv += ["--tag-output", "-np", str(np), "-H", hosts_arg, *OMPI_BINDING_ARGS, *OMPI_FLAGS]
        host_count = len(hosts_arg.split(","))
        if host_count >= LARGE_CLUSTER_HOSTS:
            argv += ["-mca", "plm_rsh_no_tree_spawn", "true", "-mca", "plm_rsh_num_concurrent", str(host_count)]
        if interfaces is not None:
            argv += ["-mca", "btl_tcp_if_include", interfaces]
        for name, value in {**env_of_knobs, **extra_env}.items():  # NCCL_SOCKET_IFNAME first: the table's order
            argv += ["-x", f"{name}={value}"]
        return LaunchCommand(argv=argv + program, env={})

    # launcher "none": one process, no launcher.
    if np != 1:
        raise LaunchError(f"launcher 'none' runs a single process; -np must be 1, got {np}")
    if spec.hosts:
        raise LaunchError("launcher 'none' runs on this machine only; leave hosts empty")
    horovod_first = dict(sorted(env_of_knobs.items(), key=lambda item: not item[0].startswith("HOROVOD_")))
    return LaunchCommand(argv=program, env={**horovod_first, **extra_env, **root_env})
