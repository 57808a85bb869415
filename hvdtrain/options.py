"""Command-line options generated from ``TrainConfig`` and the ``main()`` every recipe shares.

Bad input is one line on stderr and exit code 2; the line is printed once per job (rank 0 of the launcher).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hvdtrain.config import ConfigError, TrainConfig, option_name

if TYPE_CHECKING:
    from hvdtrain.recipe import Recipe

EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130
_RANK_VARIABLES = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID")


def _click_type(annotation: Any) -> tuple[Any, bool]:
    """(click type, is_flag) for a TrainConfig annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)]), False
    if args and annotation is not bool:  # Optional[X]
        return _click_type(args[0])
    if annotation is bool:
        return None, True
    if annotation is Path:
        return click.Path(path_type=Path), False
    return annotation, False


def train_config_options(defaults: TrainConfig) -> list[click.Option]:
    """One click option per field of ``defaults``'s class (TrainConfig or a recipe's subclass); each defaults to None
    so only what the user typed overrides."""
    hints = typing.get_type_hints(type(defaults))
    options = []
    for f in dataclasses.fields(defaults):
        kind, is_flag = _click_type(hints[f.name])
        flag = option_name(f.name)
        default = getattr(defaults, f.name)
        shown = "on" if default is True else "off" if default is False else ("unset" if default is None else default)
        decl = f"{flag}/--no-{flag[2:]}" if is_flag else flag
        options.append(
            click.Option([decl, f.name], type=kind, default=None, help=f"{f.metadata['help']} [default: {shown}]")
        )
    return options


def config_to_args(config: TrainConfig, defaults: TrainConfig) -> list[str]:
    """The options that turn ``defaults`` into ``config``: ``--flag value`` (or ``--flag``/``--no-flag``) per change.

    The inverse of :func:`train_config_options`: parsing the result over ``defaults`` gives back ``config``.
    """
    args: list[str] = []
    for f in dataclasses.fields(defaults):
        value, default = getattr(config, f.name), getattr(defaults, f.name)
        if value == default:
            continue
        flag = option_name(f.name)
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{flag[2:]}")
        elif value is None:
            raise ConfigError(f"{flag} cannot be unset from the command line (the recipe sets {default!r})")
        else:
            args += [flag, repr(value) if isinstance(value, float) else str(value)]
    return args


def launcher_rank() -> int:
    """This process's rank as the launcher set it, before Horovod starts (0 when launched alone)."""
    for name in _RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def say(message: str) -> None:
    """Print ``hvdtrain: <message>`` as one line on stderr, once per job (rank 0 of the launcher)."""
    if launcher_rank() == 0:
        one_line = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
        click.echo(f"hvdtrain: {one_line}", err=True)


def fail(message: str) -> int:
    """Print one error line (once per job) and return the usage exit code."""
    say(f"error: {message}")
    return EXIT_USAGE


def run_cli(command: click.Command, argv: Sequence[str] | None, prog_name: str) -> Any:
    """Run a click command; bad input becomes one line and exit 2, never a traceback; Ctrl-C is exit 130."""
    try:
        return command.main(list(argv) if argv is not None else None, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            return EXIT_INTERRUPTED  # Ctrl-C: the shell convention, 128 + SIGINT
        return fail("aborted")
    except click.ClickException as exc:
        return fail(exc.format_message())


def recipe_command(recipe: Recipe, action: Callable[[TrainConfig], int]) -> click.Command:
    """A click command for ``recipe`` whose options layer over the recipe's defaults and call ``action``."""

    def callback(**values: Any) -> int:
        try:
            config = recipe.defaults.with_overrides(values).validate()
        except ConfigError as exc:
            return fail(str(exc))
        return action(config)

    return click.Command(
        name=recipe.name,
        help=recipe.description,
        params=train_config_options(recipe.defaults),
        callback=callback,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )


def run_recipe_command(recipe: Recipe, argv: Sequence[str] | None = None) -> int:
    """``python -m hvdtrain.recipes.<name> [options]``: train, print the test result on rank 0, return exit code."""
    from hvdtrain.callbacks import TrainingDiverged
    from hvdtrain.data import DataError
    from hvdtrain.recipe import train

    def action(config: TrainConfig) -> int:
        try:
            result = train(recipe, config)
        except (ConfigError, DataError) as exc:
            return fail(str(exc))
        except TrainingDiverged as exc:
            fail(str(exc))
            return EXIT_FAILURE
        except Exception as exc:
            if "Horovod has been shut down" not in str(exc):
                raise
            # A peer died or stalled past --stall-timeout; Horovod's own report (missing ranks) is above.
            fail("Horovod shut down because another rank failed or stalled (its report is above)")
            return EXIT_FAILURE
        if result.world.is_root:
            for name, value in sorted(result.test_metrics.items()):
                if name != "accuracy":
                    print(f"test {name} {value:.4f}")
            if "accuracy" in result.test_metrics:
                print(f"test accuracy {result.test_metrics['accuracy']:.4f}")
        sys.stdout.flush()
        return 0

    code = run_cli(recipe_command(recipe, action), argv, prog_name=f"python -m hvdtrain.recipes.{recipe.name}")
    return code if isinstance(code, int) else 0
