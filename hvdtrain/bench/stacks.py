"""``hvdtrain bench stacks``: the same recipe on the Keras 3 back end (TF 2.21) against the Keras 2 back end (TF 2.15).

Each stack lives in its own virtual environment (``.venv`` and ``.venv-tf2.15`` after ``make setup`` for both); the
two run alternately (:func:`hvdtrain.bench.runner.alternate`) with mpirun on this machine, the same knobs (hvdtrain's
tuned defaults, which both back ends apply) and the same arguments. Workloads:

- ``mnist``: the mnist recipe on a random file with MNIST's shapes (60,000 training images, or
  ``--mnist-samples``); samples/s over epochs 2..E (the recipe's own throughput line);
- ``resnet50``: the synthetic recipe's ResNet50 on random 32x32 images; total img/sec after the warmup;
- ``resnet50-alone``: the same with ``--no-gradient-sync``: the same processes and threads, each rank training alone.
  Its ratio is the frameworks' own (TensorFlow 2.21 + Keras 3 against 2.15 + Keras 2), without any back end: the
  back end's own cost is how far ``resnet50``'s ratio falls below it.

The result is, per workload, the median of the per-pair ratios keras3 / keras2 of steps/s: 1.0 means the Keras 3
back end is as fast, 0.95 that it is 5% slower.
"""

from __future__ import annotations

import datetime
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvdtrain import tuning
from hvdtrain.bench import report
from hvdtrain.bench.overhead import read_samples_per_sec, same_knobs_note, write_synthetic_mnist
from hvdtrain.bench.runner import JobFailed, alternate, machine_label, ratio_summary, running_as_root, say
from hvdtrain.launch import LaunchCommand, LaunchSpec, build_command

STACKS = ("keras3", "keras2")  # subject, reference
CSV_COLUMNS = ("workload", "run", "program", "order", "samples_per_sec", "steps_per_sec")
_TOTAL_IMG_SEC_RE = re.compile(r"Total img/sec on \d+ rank\(s\): (\d+(?:\.\d+)?)")
RUN_TIMEOUT_S = 1800


class StackError(ValueError):
    """A Python that is missing or has another Keras than its stack needs; the message is one line."""


@dataclass(frozen=True)
class Workload:
    """One thing to train on both stacks: its recipe arguments and how to read samples/s from a job's log."""

    name: str
    args: tuple[str, ...]
    batch_size: int

    def rate_of(self, log_path: Path) -> float:
        if self.name == "mnist":
            return read_samples_per_sec(log_path)
        found = _TOTAL_IMG_SEC_RE.findall(log_path.read_text(errors="replace"))
        if not found:
            raise JobFailed(f"no 'Total img/sec' line in {log_path}")
        return float(found[-1])


def workloads(names: list[str], data_dir: Path, epochs: int, batch_size: int, iters: int) -> list[Workload]:
    """The workloads named, with their recipe arguments."""
    resnet50 = (
        ("-m", "hvdtrain.recipes.synthetic", "--model", "ResNet50", "--image-size", "32")
        + ("--batch-size", str(batch_size), "--num-iters", str(iters), "--num-batches-per-iter", "5")
        + ("--num-warmup-batches", "5")
    )
    table = {
        "mnist": Workload(
            "mnist",
            ("-m", "hvdtrain.recipes.mnist", "--data-dir", str(data_dir), "--epochs", str(epochs))
            + ("--batch-size", str(batch_size)),
            batch_size,
        ),
        "resnet50": Workload("resnet50", resnet50, batch_size),
        "resnet50-alone": Workload("resnet50-alone", (*resnet50, "--no-gradient-sync"), batch_size),
    }
    return [table[n] for n in names]


def keras_major_of(python: Path) -> int:
    """The major version of the Keras installed beside ``python`` (StackError if it has none)."""
    if not python.is_file():
        raise StackError(f"{python} does not exist (set up that stack first: make setup STACK=...)")
    probe = "import importlib.metadata as m; print(m.version('keras'))"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise StackError(f"{python} has no Keras installed")
    return int(done.stdout.strip().split(".")[0])


