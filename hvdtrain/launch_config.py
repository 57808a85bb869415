"""The launch half of ``hvdtrain run``: typed options (like ``TrainConfig``) and how they become a ``LaunchSpec``.

Where the ranks go, in order: ``-H``/``--hostfile`` if given, else the scheduler allocation (Slurm, PBS, LSF) if
this process runs inside one, else ``localhost``. A user's hostfile is parsed here (comments allowed) and passed
on as ``-H``, because horovodrun's own hostfile parser cannot read comments.

Pure Python: importing this module imports neither TensorFlow nor Horovod.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import threading
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import click

from hvdtrain.config import option_name, path_problem, range_problem
from hvdtrain.hosts import Host, HostfileError, parse_hostfile, parse_hosts_arg, total_slots
from hvdtrain.knobs import KNOBS, LOG_LEVELS, HorovodKnobs
from hvdtrain.launch import Elastic, LaunchError, LaunchSpec, Terms, rule_problem
from hvdtrain.schedulers import SchedulerError, detect_environment

Launcher = Literal["horovodrun", "mpirun", "none"]
Controller = Literal["gloo", "mpi"]
LogLevel = Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "FATAL"]
assert typing.get_args(LogLevel) == LOG_LEVELS

EXPECTED_SIZE_VARIABLE = "HVDTRAIN_EXPECTED_SIZE"  # read by hvdtrain.world_check on every rank
RESOLVE_TIMEOUT_S = 5.0
CLI_TERMS = Terms(  # how the launch rules name things on the command line
    controller=lambda c: f"--{c}",
    launcher=lambda name: f"--launcher {name}",
    elastic="--elastic",
    hosts="-H/--hostfile",
    discovery="--host-discovery-script",
    knob=lambda knob: knob.flag,
    needed_knob=lambda knob: f"{knob.flag} {knob.metavar}" if knob.metavar else knob.flag,
)


def _opt(help_text: str, **extra: Any) -> dict[str, Any]:
    return {"help": help_text, **extra}


def _check_hosts(value: str) -> None:
    parse_hosts_arg(value)


_KNOB_OF_OPTION = {knob.option: knob for knob in KNOBS}


def _knob(option: str, **extra: Any) -> Any:
    """A LaunchConfig field for a Horovod knob: help, range, metavar and check come from its row of the table."""
    knob = _KNOB_OF_OPTION[option]
    meta = {**(knob.limits or {}), **extra, "knob": knob}
    if knob.metavar is not None:
        meta["metavar"] = knob.metavar
    if knob.check is not None and knob.kind is str and option != "horovod_log_level":  # a choice: click checks it
        meta["check"] = knob.check
    return field(default=False if knob.kind is bool else None, metadata=_opt(knob.help, **meta))


@dataclass(frozen=True)
class LaunchConfig:
    """How to start the ranks; each field is a ``hvdtrain run`` option and a ``[launch]`` key of a preset."""

    np: int | None = field(
        default=None,
        metadata=_opt(
            "Number of ranks [default: the scheduler allocation's size, else all slots of -H/--hostfile, else 1].",
            decls=("-np", "--np"),
            metavar="N",
            min=1,
        ),
    )
    hosts: str | None = field(
        default=None,
        metadata=_opt(
            "Hosts and their slots, e.g. node1:4,node2:4 [default: the scheduler allocation, else localhost].",
            decls=("-H", "--hosts"),
            metavar="HOST[:SLOTS],...",
            check=_check_hosts,
        ),
    )
    hostfile: Path | None = field(
        default=None,
        metadata=_opt("Hostfile of 'host slots=N' lines ('#' comments allowed); passed on as -H.", metavar="FILE"),
    )
    launcher: Launcher = field(
        default="horovodrun", metadata=_opt("Who starts the ranks; 'none' runs one rank in this process.")
    )
    controller: Controller | None = field(
        default=None, metadata=_opt("Horovod controller (horovodrun only) [default: MPI if Horovod has it].")
    )
    fusion_threshold_mb: float | None = _knob("fusion_threshold_mb")
    cycle_time_ms: float | None = _knob("cycle_time_ms")
    cache_capacity: int | None = _knob("cache_capacity")
    hierarchical_allreduce: bool = _knob("hierarchical_allreduce")
    timeline: str | None = _knob("timeline")
    timeline_mark_cycles: bool = _knob("timeline_mark_cycles")
    autotune: bool = _knob("autotune")
    autotune_log: str | None = _knob("autotune_log")
    network_interface: str | None = _knob("network_interface")
    stall_timeout: int | None = _knob("stall_timeout")
    horovod_log_level: LogLevel | None = _knob("horovod_log_level", case_insensitive=True)
    elastic: bool = field(
        default=False, metadata=_opt("Elastic training (horovodrun, Gloo): ranks may leave and join while it runs.")
    )
    min_np: int | None = field(
        default=None,
        metadata=_opt("Elastic: fewest ranks to go on with [default: 1].", decls=("--min-np",), metavar="N", min=1),
    )
    max_np: int | None = field(
        default=None,
        metadata=_opt("Elastic: most ranks [default: -np].", decls=("--max-np",), metavar="N", min=1),
    )
    host_discovery_script: Path | None = field(
        default=None,
        metadata=_opt("Elastic: an executable that prints the available 'host:slots' lines.", metavar="FILE"),
    )
    check_hosts: bool = field(
        default=True, metadata=_opt("Resolve every remote host name before launching (not done by --dry-run).")
    )

    def validate(self) -> LaunchConfig:
        """Check each number's range (nan and inf never pass) and the options that depend on each other (in
        command-line terms); raise LaunchError with one line."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if (problem := range_problem(f.metadata, value) or path_problem(value)) is not None:
                raise LaunchError(f"{f.metadata.get('decls', (option_name(f.name),))[0]} {problem}")
        if self.hosts is not None and self.hostfile is not None:
            raise LaunchError("give -H/--hosts or --hostfile, not both")
        knobs = {knob.name: getattr(self, knob.option) for knob in KNOBS}
        script = self.host_discovery_script
        both = script is not None and (self.hosts is not None or self.hostfile is not None)
        if (problem := rule_problem(self.launcher, self.controller, self.elastic, both, knobs, CLI_TERMS)) is not None:
            raise LaunchError(problem)
        if not self.elastic and (self.min_np or self.max_np or self.host_discovery_script):
            raise LaunchError("--min-np, --max-np and --host-discovery-script need --elastic")
        if self.elastic:
            if self.cycle_time_ms is not None and self.fusion_threshold_mb is not None:
                raise LaunchError(
                    "with --elastic give --cycle-time-ms or --fusion-threshold-mb, not both: with both set, Horovod "
                    "0.28.1 crashes when a worker leaves"
                )
            if script is not None and not (script.is_file() and os.access(script, os.X_OK)):
                raise LaunchError(f"--host-discovery-script {script}: not an executable file")
        return self


