"""``hvdtrain bench``: the benchmark commands as a click group (``allreduce``, ``scaling``, ``overhead``, ``report``).

Register it with ``cli.add_command(bench)``; until then ``python -m hvdtrain.bench ...`` runs the same commands.
Bad input is one line ``hvdtrain: error: ...`` and exit code 2; a benchmark job that fails is one line and exit 1
(its output's tail above it, the full log under the output folder). Each command launches its own ranks on this
machine and prints a progress line per job and per size or run on stderr; tables go to stdout.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from hvdtrain import tuning
from hvdtrain.bench import metrics
from hvdtrain.bench.allreduce import CONTENDERS
from hvdtrain.bench.cluster_cli import cluster_command
from hvdtrain.bench.runner import JobFailed, parse_list
from hvdtrain.bench.scaling import GROUPS
from hvdtrain.launch import LaunchError
from hvdtrain.options import fail, run_cli

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
EXIT_FAILED = 1


def _failed(message: str) -> int:
    click.echo(f"hvdtrain: error: {message}", err=True)
    return EXIT_FAILED


def _guarded(driver: Callable[[], dict[str, Any]]) -> dict[str, Any] | int:
    """Run a benchmark driver: a launch problem is bad input (one line, exit 2), a failed job one line and exit 1."""
    try:
        return driver()
    except LaunchError as exc:
        return fail(str(exc))
    except JobFailed as exc:
        return _failed(str(exc))


def _reproduce(ctx: click.Context) -> str:
    """The command line as typed (``hvdtrain bench allreduce ...``), for the JSON and the docs."""
    name = ctx.info_name or ""
    argv = sys.argv[1:]
    rest = argv[argv.index(name) + 1 :] if name in argv else argv
    return " ".join([ctx.command_path, *(shlex.quote(a) for a in rest)])


def _parse_env(items: Sequence[str]) -> dict[str, str]:
    """``NAME=VALUE`` items -> a dict (names are checked again by build_command)."""
    env = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.UsageError(f"--env takes NAME=VALUE, got {item!r}")
        env[name] = value
    return env


def _np_option(default: int, help_text: str) -> click.Option:
    return click.option("-np", "--num-proc", "np", type=int, default=default, show_default=True, help=help_text)


def _machine_options(env: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--label, --env (when ``env``) and --wait-idle: what every benchmark command takes about the machine."""
    options = [
        click.option("--label", default=None, help="What the machine is, for the JSON and plot titles."),
        click.option(
            "--wait-idle",
            type=float,
            default=0,
            metavar="SECONDS",
            help="Before each job, wait up to SECONDS for the CPUs to be 90% idle (shared machines) [default: 0].",
        ),
    ]
    if env:
        options.insert(
            1,
            click.option(
                "--env",
                "env_items",
                multiple=True,
                metavar="NAME=VALUE",
                help="Extra environment for every rank (repeatable), e.g. OMPI_MCA_mpi_yield_when_idle=1.",
            ),
        )

    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