def check_pythons(pythons: dict[str, Path]) -> None:
    """StackError unless each Python has the Keras its name says."""
    for name, python in pythons.items():
        major = keras_major_of(python)
        if f"keras{major}" != name:
            raise StackError(f"{python} has Keras {major}, not what --{name}-python needs")


def command_for(python: Path, workload: Workload, np: int) -> LaunchCommand:
    spec = LaunchSpec(
        program=[str(python), *workload.args],
        np=np,
        launcher="mpirun",
        knobs=tuning.hvdtrain_tuned_knobs(),
        allow_run_as_root=running_as_root(),
        extra_env={tuning.MPI_YIELD_VAR: "1"},
    )
    return build_command(spec)


def run(
    pythons: dict[str, Path],
    names: list[str],
    np: int,
    runs: int,
    epochs: int,
    batch_size: int,
    iters: int,
    mnist_samples: int,
    output_dir: Path,
    label: str | None = None,
    command_line: str = "",
    timeout_s: float = RUN_TIMEOUT_S,
    wait_idle_s: float = 0.0,
) -> dict[str, Any]:
    """Alternate the stacks ``runs`` times per workload; write stacks.{json,csv}; return the document."""
    data_dir = output_dir / f"data-{mnist_samples}"
    if "mnist" in names and not (data_dir / "mnist.npz").exists():
        write_synthetic_mnist(data_dir / "mnist.npz", train_samples=mnist_samples)
    results: dict[str, Any] = {}
    all_rows: list[dict[str, Any]] = []
    for workload in workloads(names, data_dir, epochs, batch_size, iters):
        commands = {name: command_for(pythons[name], workload, np) for name in STACKS}
        say(f"bench stacks: {workload.name}, keras3 vs keras2, np={np}, {runs} run(s) each")
        rows = alternate(
            commands,
            runs,
            output_dir / "logs",
            workload.rate_of,
            workload.batch_size * np,
            timeout_s,
            wait_idle_s,
            tag=f"{workload.name}-",
        )
        rows = [{"workload": workload.name, **r} for r in rows]
        all_rows += rows
        results[workload.name] = {
            "commands": {name: c.shell_line() for name, c in commands.items()},
            "rows": rows,
            "summary": ratio_summary(rows, *STACKS),
        }
    document = {
        "benchmark": "stacks",
        "label": label or machine_label(),
        "np": np,
        "mnist_train_samples": mnist_samples,
        "pythons": {name: str(p) for name, p in pythons.items()},
        "knobs": same_knobs_note(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command_line,
        "workloads": results,
    }
    report.write_json(output_dir / "stacks.json", document)
    report.write_csv(output_dir / "stacks.csv", all_rows, CSV_COLUMNS)
    return document


def table(document: dict[str, Any], markdown: bool = False) -> str:
    """Per workload and run: steps/s on each stack and the ratio; then the medians."""
    render = report.markdown_table if markdown else report.format_table
    body = []
    for name, result in document["workloads"].items():
        by_run: dict[int, dict[str, float]] = {}
        for r in result["rows"]:
            by_run.setdefault(r["run"], {})[r["program"]] = r["steps_per_sec"]
        body += [
            [name, run, f"{v['keras3']:.2f}", f"{v['keras2']:.2f}", f"{v['keras3'] / v['keras2']:.3f}"]
            for run, v in sorted(by_run.items())
        ]
        s = result["summary"]
        med = ("keras3_steps_per_sec_median", "keras2_steps_per_sec_median")
        body.append([name, "median", f"{s[med[0]]:.2f}", f"{s[med[1]]:.2f}", f"{s['ratio_median']:.3f}"])
    return render(["workload", "run", "keras3 steps/s", "keras2 steps/s", "keras3 / keras2"], body)


def summary_line(document: dict[str, Any]) -> str:
    parts = [
        f"{name}: median {r['summary']['ratio_median']:.3f} (min {r['summary']['ratio_min']:.3f}, max "
        f"{r['summary']['ratio_max']:.3f} over {len(r['summary']['ratios'])} pairs)"
        for name, r in document["workloads"].items()
    ]
    return "keras3 / keras2 steps/s: " + "; ".join(parts)
