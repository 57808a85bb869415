"""Sparse embedding gradients, allgathered (Horovod's default) or allreduced dense (``--sparse-as-dense``).

    python -m hvdtrain.bench.sparse --recipe imdb --recipe movielens --runs 3 --output runs/bench-sparse

For each recipe, on 2 ranks (mpirun) on this machine, with generated data of the real set's shape (IMDB: 25k-word
Zipf vocabulary, 230-word reviews; ml-100k: 943 users x 1,682 items, 100k ratings; nothing downloads):

- steps/s both ways, runs alternated (sparse first on odd runs, dense first on even ones, so drift and other people's
  load hit both alike), medians reported, from the recipe's ``throughput`` line (epochs 2..E);
- bytes per step, from one extra run each way with a Horovod timeline: every tensor that a collective completes once
  per step (the gradients), at the size the timeline records (allreduce: the tensor; allgather: the gathered result,
  values and indices). On the wire of a ring, each rank sends 2(n-1)/n of an allreduced tensor and (n-1)/n of a
  gathered one: that estimate is reported too.
"""

from __future__ import annotations

import datetime
import json
import re
import statistics
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import click
import numpy as np

from hvdtrain import tuning
from hvdtrain.bench import report
from hvdtrain.bench.overhead import read_samples_per_sec
from hvdtrain.bench.recsys_data import low_rank_ratings, write_aclimdb, write_ratings
from hvdtrain.bench.runner import JobFailed, alternate, machine_label, run_job, running_as_root, say
from hvdtrain.launch import LaunchCommand, LaunchSpec, build_command

NP = 2
# Per recipe: its options for the benchmark (the recipe's defaults otherwise) and the batch size they imply.
SETTINGS: dict[str, list[str]] = {"imdb": ["--epochs", "3"], "movielens": ["--epochs", "3"]}
BATCH = {"imdb": 64, "movielens": 256}
_DTYPE_BYTES = {"float32": 4, "float64": 8, "int32": 4, "int64": 8, "float16": 2}
_SHAPE = re.compile(r"\d+")


def write_data(recipe: str, data_dir: Path) -> Path:
    """Generated data with the real set's shape (written once; reused when there)."""
    if recipe == "imdb":
        if not (data_dir / "aclImdb").is_dir():
            write_aclimdb(data_dir, train=6000, test=2000, length=230, vocabulary=25_000)
    elif not (data_dir / "ml-100k" / "u.data").is_file():
        ratings = low_rank_ratings(users=943, items=1682, rank=8, per_user=(20, 193))
        write_ratings(data_dir / "ml-100k" / "u.data", ratings, "u.data")
    return data_dir


def command_for(recipe: str, data_dir: Path, dense: bool, extra_env: dict[str, str] | None = None) -> LaunchCommand:
    program = [sys.executable, "-m", f"hvdtrain.recipes.{recipe}", "--data-dir", str(data_dir), *SETTINGS[recipe]]
    program.append("--sparse-as-dense" if dense else "--no-sparse-as-dense")
    spec = LaunchSpec(
        program=program,
        np=NP,
        launcher="mpirun",
        knobs=tuning.hvdtrain_tuned_knobs(),
        allow_run_as_root=running_as_root(),
        extra_env={tuning.MPI_YIELD_VAR: "1", **(extra_env or {})},
    )
    return build_command(spec)


def _dtype(name: str) -> str:
    """``HOROVOD_FLOAT32`` or ``float32`` -> ``float32``."""
    return name.lower().removeprefix("horovod_")


def timeline_bytes(path: Path) -> dict[str, float]:
    """Bytes per step of the collectives a Horovod timeline records once per step (the gradients), by operation."""
    events = json.loads(path.read_text())
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name" and "name" in e["args"]}
    top: dict[int, str] = {}
    done: Counter[str] = Counter()
    sizes: dict[str, tuple[str, int]] = {}
    for e in events:
        if e.get("ph") == "B" and e.get("name") in ("ALLREDUCE", "ALLGATHER", "BROADCAST"):
            top[e["pid"]] = e["name"]
        elif e.get("ph") == "E" and "shape" in e.get("args", {}):
            name = names[e["pid"]]
            count = int(np.prod([int(d) for d in _SHAPE.findall(e["args"]["shape"])] or [1]))
            sizes[name] = (top.get(e["pid"], "?"), count * _DTYPE_BYTES[_dtype(e["args"]["dtype"])])
            done[name] += 1
    if not done:
        raise JobFailed(f"{path}: no completed collective in the timeline")
    steps = max(done.values())
    per_step: Counter[str] = Counter()
    for name, count in done.items():
        if count == steps:
            op, size = sizes[name]
            per_step[op] += size
    return {op.lower(): float(size) for op, size in per_step.items()}


