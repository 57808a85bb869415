"""The ``hvdtrain`` command: a thin click front that validates everything, then hands over to the launcher.

``run`` merges recipe defaults < ``--config`` preset < command line, checks the training config, the hosts
(``-H``, ``--hostfile`` or the scheduler allocation) and the launch knobs, and only then runs horovodrun or mpirun
(from :mod:`hvdtrain.launch`) on ``python -m hvdtrain.recipes.<name> <changed options>``. Any problem is one line
``hvdtrain: error: ...`` and exit code 2; the launcher's exit code is passed through.

Shell completion (bash, zsh, fish): ``eval "$(_HVDTRAIN_COMPLETE=bash_source hvdtrain)"`` in ``~/.bashrc``, or
``hvdtrain completion bash > ~/.local/share/bash-completion/completions/hvdtrain``.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.shell_completion import get_completion_class

from hvdtrain import __version__
from hvdtrain.config import ConfigError, TrainConfig
from hvdtrain.doctor import controller_problem, report
from hvdtrain.hosts import HostfileError, check_hostfile, format_hostfile, parse_hostfile, total_slots
from hvdtrain.job import run_job
from hvdtrain.launch import LaunchCommand, LaunchError, LaunchSpec, build_command, running_as_root
from hvdtrain.launch_config import (
    LaunchConfig,
    controller_from_flags,
    launch_options,
    place,
    to_spec,
    unresolvable_hosts,
)
from hvdtrain.options import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    config_to_args,
    fail,
    run_cli,
    run_recipe_command,
    say,
    train_config_options,
)
from hvdtrain.presets import Layered, Preset, PresetError, check_recipe, dump, load_preset, merge_launch, merge_train
from hvdtrain.recipes import RECIPES, RecipeError, load_recipe, module_name, recipe_defaults, recipe_names, summary
from hvdtrain.schedulers import SchedulerError, detect_environment

PROG = "hvdtrain"
COMPLETE_VAR = "_HVDTRAIN_COMPLETE"
SHELLS = ("bash", "zsh", "fish")
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
_LAUNCH_FIELDS = tuple(f.name for f in dataclasses.fields(LaunchConfig))
LAUNCH_ERRORS = (ConfigError, LaunchError, PresetError)  # what merging, placing and building a launch can raise
_ERRORS = (*LAUNCH_ERRORS, RecipeError)


# --- click plumbing ----------------------------------------------------------------------------------------------


class SectionedCommand(click.Command):
    """A command whose options are listed under headings; ``sections`` maps a heading to parameter names."""

    def __init__(self, *args: Any, sections: Sequence[tuple[str, Sequence[str]]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sections = sections

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Write each section's options, then the rest under 'Other options'."""
        params = self.get_params(ctx)
        placed = {name for _, names in self.sections for name in names}
        groups = [(h, [p for p in params if p.name in names]) for h, names in self.sections]
        groups.append(("Other options", [p for p in params if p.name not in placed]))
        for heading, members in groups:
            rows = [row for p in members if (row := p.get_help_record(ctx)) is not None]
            if rows:
                with formatter.section(heading):
                    formatter.write_dl(rows)


class RecipeGroup(click.Group):
    """``hvdtrain run|show RECIPE [options]``: one subcommand per registered recipe, built when asked for."""

    def __init__(self, name: str, build: Callable[[str], click.Command], **kwargs: Any) -> None:
        super().__init__(
            name,
            invoke_without_command=True,
            no_args_is_help=False,
            subcommand_metavar="RECIPE [OPTIONS]",
            callback=self._require_recipe,
            **kwargs,
        )
        self.build = build

    @staticmethod
    def _require_recipe() -> None:
        ctx = click.get_current_context()
        if ctx.invoked_subcommand is None:
            raise click.UsageError(f"missing RECIPE (one of: {', '.join(recipe_names())}); see: {ctx.command_path} -h")

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The recipe names."""
        return recipe_names()

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command for recipe ``cmd_name`` (None if unknown)."""
        if cmd_name not in RECIPES:
            return None
        try:
            return self.build(cmd_name)
        except RecipeError as exc:
            raise click.UsageError(str(exc)) from None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """Like click's, with a message that lists the known recipes."""
        if args and args[0] not in RECIPES and not ctx.resilient_parsing:
            hint = "; the throughput benchmark is: hvdtrain bench synthetic" if args[0] == "synthetic" else ""
            raise click.UsageError(f"unknown recipe {args[0]!r} (known: {', '.join(recipe_names())}){hint}")
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the recipes with their summaries."""
        with formatter.section("Recipes"):
            formatter.write_dl([(name, summary(name)) for name in recipe_names()])


def _recipe_command(
    name: str, callback: Callable[..., int], help_text: str, extra: list[click.Option]
) -> click.Command:
    """A recipe's command: --config, every TrainConfig option (recipe defaults in the help), launch options, extra."""
    config_option = click.Option(
        ["-c", "--config"],
        type=click.Path(dir_okay=False, path_type=Path),
        metavar="FILE",
        help="Preset TOML file (e.g. recipes/digits-quick.toml): recipe defaults < FILE < command line.",
    )
    train, launch = train_config_options(recipe_defaults(name)), launch_options()
    return SectionedCommand(
        name=name,
        params=[config_option, *train, *launch, *extra],
        callback=callback,
        help=help_text.format(name=name, summary=summary(name), module=module_name(name)),
        short_help=summary(name),
        sections=[
            ("Preset", ["config"]),
            ("Training options (passed to every rank)", [p.name or "" for p in train]),
            ("Launch options", [p.name or "" for p in launch]),
        ],
    )