def _click_type(annotation: Any, meta: Mapping[str, Any]) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        return click.Choice(list(typing.get_args(annotation)), case_sensitive=not meta.get("case_insensitive"))
    if args:  # Optional[X]
        return _click_type(args[0], meta)
    if annotation is int:
        return click.INT  # ranges (and nan/inf) are checked by LaunchConfig.validate, for presets too
    if annotation is float:
        return click.FLOAT
    if annotation is Path:
        return click.Path(dir_okay=False, path_type=Path)
    return click.STRING


def launch_options() -> list[click.Option]:
    """One click option per LaunchConfig field (``--gloo``/``--mpi`` for the controller); all default to None."""
    hints = typing.get_type_hints(LaunchConfig)
    options: list[click.Option] = []
    for f in dataclasses.fields(LaunchConfig):
        meta = f.metadata
        if f.name == "controller":
            options.append(click.Option(["--gloo"], is_flag=True, default=None, help="Use the Gloo controller."))
            options.append(click.Option(["--mpi"], is_flag=True, default=None, help="Use the MPI controller."))
            continue
        if hints[f.name] is bool:
            flag = option_name(f.name)
            shown = "on" if f.default else "off"
            decl = f"{flag}/--no-{flag[2:]}"
            options.append(click.Option([decl, f.name], default=None, help=f"{meta['help']} [default: {shown}]"))
            continue
        decls = list(meta.get("decls", (option_name(f.name),)))
        check = meta.get("check")
        help_text = meta["help"] if f.default is None else f"{meta['help']} [default: {f.default}]"
        options.append(
            click.Option(
                [*decls, f.name],
                type=_click_type(hints[f.name], meta),
                default=None,
                metavar=meta.get("metavar"),
                help=help_text,
                callback=_click_callback(check) if check else None,
            )
        )
    return options