def _output_option(name: str, files: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``-o/--output`` with the default folder ``runs/bench/NAME``."""
    return click.option(
        "-o",
        "--output",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("runs/bench") / name,
        show_default=True,
        help=f"Folder for {files}.",
    )


def _check_np(np: int) -> None:
    if np < 1:
        raise click.UsageError(f"-np must be >= 1, got {np}")


@click.group(context_settings=CONTEXT)
def bench() -> None:
    """Benchmarks: allreduce collectives, a recipe's scaling and knobs, hvdtrain's overhead."""


@bench.command(
    "allreduce",
    context_settings=CONTEXT,
    short_help="Allreduce latency/bandwidth: Horovod (MPI, Gloo), MPI, a reference ring.",
    epilog="""\b
Examples:
  hvdtrain bench allreduce -np 2
  hvdtrain bench allreduce -np 2 --max-size 1MiB --contender horovod-mpi-tuned --contender mpi4py
  hvdtrain bench allreduce -np 2 --max-size 64KiB --contender mpi4py --cycle-time-sweep 0.1,0.5,1""",
)
@_np_option(2, "Ranks, all on this machine.")
@click.option("--min-size", default="4B", show_default=True, help="Smallest buffer (B, KiB, MiB, GiB).")
@click.option("--max-size", default="64MiB", show_default=True, help="Largest buffer; sizes double from the smallest.")
@_output_option("allreduce", "allreduce.json/.csv/.png, raw/ and logs/")
@click.option(
    "--contender",
    "contenders",
    multiple=True,
    type=click.Choice(CONTENDERS),
    help="Run only these (repeatable) [default: all six].",
)
@click.option("--cycle-time-sweep", default="", metavar="MS,MS,...", help="Also Horovod-MPI at these cycle times (ms).")
@click.option("--repeats", type=int, default=metrics.DEFAULT_REPEATS, show_default=True, help="Timed trials per size.")
@click.option("--max-iters", type=int, default=metrics.DEFAULT_MAX_ITERS, show_default=True, help="Iterations cap.")
@click.option("--min-iters", type=int, default=metrics.DEFAULT_MIN_ITERS, show_default=True, help="Iterations floor.")
@_machine_options(env=True)
@click.option("--timeout", type=float, default=3600, show_default=True, help="Seconds per job before it is stopped.")
@click.pass_context
def allreduce_command(
    ctx: click.Context,
    np: int,
    min_size: str,
    max_size: str,
    output: Path,
    contenders: tuple[str, ...],
    cycle_time_sweep: str,
    repeats: int,
    max_iters: int,
    min_iters: int,
    label: str | None,
    env_items: tuple[str, ...],
    wait_idle: float,
    timeout: float,
) -> int:
    """Time allreduce of float32 buffers from --min-size to --max-size on NP ranks of this machine.

    For each size: latency (us), algbw = bytes / time, busbw = algbw x 2(n-1)/n and the count of wrong results,
    for Horovod's allreduce (MPI and Gloo controllers, at Horovod's defaults and at hvdtrain's tuned defaults),
    mpi4py's Allreduce (MPI's own algorithm) and a numpy + mpi4py reference ring. Writes a table to stdout and
    allreduce.json, allreduce.csv and allreduce.png under --output.
    """
    from hvdtrain.bench import allreduce, report

    _check_np(np)
    for name, value in (("--repeats", repeats), ("--max-iters", max_iters), ("--min-iters", min_iters)):
        if value < 1:
            raise click.UsageError(f"{name} must be >= 1, got {value}")
    if min_iters > max_iters:
        raise click.UsageError(f"--min-iters ({min_iters}) is larger than --max-iters ({max_iters})")
    try:
        low, high = metrics.parse_size(min_size), metrics.parse_size(max_size)
        metrics.size_sweep(low, high)
    except metrics.SizeError as exc:
        return fail(str(exc))
    cycles = parse_list(cycle_time_sweep, float, "--cycle-time-sweep")
    common = {"label": label, "command_line": _reproduce(ctx), "timeout_s": timeout, "wait_idle_s": wait_idle}
    document = _guarded(
        lambda: allreduce.run(
            np,
            low,
            high,
            output,
            contenders=contenders or allreduce.CONTENDERS,
            cycle_sweep_ms=cycles,
            repeats=repeats,
            max_iters=max_iters,
            min_iters=min_iters,
            extra_env=_parse_env(env_items),
            **common,
        )
    )
    if isinstance(document, int):
        return document
    click.echo(f"allreduce, np={np}, float32 - {document['label']}\n")
    click.echo(report.allreduce_tables(document["rows"]))
    click.echo(f"\nwrote {output / 'allreduce.json'}, {output / 'allreduce.csv'}, {output / 'allreduce.png'}")
    return 0


def _recipe_module(recipe: str) -> str:
    """The module for RECIPE: ``synthetic`` or a registered recipe; UsageError otherwise."""
    from hvdtrain.bench.scaling import SYNTHETIC, SYNTHETIC_MODULE
    from hvdtrain.recipes import RECIPES

    if recipe == SYNTHETIC:
        return SYNTHETIC_MODULE
    if recipe not in RECIPES:
        known = ", ".join(sorted({SYNTHETIC, *RECIPES}))
        raise click.UsageError(f"unknown recipe {recipe!r} (known: {known})")
    return RECIPES[recipe]


@bench.command(
    "scaling",
    context_settings={**CONTEXT, "ignore_unknown_options": True, "allow_interspersed_args": False},
    short_help="A recipe's samples/s against ranks, tensor fusion, fp16 compression, cycle time.",
    epilog="""\b
