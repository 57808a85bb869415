"""Benchmark output: text tables for the terminal, JSON, CSV and PNG plots (matplotlib's Agg back end, no display).

Pure Python: imports neither TensorFlow nor Horovod; matplotlib only when a plot is drawn.
"""

from __future__ import annotations

import csv
import json
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hvdtrain.bench.metrics import format_size

ALLREDUCE_CSV_COLUMNS = (
    "contender",
    "np",
    "size_bytes",
    "size",
    "count",
    "dtype",
    "warmup",
    "iters",
    "repeats",
    "time_us",
    "time_us_min",
    "time_us_max",
    "algbw_gbs",
    "busbw_gbs",
    "wrong",
)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain text table: first column left-aligned, the others right-aligned, a dashed rule under the headers."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """The same table in GitHub markdown (for docs/benchmarks.md)."""
    out = ["| " + " | ".join(str(h) for h in headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def contenders_in_order(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Contender names in first-seen order."""
    return list(dict.fromkeys(str(r["contender"]) for r in rows))


def _pivot(rows: Sequence[Mapping[str, Any]], key: str, fmt: str) -> tuple[list[str], list[list[str]]]:
    names = contenders_in_order(rows)
    sizes = sorted({int(r["size_bytes"]) for r in rows})
    cell = {(r["contender"], int(r["size_bytes"])): r[key] for r in rows}
    body = [[format_size(s)] + [format(cell[(n, s)], fmt) if (n, s) in cell else "-" for n in names] for s in sizes]
    return ["size", *names], body


def allreduce_tables(rows: Sequence[Mapping[str, Any]], markdown: bool = False) -> str:
    """Latency (us) and busbw (GB/s) by size, one column per contender, then the wrong-result counts."""
    render = markdown_table if markdown else format_table
    parts = []
    for title, key, fmt in (
        ("latency, us (median of trials; slowest rank)", "time_us", ".1f"),
        ("busbw, GB/s (algbw x 2(n-1)/n)", "busbw_gbs", ".3f"),
        ("wrong results (elements; all ranks)", "wrong", "d"),
    ):
        headers, body = _pivot(rows, key, fmt)
        if key == "wrong" and all(int(r["wrong"]) == 0 for r in rows):
            parts.append(f"{title}: 0 for every contender and size")
            continue
        parts.append(f"{title}\n\n{render(headers, body)}" if markdown else f"{title}\n{render(headers, body)}")
    return "\n\n".join(parts)


def write_json(path: Path, document: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n")
    return path


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """One line per row with exactly ``columns`` (missing values empty; floats with 6 significant digits)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            values = []
            for column in columns:
                value = row.get(column, "")
                values.append(f"{value:.6g}" if isinstance(value, float) else value)
            writer.writerow(values)
    return path


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_allreduce(rows: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path:
    """busbw and latency against buffer size (log scales), one line per contender."""
    plt = _pyplot()
    fig, (bw_ax, lat_ax) = plt.subplots(1, 2, figsize=(13, 5))
    for name in contenders_in_order(rows):
        mine = sorted((r for r in rows if r["contender"] == name), key=lambda r: int(r["size_bytes"]))
        sizes = [int(r["size_bytes"]) for r in mine]
        bw_ax.plot(sizes, [r["busbw_gbs"] for r in mine], marker="o", markersize=3, label=name)
        lat_ax.plot(sizes, [r["time_us"] for r in mine], marker="o", markersize=3, label=name)
    ticks = sorted({int(r["size_bytes"]) for r in rows})
    ticks = ticks[:: max(1, len(ticks) // 9)]
    for ax, ylabel in ((bw_ax, "busbw (GB/s)"), (lat_ax, "latency (us)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [format_size(t).replace(" ", "") for t in ticks], rotation=45)
        ax.set_xlabel("buffer size (float32)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    lat_ax.set_yscale("log")
    bw_ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bars(
    groups: Sequence[tuple[str, Sequence[tuple[str, float, float, float]]]], path: Path, title: str, ylabel: str
) -> Path:
    """One panel per group, bars of (label, value, low, high) each, whiskers from low to high: the scaling plot."""
    plt = _pyplot()
    width = max(7.0, 4.2 * len(groups))
    fig, axes = plt.subplots(1, len(groups), figsize=(width, 4.6), squeeze=False)
    for ax, (group, bars) in zip(axes[0], groups, strict=True):
        labels = [b[0] for b in bars]
        errors = [[b[1] - b[2] for b in bars], [b[3] - b[1] for b in bars]]
        ax.bar(range(len(bars)), [b[1] for b in bars], yerr=errors, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(bars)), labels, rotation=30, ha="right")
        ax.set_title(group, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
    chars = int(width * 10)  # about what fits across the figure at the title's font size
    fig.suptitle("\n".join(textwrap.fill(line, chars) for line in title.splitlines()), fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