# --- merging and validation ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Merged:
    """A recipe's configuration after layering: recipe defaults < preset < command line."""

    recipe: str
    preset: Preset | None
    train: Layered[TrainConfig]
    launch: Layered[LaunchConfig]


@dataclass(frozen=True)
class Plan:
    """What ``run`` will do: the merged configuration, the recipe's arguments and the validated launch command."""

    merged: Merged
    recipe_args: list[str]
    spec: LaunchSpec
    command: LaunchCommand


def _merge(name: str, config_path: Path | None, values: dict[str, Any]) -> Merged:
    """Layer the recipe defaults, the preset and the command-line ``values``; raise a one-line error."""
    train_cli = {k: values.pop(k) for k in _TRAIN_FIELDS}
    launch_cli = launch_values(values)
    if values:
        raise AssertionError(f"unhandled options: {sorted(values)}")
    preset = load_preset(config_path) if config_path is not None else None
    if preset is not None:
        check_recipe(preset, name)
    train = merge_train(recipe_defaults(name), preset, train_cli)
    return Merged(name, preset, train, merge_launch(preset, launch_cli))


def plan_run(name: str, config_path: Path | None, values: dict[str, Any]) -> Plan:
    """Merge and validate everything ``run`` needs; raise a one-line error (ConfigError, LaunchError, ...)."""
    merged = _merge(name, config_path, values)
    recipe_args = config_to_args(merged.train.value, recipe_defaults(name))
    program = [sys.executable, "-m", module_name(name), *recipe_args]
    launch = merged.launch.value
    spec = to_spec(launch, place(launch), program, allow_run_as_root=running_as_root())
    return Plan(merged, recipe_args, spec, build_command(spec))


# --- execution -----------------------------------------------------------------------------------------------------


def _find_program(program: str) -> str | None:
    """``program`` on PATH, else beside this Python (an unactivated virtual environment's horovodrun)."""
    found = shutil.which(program)
    if found is None:
        found = shutil.which(program, path=str(Path(sys.executable).parent))
    return found


def execute(command: LaunchCommand) -> int:
    """Run the launcher (argv list, no shell) with ``command.env`` added to this environment; return its exit code.

    The whole job is stopped on SIGTERM, SIGINT (Ctrl-C) or SIGHUP to hvdtrain, and whatever the launcher leaves
    behind when it dies is stopped too (:mod:`hvdtrain.job`); each case is one line and a 128 + N exit code.
    """
    program = command.argv[0]
    executable = _find_program(program)
    if executable is None:
        return fail(f"{program} not found on PATH or in {Path(sys.executable).parent}")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        outcome = run_job(command.argv, executable, {**os.environ, **command.env})
    except OSError as exc:
        return fail(f"cannot start {program}: {exc.strerror or exc}")
    ended = f"{outcome.stopped} process(es)" + (f", {outcome.killed} with SIGKILL" if outcome.killed else "")
    if outcome.signum is not None:
        say(f"stopped by {signal.Signals(outcome.signum).name}: ended the job's {ended}")
    elif outcome.returncode < 0:
        left = f"; ended the {ended} it left running" if outcome.stopped else ""
        say(f"error: {program} was killed by {signal.Signals(-outcome.returncode).name}{left}")
    elif outcome.failure is not None and outcome.failure.status != EXIT_USAGE:  # a usage error: the rank said it
        say(f"error: {outcome.failure.describe()}; {program} ended the job")
    elif outcome.ssh_failed:  # e.g. a Slurm allocation of several nodes where ssh between them is not allowed
        say(
            f"error: {program} could not reach every host by ssh (see above); set up ssh between the hosts, or use "
            "--launcher mpirun (under Slurm, Open MPI starts its daemons on the other nodes through srun)"
        )
    elif outcome.stopped and outcome.returncode == 0:
        say(f"{program} exited with status 0; ended the {ended} it left running")
    return outcome.exit_code