Examples:
  hvdtrain bench scaling -np 2 synthetic --model ResNet50 --image-size 32 --batch-size 8
  hvdtrain bench scaling -np 2 synthetic --model small-layers --image-size 32 --batch-size 8
  hvdtrain bench scaling -np 2 --no-knob-sweeps digits --epochs 3""",
)
@_np_option(2, "Largest number of ranks (np = 1..NP); knob sweeps run at NP.")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for scaling.json/.csv/.png, raw/ and logs/ [default: runs/bench/scaling-RECIPE].",
)
@click.option("--repeats", type=int, default=3, show_default=True, help="Runs per setting (median reported).")
@click.option(
    "--fusion-thresholds-mb",
    default=f"0,{tuning.TUNED_FUSION_THRESHOLD_MB}",
    show_default=True,
    help="Tensor-fusion settings to compare (0 = off; whole MiB).",
)
@click.option(
    "--cycle-times-ms",
    default="0.05,0.1,0.25,0.5,1,2",
    show_default=True,
    help="Cycle times to compare (ms).",
)
@click.option(
    "--groups",
    "groups_text",
    default=",".join(GROUPS),
    show_default=True,
    help="Which comparisons to run: ranks (np = 1..NP), fusion, fp16, cycle.",
)
@click.option("--no-knob-sweeps", is_flag=True, help="Shorthand for --groups ranks.")
@click.option(
    "--threads-per-rank",
    type=int,
    default=1,
    show_default=True,
    help="TensorFlow threads per rank (synthetic only).",
)
@_machine_options(env=True)
@click.option("--timeout", type=float, default=1800, show_default=True, help="Seconds per run before it is stopped.")
@click.argument("recipe")
@click.argument("recipe_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def scaling_command(
    ctx: click.Context,
    np: int,
    output: Path | None,
    repeats: int,
    fusion_thresholds_mb: str,
    cycle_times_ms: str,
    groups_text: str,
    no_knob_sweeps: bool,
    threads_per_rank: int,
    label: str | None,
    env_items: tuple[str, ...],
    wait_idle: float,
    timeout: float,
    recipe: str,
    recipe_args: tuple[str, ...],
) -> int:
    """Throughput (samples/s) of RECIPE at np = 1..NP, scaling efficiency T_N / (N T_1), then at NP ranks: tensor
    fusion off vs on, fp16 compression off vs on, and a cycle-time sweep.

    RECIPE is 'synthetic' (python -m hvdtrain.recipes.synthetic) or a registered recipe; options after RECIPE go
    to it. Writes tables to stdout and scaling.json, scaling.csv and scaling.png under --output.
    """
    from hvdtrain.bench import scaling

    _check_np(np)
    module = _recipe_module(recipe)
    if repeats < 1:
        raise click.UsageError(f"--repeats must be >= 1, got {repeats}")
    if threads_per_rank < 1:
        raise click.UsageError(f"--threads-per-rank must be >= 1, got {threads_per_rank}")
    fusion = parse_list(fusion_thresholds_mb, float, "--fusion-thresholds-mb")
    if any(f != int(f) for f in fusion):
        raise click.UsageError("--fusion-thresholds-mb takes whole MiB (horovodrun's --fusion-threshold-mb)")
    cycles = parse_list(cycle_times_ms, float, "--cycle-times-ms")
    groups = ["ranks"] if no_knob_sweeps else [g.strip() for g in groups_text.split(",") if g.strip()]
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown or not groups:
        raise click.UsageError(f"--groups takes {', '.join(GROUPS)}; got {groups_text!r}")
    if ("fusion" in groups and not fusion) or ("cycle" in groups and not cycles):
        raise click.UsageError("--fusion-thresholds-mb and --cycle-times-ms need at least one value each")
    output = output or Path("runs/bench") / f"scaling-{recipe}"
    common = {"label": label, "command_line": _reproduce(ctx), "timeout_s": timeout, "wait_idle_s": wait_idle}
    document = _guarded(
        lambda: scaling.run(
            recipe,
            module,
            recipe_args,
            np,
            output,
            repeats=repeats,
            fusion_thresholds_mb=fusion,
            cycle_times_ms=cycles,
            groups_wanted=groups,
            threads=threads_per_rank,
            extra_env=_parse_env(env_items),
            **common,
        )
    )
    if isinstance(document, int):
        return document
    click.echo(f"{recipe} {' '.join(recipe_args)}: samples/s over all ranks\n")
    click.echo(scaling.tables(document["rows"]))
    click.echo(f"\nwrote {output / 'scaling.json'}, {output / 'scaling.csv'}, {output / 'scaling.png'}")
    return 0


@bench.command(
    "overhead",
    context_settings=CONTEXT,
    short_help="The mnist recipe's steps/s against a hand-written Horovod Keras script.",
    epilog="""\b