def _click_callback(check: Callable[[str], None]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback that runs ``check`` on a given value and turns its ValueError into a usage error."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None:
            try:
                check(value)
            except ValueError as exc:
                raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
        return value

    return callback


def launch_values(values: dict[str, Any]) -> dict[str, Any]:
    """Take the launch options' values out of a command's ``values`` (``--gloo``/``--mpi`` become the controller)."""
    found = {f.name: values.pop(f.name) for f in dataclasses.fields(LaunchConfig) if f.name != "controller"}
    found["controller"] = controller_from_flags(values.pop("gloo"), values.pop("mpi"))
    return found


def controller_from_flags(gloo: bool | None, mpi: bool | None) -> Controller | None:
    """``--gloo``/``--mpi`` to a controller name (None if neither)."""
    if gloo and mpi:
        raise LaunchError("--gloo and --mpi exclude each other")
    return "gloo" if gloo else "mpi" if mpi else None


@dataclass(frozen=True)
class Placement:
    """Where the ranks run: ``hosts`` (empty = localhost) and how many."""

    hosts: tuple[Host, ...]
    np: int


def place(config: LaunchConfig, env: Mapping[str, str] | None = None) -> Placement:
    """Hosts and rank count from -H, --hostfile or the scheduler allocation; raise LaunchError with one line."""
    env = os.environ if env is None else env
    config.validate()
    world: int | None = None
    if config.hosts is not None:
        try:
            hosts = parse_hosts_arg(config.hosts)
        except ValueError as exc:
            raise LaunchError(f"-H: {exc}") from None
    elif config.hostfile is not None:
        hosts = _read_hostfile(config.hostfile)
    elif config.launcher != "none" and (cluster := detect_environment(env)) is not None:
        try:
            hosts, world = cluster.hosts(), cluster.world_size()
        except SchedulerError as exc:
            raise LaunchError(f"{cluster.name} allocation: {exc}") from None
    else:
        hosts = []
    if config.np is not None:
        np = config.np
    elif config.elastic and config.max_np is not None:
        np = config.max_np
    else:
        np = world if world is not None else (total_slots(hosts) if hosts else 1)
    return Placement(tuple(hosts), np)


def _read_hostfile(path: Path) -> list[Host]:
    try:
        return parse_hostfile(path)
    except HostfileError as exc:
        more = len(exc.problems) - 1
        hint = f" (and {more} more problem(s); see: hvdtrain hostfile check {path})" if more else ""
        raise LaunchError(f"{exc}{hint}") from None
    except OSError as exc:
        raise LaunchError(f"cannot read hostfile {path}: {exc.strerror or exc}") from None


def to_spec(
    config: LaunchConfig,
    placement: Placement,
    program: Sequence[str],
    *,
    allow_run_as_root: bool,
) -> LaunchSpec:
    """The LaunchSpec for ``program``; every rank gets ``HVDTRAIN_EXPECTED_SIZE=<np>`` to check its world size."""
    knobs = HorovodKnobs(**{knob.name: getattr(config, knob.option) for knob in KNOBS})
    return LaunchSpec(
        program=list(program),
        np=placement.np,
        hosts=placement.hosts,
        launcher=config.launcher,
        controller=config.controller,
        knobs=knobs,
        allow_run_as_root=allow_run_as_root,
        # Elastic worlds change size on purpose; every other launch checks its size at start-up.
        extra_env={} if config.elastic else {EXPECTED_SIZE_VARIABLE: str(placement.np)},
        elastic=Elastic(
            min_np=config.min_np or 1,
            max_np=config.max_np or placement.np,
            discovery_script=os.path.abspath(config.host_discovery_script) if config.host_discovery_script else None,
        )
        if config.elastic
        else None,
    )


def _is_local_or_address(name: str) -> bool:
    if name.lower() == "localhost" or name.lower().endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    here = socket.gethostname().lower()
    return name.lower() in (here, here.split(".")[0])


def unresolvable_hosts(hosts: Sequence[Host], timeout_s: float = RESOLVE_TIMEOUT_S) -> list[tuple[str, str]]:
    """(name, reason) for each remote host whose name does not resolve (``getaddrinfo``), all looked up at once.

    Only name resolution is checked: not ssh access, not that the host is up, not that it has hvdtrain installed.
    A lookup still running after ``timeout_s`` counts as resolvable, so a slow DNS never blocks a launch.
    """
    remote = [h.name for h in hosts if not _is_local_or_address(h.name)]
    failed: dict[str, str] = {}

    def probe(name: str) -> None:
        try:
            socket.getaddrinfo(name, None)
        except (OSError, UnicodeError) as exc:
            failed[name] = getattr(exc, "strerror", None) or str(exc)

    threads = [threading.Thread(target=probe, args=(name,), daemon=True) for name in remote]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [(name, failed[name]) for name in remote if name in failed]