def run_here(name: str, plan: Plan) -> int:
    """``--launcher none``: train in this process (the launch environment is already applied)."""
    try:
        recipe = load_recipe(name)
    except RecipeError as exc:
        return fail(str(exc))
    return run_recipe_command(recipe, plan.recipe_args)


# --- commands --------------------------------------------------------------------------------------------------------


@click.group(
    context_settings=CONTEXT,
    invoke_without_command=True,
    epilog="""\b
Examples:
  hvdtrain list
  hvdtrain run digits -np 2 --epochs 2              2 ranks on this machine (horovodrun)
  hvdtrain run digits --config recipes/digits-quick.toml --dry-run
  hvdtrain run mnist --launcher mpirun --hostfile hostfiles/2nodes-4gpus
  hvdtrain show mnist --config recipes/mnist-full.toml --lr 0.002
  hvdtrain hostfile check hostfiles/4nodes-8gpus

\b
Shell completion: eval "$(_HVDTRAIN_COMPLETE=bash_source hvdtrain)"  (or: hvdtrain completion bash|zsh|fish)""",
)
@click.version_option(__version__, "-V", "--version", prog_name=PROG, message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context) -> int:
    """Train Horovod ring-allreduce recipes on one machine, a cluster, or a Slurm/PBS/LSF allocation."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
    return 0


@cli.command("list")
def list_recipes() -> int:
    """List the recipes, one per line: name and summary."""
    names = recipe_names()
    width = max(len(n) for n in names) + 2
    for name in names:
        click.echo(f"{name:<{width}}{summary(name)}".rstrip())
    return 0


RUN_HELP = """Train the {name} recipe: {summary}

Runs `python -m {module} <options>` on every rank, under horovodrun (default) or mpirun, or in this process
(--launcher none). Values layer as recipe defaults < --config FILE < command line; only values that differ from the
recipe's defaults are passed on. Hosts: -H or --hostfile, else the Slurm/PBS/LSF allocation this runs in, else
localhost. Everything is checked before anything starts; --dry-run prints the command instead.

Not checked before launching: ssh access to remote hosts, that they are up, and that they have the same Python
environment; remote host names are only resolved (skip with --no-check-hosts)."""

SHOW_HELP = """Print the merged configuration of the {name} recipe as TOML, each value marked with its source.

Layers: recipe defaults < --config FILE < command line. The output is itself a valid preset."""


def _controller_needed(spec: LaunchSpec) -> str | None:
    """The Horovod controller a launch asks for explicitly (mpirun and --mpi: MPI; --gloo and --elastic: Gloo)."""
    if spec.launcher == "mpirun" or spec.controller == "mpi":
        return "mpi"
    if spec.controller == "gloo" or spec.elastic is not None:
        return "gloo"
    return None


def launch(spec: LaunchSpec, command: LaunchCommand, check_hosts: bool, here: Callable[[], int]) -> int:
    """Check the controller and host names, then run ``command`` (``here()`` instead for ``--launcher none``)."""
    controller = _controller_needed(spec)
    if controller is not None and (problem := controller_problem(controller)) is not None:
        return fail(problem)
    if check_hosts:
        bad = unresolvable_hosts(spec.hosts)
        if bad:
            shown = ", ".join(f"{host!r} ({why})" for host, why in bad)
            return fail(f"cannot resolve host name(s) {shown}; fix -H/--hostfile or skip with --no-check-hosts")
    for flag, path in (("--timeline", spec.knobs.timeline), ("--autotune-log", spec.knobs.autotune_log)):
        if path is not None and (problem := _make_parent(Path(path))) is not None:
            return fail(f"{flag} {path}: cannot create its directory: {problem}")
    if spec.launcher == "none":
        os.environ.update(command.env)
        return here()
    return execute(command)


def _make_parent(path: Path) -> str | None:
    """Create ``path``'s directory (Horovod only opens the file, and says so in a log line the run goes past);
    the reason if that fails."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def launch_values(values: dict[str, Any]) -> dict[str, Any]:
    """Take the launch options' values out of a command's ``values`` (``--gloo``/``--mpi`` become the controller)."""
    found = {k: values.pop(k) for k in _LAUNCH_FIELDS if k != "controller"}
    found["controller"] = controller_from_flags(values.pop("gloo"), values.pop("mpi"))
    return found


def _build_run(name: str) -> click.Command:
    def callback(config: Path | None, dry_run: bool, **values: Any) -> int:
        try:
            plan = plan_run(name, config, values)
        except _ERRORS as exc:
            return fail(str(exc))
        if dry_run:
            click.echo(plan.command.shell_line())
            return 0
        return launch(plan.spec, plan.command, plan.merged.launch.value.check_hosts, lambda: run_here(name, plan))

    dry_run = click.Option(["--dry-run"], is_flag=True, help="Check everything, print the exact command, exit 0.")
    return _recipe_command(name, callback, RUN_HELP, [dry_run])