Examples:
  hvdtrain bench overhead -np 2 --runs 5
  hvdtrain bench overhead -np 2 --runs 5 --synthetic-data     (no mnist.npz: random data, MNIST's shapes)""",
)
@_np_option(2, "Ranks, all on this machine.")
@click.option("--runs", type=int, default=5, show_default=True, help="Runs of each program (alternating).")
@click.option("--epochs", type=int, default=3, show_default=True, help="Epochs per run (epochs 2..E are timed).")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Batch size per rank (the recipe's).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder holding mnist.npz [default: ~/.keras/datasets].",
)
@click.option("--synthetic-data", is_flag=True, help="Write and use a random mnist.npz with MNIST's shapes.")
@_output_option("overhead", "overhead.json/.csv and logs/")
@_machine_options(env=False)
@click.option("--timeout", type=float, default=1800, show_default=True, help="Seconds per run before it is stopped.")
@click.pass_context
def overhead_command(
    ctx: click.Context,
    np: int,
    runs: int,
    epochs: int,
    batch_size: int,
    data_dir: Path | None,
    synthetic_data: bool,
    output: Path,
    label: str | None,
    wait_idle: float,
    timeout: float,
) -> int:
    """Run the mnist recipe and the same training hand-written with plain Horovod Keras
    (hvdtrain/bench/baseline_mnist.py) alternately, RUNS times each; report steps/s and the median ratio."""
    from hvdtrain.backends import installed_keras_major
    from hvdtrain.bench import overhead

    if installed_keras_major() != 2:
        raise click.UsageError(
            "bench overhead compares with Horovod's own Keras layer, which does not average gradients on Keras 3; "
            "run it on the tf2.15 stack (make setup STACK=tf2.15)"
        )
    _check_np(np)
    for name, value, low in (("--runs", runs, 1), ("--epochs", epochs, 2), ("--batch-size", batch_size, 1)):
        if value < low:
            raise click.UsageError(f"{name} must be >= {low}, got {value}")
    if synthetic_data:
        if data_dir is not None:
            raise click.UsageError("--synthetic-data writes its own file; leave out --data-dir")
        data_dir = output / "data"
        if not (data_dir / "mnist.npz").exists():
            overhead.write_synthetic_mnist(data_dir / "mnist.npz")
    else:
        data_dir = data_dir or Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"
        if not (data_dir / "mnist.npz").exists():
            return fail(f"{data_dir / 'mnist.npz'} not found: put the Keras mnist.npz there, or pass --synthetic-data")
    common = {"label": label, "command_line": _reproduce(ctx), "timeout_s": timeout, "wait_idle_s": wait_idle}
    document = _guarded(lambda: overhead.run(np, runs, epochs, batch_size, data_dir, output, **common))
    if isinstance(document, int):
        return document
    click.echo(overhead.table(document))
    click.echo("\n" + overhead.summary_line(document))
    click.echo(f"wrote {output / 'overhead.json'}, {output / 'overhead.csv'}")
    return 0


