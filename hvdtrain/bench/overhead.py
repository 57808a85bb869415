"""``hvdtrain bench overhead``: the mnist recipe against the same training written by hand with plain Horovod Keras.

Runs ``python -m hvdtrain.recipes.mnist`` and :mod:`hvdtrain.bench.baseline_mnist` alternately (recipe first on odd
runs, baseline first on even ones, so drift and other people's load hit both alike), each with horovodrun on this
machine with the same settings: what hvdtrain's back end sets on a CPU host (tuned cycle time and fusion threshold,
``OMPI_MCA_mpi_yield_when_idle=1``), spelled out so that the hand-written script gets them too and only the code
differs.
Each run reports samples/s over epochs 2..E; steps/s = samples/s / (batch x ranks). The result is the median of the
per-pair ratios recipe / baseline: 1.0 means no overhead, 0.98 means the recipe is 2% slower.

Without the real ``mnist.npz``, ``--synthetic-data`` writes a random file with MNIST's shapes and dtypes (60,000 and
10,000 28x28 uint8 images): speed does not depend on the pixel values.
"""

from __future__ import annotations

import datetime
import re
import sys
from pathlib import Path
from typing import Any

from hvdtrain import tuning
from hvdtrain.bench import report
from hvdtrain.bench.runner import JobFailed, alternate, machine_label, ratio_summary, running_as_root, say
from hvdtrain.launch import LaunchCommand, LaunchSpec, build_command

RECIPE_MODULE = "hvdtrain.recipes.mnist"
BASELINE_MODULE = "hvdtrain.bench.baseline_mnist"
_THROUGHPUT_RE = re.compile(r"throughput (\d+(?:\.\d+)?) \+- (\d+(?:\.\d+)?) samples/s")
CSV_COLUMNS = ("run", "program", "order", "samples_per_sec", "steps_per_sec")
RUN_TIMEOUT_S = 1800


def write_synthetic_mnist(path: Path, seed: int = 0, train_samples: int = 60000) -> Path:
    """A random ``mnist.npz`` with the real file's shapes and dtypes: ``train_samples`` training, 10,000 test images."""
    import numpy as np

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (train_samples, 28, 28), dtype=np.uint8),
        y_train=rng.integers(0, 10, train_samples, dtype=np.uint8),
        x_test=rng.integers(0, 256, (10000, 28, 28), dtype=np.uint8),
        y_test=rng.integers(0, 10, 10000, dtype=np.uint8),
    )
    return path


def command_for(module: str, np: int, data_dir: Path, epochs: int, batch_size: int) -> LaunchCommand:
    program = [sys.executable, "-m", module, "--data-dir", str(data_dir), "--epochs", str(epochs)]
    program += ["--batch-size", str(batch_size)]
    spec = LaunchSpec(
        program=program,
        np=np,
        launcher="horovodrun",
        controller="mpi",
        knobs=tuning.hvdtrain_tuned_knobs(),
        allow_run_as_root=running_as_root(),
        extra_env={tuning.MPI_YIELD_VAR: "1"},
    )
    return build_command(spec)


def same_knobs_note() -> str:
    """What both programs of a comparison run with: hvdtrain's tuned knobs, spelled out."""
    return (
        f"the same for both: cycle {tuning.TUNED_CYCLE_TIME_MS} ms, fusion {tuning.TUNED_FUSION_THRESHOLD_MB} MiB, "
        f"{tuning.MPI_YIELD_VAR}=1"
    )


def read_samples_per_sec(log_path: Path) -> float:
    found = _THROUGHPUT_RE.findall(log_path.read_text(errors="replace"))
    if not found:
        raise JobFailed(f"no 'throughput X +- Y samples/s' line in {log_path}")
    return float(found[-1][0])


def run(
    np: int,
    runs: int,
    epochs: int,
    batch_size: int,
    data_dir: Path,
    output_dir: Path,
    label: str | None = None,
    command_line: str = "",
    timeout_s: float = RUN_TIMEOUT_S,
    wait_idle_s: float = 0.0,
) -> dict[str, Any]:
    """Alternate recipe and baseline ``runs`` times each; write overhead.{json,csv}; return the document."""
    programs = {"recipe": RECIPE_MODULE, "baseline": BASELINE_MODULE}
    commands = {name: command_for(module, np, data_dir, epochs, batch_size) for name, module in programs.items()}
    say(f"bench overhead: mnist recipe vs hand-written Horovod Keras, np={np}, {runs} run(s) each, {epochs} epochs")
    rows = alternate(commands, runs, output_dir / "logs", read_samples_per_sec, batch_size * np, timeout_s, wait_idle_s)
    summary = ratio_summary(rows, "recipe", "baseline")
    summary["overhead_percent"] = (1 - summary["ratio_median"]) * 100
    document = {
        "benchmark": "overhead",
        "label": label or machine_label(),
        "np": np,
        "epochs": epochs,
        "batch_size": batch_size,
        "data_dir": str(data_dir),
        "knobs": same_knobs_note(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command_line,
        "commands": {name: c.shell_line() for name, c in commands.items()},
        "rows": rows,
        "summary": summary,
    }
    report.write_json(output_dir / "overhead.json", document)
    report.write_csv(output_dir / "overhead.csv", rows, CSV_COLUMNS)
    return document


def table(document: dict[str, Any], markdown: bool = False) -> str:
    """Runs side by side, then the medians and the ratio."""
    render = report.markdown_table if markdown else report.format_table
    by_run: dict[int, dict[str, float]] = {}
    for r in document["rows"]:
        by_run.setdefault(r["run"], {})[r["program"]] = r["steps_per_sec"]
    body = [
        [run, f"{v['recipe']:.2f}", f"{v['baseline']:.2f}", f"{v['recipe'] / v['baseline']:.3f}"]
        for run, v in sorted(by_run.items())
    ]
    s = document["summary"]
    body.append(
        [
            "median",
            f"{s['recipe_steps_per_sec_median']:.2f}",
            f"{s['baseline_steps_per_sec_median']:.2f}",
            f"{s['ratio_median']:.3f}",
        ]
    )
    return render(["run", "recipe steps/s", "baseline steps/s", "recipe / baseline"], body)


def summary_line(document: dict[str, Any]) -> str:
    s = document["summary"]
    verdict = "slower" if s["overhead_percent"] > 0 else "faster"
    return (
        f"recipe / baseline steps/s: median {s['ratio_median']:.3f} (min {s['ratio_min']:.3f}, max {s['ratio_max']:.3f}"
        f" over {len(s['ratios'])} pairs): the recipe is {abs(s['overhead_percent']):.1f}% {verdict}"
    )
