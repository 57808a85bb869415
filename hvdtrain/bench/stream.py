"""``hvdtrain bench stream``: memory stays flat with the data set's size, and is training input-bound?

Generates a CIFAR-shaped TFRecord set of ``--gib`` GiB (once; kept in ``--dir``), then launches ``np`` ranks of
:mod:`hvdtrain.bench.stream_worker` with mpirun, each reporting its input-pipeline rate, the model's step rate and
its peak RSS while training one epoch on the streamed shards.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hvdtrain.bench.runner import run_job
from hvdtrain.launch import LaunchCommand, LaunchSpec, build_command, running_as_root

RECORD_BYTES = 32 * 32 * 3 + 8  # image + label, before TFRecord framing


def generate(directory: Path, gib: float, shards: int, progress: Callable[[str], None]) -> Path:
    """A CIFAR-shaped set of about ``gib`` GiB in ``directory`` (kept: generated once per size)."""
    from hvdtrain.records import Manifest, RawData, prepare

    records = max(shards, int(gib * (1 << 30) / RECORD_BYTES))
    source = directory / "generated.txt"
    directory.mkdir(parents=True, exist_ok=True)
    source.write_text(f"random CIFAR-shaped records: {records}\n", encoding="utf-8")
    out = directory / "tfrecords"
    if (out / "manifest.json").is_file() and Manifest.read(out).splits["train"].records == records:
        progress(f"using {records} records already in {out}")
        return out

    def chunks(n: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng(0)
        for start in range(0, n, 10_000):
            size = min(10_000, n - start)
            progress(f"generating records {start + size}/{n}")
            yield rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, size)

    raw = RawData(source, {"train": lambda: chunks(records), "test": lambda: chunks(min(records, 500))})
    prepare("cifar10", raw, out, shards, force=True, progress=progress)
    return out


def command_for(np_: int, shards: Path, out_dir: Path, steps: int, batch: int) -> LaunchCommand:
    """mpirun of the stream worker on ``np_`` ranks of this machine (allowed as root where that is needed)."""
    program = [sys.executable, "-m", "hvdtrain.bench.stream_worker", str(shards), str(out_dir), str(steps), str(batch)]
    spec = LaunchSpec(program=program, np=np_, launcher="mpirun", allow_run_as_root=running_as_root())
    return build_command(spec)


def run(
    np_: int, shards: Path, out_dir: Path, steps: int, batch: int, timeout_s: float = 24 * 3600
) -> list[dict[str, Any]]:
    """Launch the ranks; each rank's report, in rank order (JobFailed, the log's tail shown, if the job fails)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run_job(command_for(np_, shards, out_dir, steps, batch), out_dir / "job.log", timeout_s)
    return [json.loads((out_dir / f"rank-{r}.json").read_text(encoding="utf-8")) for r in range(np_)]


def table(reports: list[dict[str, Any]], data_gib: float) -> str:
    """The per-rank results as a markdown table."""
    lines = [
        f"data set: {reports[0]['records']} records, {data_gib:.2f} GiB on disk",
        "",
        "| rank | peak RSS (MiB) | input pipeline (examples/s) | model alone (examples/s) | input-bound? |",
        "|---:|---:|---:|---:|---|",
    ]
    for r in reports:
        bound = "yes" if r["input_examples_per_s"] < r["model_examples_per_s"] else "no"
        lines.append(
            f"| {r['rank']} | {r['peak_rss_mib']:.0f} | {r['input_examples_per_s']:.0f} | "
            f"{r['model_examples_per_s']:.0f} | {bound} |"
        )
    return "\n".join(lines)