@bench.command(
    "stacks",
    context_settings=CONTEXT,
    short_help="The same recipe on the Keras 3 back end (TF 2.21) against the Keras 2 one (TF 2.15).",
    epilog="""\b
Examples (after make setup and make setup STACK=tf2.15):
  hvdtrain bench stacks -np 2 --runs 5
  hvdtrain bench stacks -np 2 --runs 3 --workload resnet50 --batch-size 16""",
)
@_np_option(2, "Ranks, all on this machine.")
@click.option("--runs", type=int, default=5, show_default=True, help="Runs of each stack per workload (alternating).")
@click.option(
    "--workload",
    "workload_names",
    type=click.Choice(["mnist", "resnet50", "resnet50-alone"]),
    multiple=True,
    help="What to train (repeatable) [default: all three]; resnet50-alone: ResNet50 without gradient sync, the "
    "frameworks' own speed.",
)
@click.option("--epochs", type=int, default=3, show_default=True, help="mnist: epochs per run (2..E are timed).")
@click.option("--iters", type=int, default=5, show_default=True, help="resnet50*: timed iterations of 5 batches.")
@click.option("--mnist-samples", type=int, default=60000, show_default=True, help="mnist: training images.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Batch size per rank.")
@click.option(
    "--keras3-python",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".venv/bin/python"),
    show_default=True,
    help="The tf2.21 stack's Python.",
)
@click.option(
    "--keras2-python",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".venv-tf2.15/bin/python"),
    show_default=True,
    help="The tf2.15 stack's Python.",
)
@_output_option("stacks", "stacks.json/.csv and logs/")
@_machine_options(env=False)
@click.option("--timeout", type=float, default=1800, show_default=True, help="Seconds per run before it is stopped.")
@click.pass_context
def stacks_command(
    ctx: click.Context,
    np: int,
    runs: int,
    workload_names: tuple[str, ...],
    epochs: int,
    iters: int,
    mnist_samples: int,
    batch_size: int,
    keras3_python: Path,
    keras2_python: Path,
    output: Path,
    label: str | None,
    wait_idle: float,
    timeout: float,
) -> int:
    """Run each workload on both stacks alternately, RUNS times each, with mpirun and the same knobs; report
    steps/s and the median ratio keras3 / keras2."""
    from hvdtrain.bench import stacks

    _check_np(np)
    limits = (
        ("--runs", runs, 1),
        ("--epochs", epochs, 2),
        ("--iters", iters, 1),
        ("--mnist-samples", mnist_samples, np),
    )
    for name, value, low in limits:
        if value < low:
            raise click.UsageError(f"{name} must be >= {low}, got {value}")
    if batch_size < 1:
        raise click.UsageError(f"--batch-size must be >= 1, got {batch_size}")
    pythons = {"keras3": keras3_python.absolute(), "keras2": keras2_python.absolute()}
    try:
        stacks.check_pythons(pythons)
    except stacks.StackError as exc:
        return fail(str(exc))
    names = list(dict.fromkeys(workload_names)) or ["mnist", "resnet50", "resnet50-alone"]
    common = {"label": label, "command_line": _reproduce(ctx), "timeout_s": timeout, "wait_idle_s": wait_idle}
    document = _guarded(
        lambda: stacks.run(pythons, names, np, runs, epochs, batch_size, iters, mnist_samples, output, **common)  # type: ignore[arg-type]
    )
    if isinstance(document, int):
        return document
    click.echo(stacks.table(document))
    click.echo("\n" + stacks.summary_line(document))
    click.echo(f"wrote {output / 'stacks.json'}, {output / 'stacks.csv'}")
    return 0


SYNTHETIC_HELP = """Run the synthetic throughput benchmark (python -m hvdtrain.recipes.synthetic) on every rank.

The first thing to run on a new cluster: random images through a keras.applications model (default ResNet50) or
many small layers, warmup excluded; rank 0 prints img/sec per rank and in total (mean +- 1.96 std). Hosts and
launcher work as for `hvdtrain run`: -H or --hostfile, else the Slurm/PBS/LSF allocation, else localhost;
horovodrun (default) or mpirun. Everything is checked before anything starts; --dry-run prints the command."""


def _build_synthetic() -> click.Command:
    """``hvdtrain bench synthetic``: the synthetic recipe's own options plus ``hvdtrain run``'s launch options."""
    from hvdtrain.launch_config import launch_options
    from hvdtrain.recipes import synthetic

    def callback(dry_run: bool, **values: Any) -> int:
        from hvdtrain.launch import build_command, running_as_root
        from hvdtrain.launch_config import launch_values, place, to_spec
        from hvdtrain.presets import merge_launch
        from hvdtrain.start import LAUNCH_ERRORS, launch

        launch_cli = launch_values(values)
        config = synthetic.SyntheticConfig(**values)
        problem = synthetic.config_problem(config)
        if problem is not None:
            return fail(problem)
        program = [sys.executable, "-m", synthetic.__name__, *synthetic.config_args(config)]
        try:
            settings = merge_launch(None, launch_cli).value
            spec = to_spec(settings, place(settings), program, allow_run_as_root=running_as_root())
            command = build_command(spec)
        except LAUNCH_ERRORS as exc:
            return fail(str(exc))
        if dry_run:
            click.echo(command.shell_line())
            return 0
        return launch(spec, command, settings.check_hosts, lambda: synthetic.main(synthetic.config_args(config)))

    dry_run = click.Option(["--dry-run"], is_flag=True, help="Check everything, print the exact command, exit 0.")
    return click.Command(
        "synthetic",
        params=[*synthetic.command.params, *launch_options(), dry_run],
        callback=callback,
        help=SYNTHETIC_HELP,
        short_help="The synthetic throughput benchmark (img/sec), launched like hvdtrain run.",
        context_settings=CONTEXT,
        epilog="""\b
Examples:
  hvdtrain bench synthetic -np 2 --image-size 32 --batch-size 8
  hvdtrain bench synthetic -np 2 --model small-layers --image-size 32 --batch-size 8 --fp16-allreduce
  hvdtrain bench synthetic --hostfile hostfiles/2nodes-4gpus --model ResNet101 --batch-size 64""",
    )