def wire_bytes(per_op: dict[str, float], n: int = NP) -> float:
    """What each rank sends per step on a ring: 2(n-1)/n of allreduced bytes, (n-1)/n of gathered ones."""
    return per_op.get("allreduce", 0.0) * 2 * (n - 1) / n + per_op.get("allgather", 0.0) * (n - 1) / n


def run(recipes: list[str], runs: int, output_dir: Path, timeout_s: float, command_line: str) -> dict[str, Any]:
    """Measure each recipe both ways; write sparse.json; return the document."""
    results = {}
    for recipe in recipes:
        data_dir = write_data(recipe, output_dir / "data" / recipe)
        commands = {"sparse": command_for(recipe, data_dir, False), "dense": command_for(recipe, data_dir, True)}
        say(f"bench sparse: {recipe}, np={NP}, {runs} run(s) each way, alternated")
        rows = alternate(
            commands, runs, output_dir / "logs", read_samples_per_sec, BATCH[recipe] * NP, timeout_s, tag=f"{recipe}-"
        )
        traffic = {}
        for mode, dense in (("sparse", False), ("dense", True)):
            timeline = output_dir / "timelines" / f"{recipe}-{mode}.json"
            timeline.parent.mkdir(parents=True, exist_ok=True)
            command = command_for(recipe, data_dir, dense, {"HOROVOD_TIMELINE": str(timeline)})
            run_job(command, output_dir / "logs" / f"{recipe}-{mode}-timeline.log", timeout_s)
            per_op = timeline_bytes(timeline)
            traffic[mode] = {"payload_bytes_per_step": per_op, "wire_bytes_per_rank_per_step": wire_bytes(per_op)}
            say(f"[{recipe} {mode}] per step: {per_op} -> {wire_bytes(per_op) / 1e6:.2f} MB sent per rank")
        medians = {
            mode: statistics.median(float(r["steps_per_sec"]) for r in rows if r["program"] == mode)
            for mode in ("sparse", "dense")
        }
        results[recipe] = {
            "commands": {name: c.shell_line() for name, c in commands.items()},
            "rows": rows,
            "steps_per_sec_median": medians,
            "traffic": traffic,
        }
    document = {
        "benchmark": "sparse",
        "label": machine_label(),
        "np": NP,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command_line,
        "results": results,
    }
    report.write_json(output_dir / "sparse.json", document)
    return document


def table(document: dict[str, Any]) -> str:
    """One row per recipe and mode: steps/s (median, range) and bytes per step."""
    body = []
    for recipe, result in document["results"].items():
        for mode in ("sparse", "dense"):
            rates = [float(r["steps_per_sec"]) for r in result["rows"] if r["program"] == mode]
            traffic = result["traffic"][mode]
            payload = sum(traffic["payload_bytes_per_step"].values())
            body.append(
                [
                    recipe,
                    "allgather (default)" if mode == "sparse" else "--sparse-as-dense",
                    f"{result['steps_per_sec_median'][mode]:.1f}",
                    f"{min(rates):.1f}-{max(rates):.1f}",
                    f"{payload / 1e6:.2f}",
                    f"{traffic['wire_bytes_per_rank_per_step'] / 1e6:.2f}",
                ]
            )
    headers = ["recipe", "embedding gradients", "steps/s median", "range", "MB/step (timeline)", "MB sent/rank/step"]
    return report.markdown_table(headers, body)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--recipe", "recipes", multiple=True, type=click.Choice(sorted(SETTINGS)), help="Default: both.")
@click.option("--runs", type=int, default=3, show_default=True, help="Timed runs each way (alternated).")
@click.option("--output", type=click.Path(path_type=Path), default=Path("runs/bench-sparse"), show_default=True)
@click.option("--timeout", type=float, default=1800, show_default=True, help="Seconds per run before it is stopped.")
def main(recipes: tuple[str, ...], runs: int, output: Path, timeout: float) -> None:
    """Sparse (allgather) against dense (allreduce) embedding gradients on 2 ranks: steps/s and bytes per step."""
    command_line = " ".join(["python -m hvdtrain.bench.sparse", *sys.argv[1:]])
    try:
        document = run(list(recipes) or sorted(SETTINGS), runs, output, timeout, command_line)
    except JobFailed as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(table(document))


if __name__ == "__main__":
    main()
