"""``hvdtrain bench cluster``: the click command (the driver is :mod:`hvdtrain.bench.cluster`)."""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from pathlib import Path

import click

from hvdtrain.bench.runner import JobFailed
from hvdtrain.options import fail

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
MAX_HOSTS = 4
CONTENDER_NAMES = (
    "single hvd-mpi hvd-mpi-fp16 hvd-mpi-ompi hvd-mpi-nofusion hvd-mpi-bpps2 hvd-mpi-hier hvd-gloo hvd-gloo-fp16 mwms "
    "ps1 ps2"
).split()  # hvdtrain.bench.cluster.CONTENDERS, named here so that --help imports nothing more


def _rates(text: str) -> list[float | None]:
    """``"1000,10000"`` -> [1000.0, 10000.0]; ``none`` = unshaped links."""
    rates: list[float | None] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.lower() == "none":
            rates.append(None)
            continue
        try:
            value = float(part)
        except ValueError:
            raise click.BadParameter(
                f"{part!r} is not a number of Mbit/s (or 'none')", param_hint="--rate-mbit"
            ) from None
        if value <= 0:
            raise click.BadParameter(f"{part} must be > 0", param_hint="--rate-mbit")
        rates.append(value)
    if not rates:
        raise click.BadParameter("give at least one rate", param_hint="--rate-mbit")
    return rates


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _reproduce(ctx: click.Context) -> str:
    argv = sys.argv[1:]
    name = ctx.info_name or ""
    rest = argv[argv.index(name) + 1 :] if name in argv else argv
    return " ".join([ctx.command_path, *(shlex.quote(a) for a in rest)])


@click.command(
    "cluster",
    context_settings=CONTEXT,
    short_help="hvdtrain against MultiWorkerMirrored and parameter servers, on shaped links between namespace hosts.",
    epilog="""\b
Examples (as root):
  hvdtrain bench cluster --hosts 2 --rate-mbit 1000 --contender hvd-mpi --contender mwms --contender ps1
  hvdtrain bench cluster --hosts 2 --rate-mbit 1000,10000 --model small-layers --depth 100 --width 64
  hvdtrain bench cluster --hosts 4 --rate-mbit 1000 --model ResNet50 --batch-size 16 --repeats 3""",
)
@click.option("--hosts", type=int, default=2, show_default=True, help=f"Worker hosts (2..{MAX_HOSTS}).")
@click.option(
    "--rate-mbit",
    default="1000",
    show_default=True,
    metavar="MBIT,MBIT,...",
    help="Link rates to compare, each direction of each host's link (none = unshaped).",
)
@click.option(
    "--contender",
    "contenders",
    multiple=True,
    help=f"Run only these (repeatable) [default: all]: {', '.join(CONTENDER_NAMES)}.",
)
@click.option("--model", default="ResNet50", show_default=True, help="A tf.keras.applications model or small-layers.")
@click.option("--image-size", type=int, default=32, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True, help="Samples per worker host and step.")
@click.option("--num-classes", type=int, default=10, show_default=True)
@click.option("--depth", type=int, default=100, show_default=True, help="small-layers: dense layers.")
@click.option("--width", type=int, default=64, show_default=True, help="small-layers: units per layer.")
@click.option("--num-warmup-batches", type=int, default=4, show_default=True)
@click.option("--num-batches-per-iter", type=int, default=4, show_default=True)
@click.option("--num-iters", type=int, default=5, show_default=True, help="Timed iterations.")
@click.option("--threads", type=int, default=None, help="TensorFlow threads per process [default: cores / processes].")
@click.option("--repeats", type=int, default=1, show_default=True, help="Runs of each contender (interleaved).")
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/bench/cluster"),
    show_default=True,
    help="Folder for cluster.json/.csv/.png, logs/, plans/ and raw/.",
)
@click.option("--label", default=None, help="What the machine is, for the JSON and plot titles.")
@click.option("--timeout", type=float, default=1800, show_default=True, help="Seconds per run before it is stopped.")
@click.pass_context
def cluster_command(
    ctx: click.Context,
    hosts: int,
    rate_mbit: str,
    contenders: tuple[str, ...],
    output: Path,
    label: str | None,
    timeout: float,
    repeats: int,
    **values: object,
) -> int:
    """Build HOSTS hosts as network namespaces on a bridge, shape every link to each --rate-mbit with tc (both ways,
    short queue), and train the same model on them with each contender: hvdtrain (Horovod over mpirun and Gloo; fp16,
    no fusion, 2 passes per step, hierarchical), tf.distribute.MultiWorkerMirroredStrategy and
    ParameterServerStrategy (1 and 2 servers). Reports samples/s, scaling efficiency against one process, and the
    bytes each link carried per step (from its counters) against the ring's theory. Needs root. Everything it
    builds is removed afterwards, also when a run fails; a cluster left by a killed run is removed on the next start.
    """
    from hvdtrain import netns
    from hvdtrain.bench import cluster

    if not 2 <= hosts <= MAX_HOSTS:
        raise click.UsageError(f"--hosts must be 2..{MAX_HOSTS}, got {hosts}")
    unknown = [c for c in contenders if c not in cluster.CONTENDERS]
    if unknown:
        raise click.UsageError(f"unknown --contender {unknown[0]!r} (known: {', '.join(cluster.CONTENDERS)})")
    for name in ("batch_size", "image_size", "num_classes", "depth", "width", "num_batches_per_iter", "num_iters"):
        if int(values[name]) < 1:  # type: ignore[call-overload]
            raise click.UsageError(f"--{name.replace('_', '-')} must be >= 1, got {values[name]}")
    if repeats < 1:
        raise click.UsageError(f"--repeats must be >= 1, got {repeats}")
    names = list(dict.fromkeys(contenders)) or list(cluster.CONTENDERS)
    workload = cluster.Workload(**values)  # type: ignore[arg-type]
    if "hvd-mpi-hier" in names and workload.batch_size % 2:
        raise click.UsageError("hvd-mpi-hier splits --batch-size over 2 ranks per host: give an even --batch-size")
    rates = _rates(rate_mbit)
    problem = netns.cannot_build()
    if problem is not None:
        return fail(f"bench cluster: {problem}")
    # SIGTERM (a scheduler's or a user's kill) unwinds like Ctrl-C, so the cluster is removed on the way out.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main else None
    try:
        document = cluster.run(names, workload, hosts, rates, repeats, output, label, _reproduce(ctx), timeout)
    except (JobFailed, netns.ClusterError) as exc:
        click.echo(f"hvdtrain: error: {exc}", err=True)
        return 1
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    click.echo(f"{workload.model}, {hosts} hosts - {document['label']}\n")
    click.echo(cluster.tables(document["rows"]))
    click.echo(f"\nwrote {output / 'cluster.json'}, {output / 'cluster.csv'}, {output / 'cluster.png'}")
    return 0