bench.add_command(_build_synthetic())
bench.add_command(cluster_command)


@bench.command("stream", context_settings=CONTEXT, short_help="Streamed input: peak RSS per rank, input vs model rate.")
@click.option("--gib", type=click.FloatRange(min=0.001), default=4.0, show_default=True, help="Size of the data set.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Where the generated set goes (kept, reused for the same size).",
)
@click.option("--np", "np_", type=click.IntRange(min=1), default=2, show_default=True, help="Ranks on this machine.")
@click.option("--shards", type=click.IntRange(min=1), default=16, show_default=True, help="Files of the set.")
@click.option("--steps", type=click.IntRange(min=1), default=50, show_default=True, help="Batches per rate measured.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Batch per rank.")
def stream_command(gib: float, directory: Path, np_: int, shards: int, steps: int, batch_size: int) -> int:
    """Train one epoch of ResNet-8 on a generated CIFAR-shaped TFRecord set of --gib GiB (several times a rank's
    memory budget), streamed; print each rank's peak RSS and its input-pipeline rate against the model's step rate
    (input-bound when the pipeline is the slower). With 1 epoch over GiBs this takes long: start small."""
    from hvdtrain.bench import stream

    def progress(line: str) -> None:
        click.echo(f"hvdtrain bench stream: {line}", err=True)

    try:
        shards_dir = stream.generate(directory, gib, shards, progress)
        on_disk = sum(p.stat().st_size for p in shards_dir.glob("train-*.tfrecord")) / (1 << 30)
        progress(f"training on {np_} ranks")
        reports = stream.run(np_, shards_dir, directory / "result", steps, batch_size)
    except (OSError, RuntimeError) as exc:  # JobFailed is a RuntimeError
        return _failed(str(exc))
    click.echo(stream.table(reports, on_disk))
    return 0


@bench.command("report", context_settings=CONTEXT, short_help="A result file as markdown: command and tables.")
@click.argument("result", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def report_command(result: Path) -> int:
    """Print RESULT (an allreduce.json, scaling.json, overhead.json or stacks.json) as GitHub markdown: where and
    when it was measured, the command that reproduces it, then its tables. docs/benchmarks.md is made of these."""
    from hvdtrain.bench import cluster, overhead, report, scaling, stacks

    try:
        document = json.loads(result.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return fail(f"{result}: not readable as JSON ({type(exc).__name__})")
    kind = document.get("benchmark") if isinstance(document, dict) else None
    try:
        if kind == "allreduce":
            body = report.allreduce_tables(document["rows"], markdown=True)
        elif kind == "scaling":
            body = scaling.tables(document["rows"], markdown=True)
        elif kind == "overhead":
            body = overhead.table(document, markdown=True) + "\n\n" + overhead.summary_line(document)
        elif kind == "stacks":
            body = stacks.table(document, markdown=True) + "\n\n" + stacks.summary_line(document)
        elif kind == "cluster":
            body = cluster.tables(document["rows"], markdown=True)
        else:
            return fail(f"{result}: not an allreduce, scaling, overhead, stacks or cluster result (no 'benchmark' key)")
    except (KeyError, TypeError, ValueError) as exc:
        return fail(f"{result}: a {kind} result with missing or malformed fields ({type(exc).__name__}: {exc})")
    where = document.get("label") or "unlabelled machine"
    click.echo(f"Measured {document.get('date', '?')} on {where}:\n\n```\n{document.get('command', '?')}\n```\n")
    click.echo(body)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m hvdtrain.bench``: the group alone, exiting with its code."""
    code = run_cli(bench, argv, prog_name="python -m hvdtrain.bench")
    sys.exit(code if isinstance(code, int) else 0)