def _build_show(name: str) -> click.Command:
    def callback(config: Path | None, **values: Any) -> int:
        try:
            merged = _merge(name, config, values)
        except _ERRORS as exc:
            return fail(str(exc))
        layers = ["recipe defaults", *([merged.preset.label] if merged.preset else []), "command line"]
        header = f"hvdtrain show {name}: {' < '.join(layers)}"
        click.echo(dump(name, [("train", merged.train), ("launch", merged.launch)], header), nl=False)
        return 0

    return _recipe_command(name, callback, SHOW_HELP, [])


cli.add_command(
    RecipeGroup(
        "run",
        _build_run,
        help="Train a recipe on one or more ranks; see: hvdtrain run RECIPE -h",
        short_help="Train a recipe with horovodrun, mpirun or in this process.",
    )
)
cli.add_command(
    RecipeGroup(
        "show",
        _build_show,
        help="Print a recipe's merged configuration (recipe defaults < preset < command line).",
        short_help="Print a recipe's merged configuration and where each value came from.",
    )
)


@cli.group(
    "hostfile", invoke_without_command=True, short_help="Print the scheduler allocation as a hostfile; check one."
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE", help="Write to FILE.")
@click.pass_context
def hostfile(ctx: click.Context, output: Path | None) -> int:
    """Print this job's scheduler allocation as a hostfile ('host slots=N' lines), or write it to FILE.

    Inside a Slurm, PBS or LSF job only; `hvdtrain hostfile check FILE` validates a hostfile.
    """
    if ctx.invoked_subcommand is not None:
        if output is not None:
            raise click.UsageError("-o/--output writes the allocation; it does not go with a subcommand")
        return 0
    cluster = detect_environment()
    if cluster is None:
        return fail("no scheduler allocation here (no Slurm, PBS or LSF job variables); write a hostfile by hand")
    try:
        hosts = cluster.hosts()
        text = format_hostfile(hosts)
    except (SchedulerError, ValueError) as exc:
        return fail(f"{cluster.name} allocation: {exc}")
    if output is None:
        click.echo(text, nl=False)
        return 0
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        return fail(f"cannot write {output}: {exc.strerror or exc}")
    click.echo(f"{output}: {len(hosts)} hosts, {total_slots(hosts)} slots ({cluster.name} allocation)", err=True)
    return 0


@hostfile.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path), metavar="FILE...")
def hostfile_check(files: tuple[Path, ...]) -> int:
    """Check hostfiles: every problem as FILE:LINE: message (exit 2), else 'FILE: N hosts, M slots'."""
    code = 0
    for path in files:
        try:
            problems = check_hostfile(path)
            hosts = [] if problems else parse_hostfile(path)
        except (OSError, HostfileError) as exc:
            code = fail(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}")
            continue
        if problems:
            for problem in problems:
                click.echo(problem, err=True)
            code = 2
        else:
            click.echo(f"{path}: {len(hosts)} hosts, {total_slots(hosts)} slots")
    return code


class _BenchGroup(click.Group):
    """``hvdtrain bench``, imported only when used (the benchmarks import numpy; the light commands must not)."""

    def _real(self) -> click.Group:
        from hvdtrain.bench.cli import bench

        return bench

    def list_commands(self, ctx: click.Context) -> list[str]:
        return self._real().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._real().get_command(ctx, cmd_name)


cli.add_command(
    _BenchGroup(
        "bench",
        help="Benchmarks: allreduce collectives, a recipe's scaling and knobs, hvdtrain's overhead.",
        short_help="Benchmarks: allreduce, scaling, overhead.",
        context_settings=CONTEXT,
    )
)


@cli.command("check", short_help="Report Python, TensorFlow, Horovod build, MPI, GPUs, scheduler.")
def check() -> int:
    """Report Python, TensorFlow, Horovod (version and build), MPI, GPUs and the scheduler; exit 1 if unusable."""
    lines, ok = report()
    for line in lines:
        click.echo(line)
    return 0 if ok else 1


@cli.command("completion", short_help="Print the shell completion script (bash, zsh or fish).")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> int:
    """Print the completion script for SHELL, e.g. eval "$(hvdtrain completion bash)" in ~/.bashrc."""
    cls = get_completion_class(shell)
    if cls is None:
        return fail(f"no completion for {shell}")
    click.echo(cls(cli, {}, PROG, COMPLETE_VAR).source())
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the command line, exit with its code."""
    try:
        code = run_cli(cli, argv, prog_name=PROG)
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
