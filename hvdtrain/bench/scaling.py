"""``hvdtrain bench scaling RECIPE``: a recipe's throughput against ranks, tensor fusion, fp16 compression, cycle time.

Groups of settings, each launched with horovodrun on this machine (``-H localhost:N``):

- **ranks**: np = 1..N at hvdtrain's tuned defaults; scaling efficiency ``T_N / (N * T_1)``;
- **tensor fusion** at np=N: fusion threshold 0 (off) vs the tuned threshold (or ``--fusion-thresholds-mb``);
- **fp16 compression** at np=N: ``--fp16-allreduce`` off vs on;
- **cycle time** at np=N: ``--cycle-times-ms`` (default 0.05, 0.1, 0.25, 0.5, 1, 2).

``--groups`` picks which of these run. Identical settings are run once and shared between groups. Each setting runs
``--repeats`` times, the repeats interleaved (every setting once, then again), so a machine that others load affects
all settings alike; the table shows the median with min..max, and the share of the CPUs other processes used.

Throughput is samples (images) per second over all ranks. The ``synthetic`` recipe writes its per-iteration rates
to a JSON file (a run counts as the median over its timed iterations x ranks) and runs ``--threads-per-rank``
TensorFlow threads per rank (default 1, so np=1 and np=N use one core per rank). A registered training recipe
(``digits``, ``mnist``) reports the ``throughput X +- Y samples/s`` line its rank 0 logs (after the first epoch, so
it needs ``--epochs 2`` or more), and runs with the back end's thread count (cores / local ranks). Options after
RECIPE go to the recipe.
"""

from __future__ import annotations

import datetime
import json
import re
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hvdtrain import tuning
from hvdtrain.bench import metrics, report
from hvdtrain.bench.runner import JobFailed, machine_label, run_job, running_as_root, say, wait_for_idle
from hvdtrain.launch import HorovodKnobs, LaunchCommand, LaunchSpec, build_command

SYNTHETIC = "synthetic"
SYNTHETIC_MODULE = "hvdtrain.recipes.synthetic"
DEFAULT_CYCLE_TIMES_MS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
GROUPS = ("ranks", "fusion", "fp16", "cycle")
RUN_TIMEOUT_S = 1800
_THROUGHPUT_RE = re.compile(r"throughput (\d+(?:\.\d+)?) \+- (\d+(?:\.\d+)?) samples/s")
CSV_COLUMNS = (
    "group",
    "label",
    "np",
    "fusion_threshold_mb",
    "cycle_time_ms",
    "fp16_allreduce",
    "samples_per_sec",
    "samples_per_sec_min",
    "samples_per_sec_max",
    "runs",
    "ratio",
    "ratio_meaning",
    "others_cpu",
)


@dataclass(frozen=True)
class Setting:
    """One configuration of the recipe's launch."""

    np: int
    fusion_threshold_mb: float
    cycle_time_ms: float
    fp16_allreduce: bool

    @property
    def key(self) -> str:
        fp16 = "on" if self.fp16_allreduce else "off"
        fusion = tuning.format_ms(self.fusion_threshold_mb)
        return f"np{self.np}-fusion{fusion}MiB-cycle{tuning.format_ms(self.cycle_time_ms)}ms-fp16{fp16}"

    def describe(self) -> str:
        fusion = "off" if self.fusion_threshold_mb == 0 else f"{tuning.format_ms(self.fusion_threshold_mb)} MiB"
        return (
            f"np={self.np} fusion={fusion} cycle={tuning.format_ms(self.cycle_time_ms)}ms "
            f"fp16={'on' if self.fp16_allreduce else 'off'}"
        )


@dataclass(frozen=True)
class Group:
    """A table section: settings that differ in one thing, each with a label, and what the ratio column means."""

    name: str
    items: tuple[tuple[str, Setting], ...]
    ratio_meaning: str


def plan_groups(
    max_np: int,
    fusion_thresholds_mb: Sequence[float],
    cycle_times_ms: Sequence[float],
    wanted: Sequence[str] = GROUPS,
) -> list[Group]:
    """The ``wanted`` groups (names from GROUPS) for ``max_np`` ranks: knob sweeps at np = max_np, the other knobs
    at the tuned defaults."""
    fusion, cycle = float(tuning.TUNED_FUSION_THRESHOLD_MB), float(tuning.TUNED_CYCLE_TIME_MS)
    groups = [
        Group(
            "ranks",
            tuple((f"np={n}", Setting(n, fusion, cycle, False)) for n in range(1, max_np + 1)),
            "efficiency T_N / (N T_1)",
        )
    ]
    groups.append(
        Group(
            "tensor fusion",
            tuple(
                ("off" if f == 0 else f"{tuning.format_ms(f)} MiB", Setting(max_np, float(f), cycle, False))
                for f in fusion_thresholds_mb
            ),
            "speed-up vs the first",
        )
    )
    groups.append(
        Group(
            "fp16 compression",
            tuple((label, Setting(max_np, fusion, cycle, on)) for label, on in (("off", False), ("on", True))),
            "speed-up vs off",
        )
    )
    reference = "1 ms (Horovod's default)" if 1.0 in cycle_times_ms else "the first"
    groups.append(
        Group(
            "cycle time",
            tuple((f"{tuning.format_ms(c)} ms", Setting(max_np, fusion, float(c), False)) for c in cycle_times_ms),
            f"speed-up vs {reference}",
        )
    )
    names = dict(zip(GROUPS, ("ranks", "tensor fusion", "fp16 compression", "cycle time"), strict=True))
    return [g for g in groups if g.name in {names[w] for w in wanted}]


def unique_settings(groups: Sequence[Group]) -> list[Setting]:
    """Every distinct setting, in first-seen order."""
    return list(dict.fromkeys(setting for group in groups for _, setting in group.items))


def run_command(
    setting: Setting,
    module: str,
    recipe_args: Sequence[str],
    synthetic: bool,
    threads: int | None,
    json_path: Path,
    extra_env: Mapping[str, str] | None = None,
) -> LaunchCommand:
    """horovodrun for one run of ``setting`` (argv lists only)."""
    program = [sys.executable, "-m", module, *recipe_args]
    if setting.fp16_allreduce:
        program.append("--fp16-allreduce")
    if synthetic:
        if threads is not None and "--threads" not in recipe_args:
            program += ["--threads", str(threads)]
        program += ["--json", str(json_path)]
    knobs = HorovodKnobs(fusion_threshold_mb=setting.fusion_threshold_mb, cycle_time_ms=setting.cycle_time_ms)
    spec = LaunchSpec(
        program=program,
        np=setting.np,
        launcher="horovodrun",
        controller="mpi",
        knobs=knobs,
        allow_run_as_root=running_as_root(),
        extra_env=dict(extra_env or {}),
    )
    return build_command(spec)


def read_throughput(synthetic: bool, json_path: Path, log_path: Path) -> float:
    """Global samples/s of a finished run: for ``synthetic``, the median over its timed iterations x ranks (robust
    to a burst of someone else's work in one iteration); for a training recipe, its logged mean over epochs."""
    if synthetic:
        if not json_path.exists():
            raise JobFailed(f"rank 0 wrote no {json_path}; see {log_path}")
        result = json.loads(json_path.read_text())
        return statistics.median(result["img_sec_per_rank_iters"]) * int(result["size"])
    found = _THROUGHPUT_RE.findall(log_path.read_text(errors="replace"))
    if not found:
        raise JobFailed(f"no 'throughput X +- Y samples/s' line in {log_path} (the recipe needs --epochs 2 or more)")
    return float(found[-1][0])


def _disturbance(stats: dict[str, float | None]) -> str:
    others = stats.get("others_cpu")
    return "" if others is None else f"  (other processes used {others:.0%} of the CPUs meanwhile)"


def summarize(
    groups: Sequence[Group], runs: dict[Setting, list[float]], others: dict[Setting, list[float]] | None = None
) -> list[dict[str, Any]]:
    """One row per (group, item): median and spread of the runs, the group's ratio column, and (when known) the
    median share of the CPUs other processes used during the runs."""
    rows = []
    for group in groups:
        medians = [metrics.spread(runs[s])[0] for _, s in group.items]
        if group.name == "ranks":
            base = medians[0]
            ratios = [metrics.efficiency(m, s.np, base) for m, (_, s) in zip(medians, group.items, strict=True)]
        else:
            labels = [label for label, _ in group.items]
            ref = labels.index("1 ms") if group.name == "cycle time" and "1 ms" in labels else 0
            ratios = [m / medians[ref] for m in medians]
        for (label, setting), ratio in zip(group.items, ratios, strict=True):
            median, low, high = metrics.spread(runs[setting])
            rows.append(
                {
                    "group": group.name,
                    "label": label,
                    **asdict(setting),
                    "samples_per_sec": median,
                    "samples_per_sec_min": low,
                    "samples_per_sec_max": high,
                    "runs": " ".join(f"{v:.2f}" for v in runs[setting]),
                    "run_values": list(runs[setting]),
                    "ratio": ratio,
                    "ratio_meaning": group.ratio_meaning,
                    "others_cpu": statistics.median(others[setting]) if others and others.get(setting) else None,
                }
            )
    return rows


def tables(rows: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """One table per group: setting, samples/s median (min..max over runs), ratio."""
    render = report.markdown_table if markdown else report.format_table
    parts = []
    for group in dict.fromkeys(r["group"] for r in rows):
        mine = [r for r in rows if r["group"] == group]
        headers = [group, "samples/s (median)", "min..max", "runs", mine[0]["ratio_meaning"], "others' CPU"]
        body = [
            [
                r["label"],
                f"{r['samples_per_sec']:.1f}",
                f"{r['samples_per_sec_min']:.1f}..{r['samples_per_sec_max']:.1f}",
                len(r["run_values"]),
                f"{r['ratio']:.3f}",
                "-" if r.get("others_cpu") is None else f"{r['others_cpu']:.0%}",
            ]
            for r in mine
        ]
        parts.append(render(headers, body))
    return "\n\n".join(parts)


def plot(document: dict[str, Any], path: Path) -> Path:
    """The groups side by side: median samples/s per setting, whiskers from the slowest to the fastest run."""
    rows = document["rows"]
    groups = [
        (name, [(r["label"], r["samples_per_sec"], r["samples_per_sec_min"], r["samples_per_sec_max"]) for r in mine])
        for name in dict.fromkeys(r["group"] for r in rows)
        for mine in [[r for r in rows if r["group"] == name]]
    ]
    title = f"{document['recipe']} {' '.join(document['recipe_args'])}: samples/s (median; whiskers: min..max of runs)"
    if document.get("extra_env"):
        title += "\n" + " ".join(f"{k}={v}" for k, v in document["extra_env"].items())
    if document.get("label"):
        title += f"\n{document['label']}"
    return report.plot_bars(groups, path, title, "samples/s (all ranks)")


def run(
    recipe: str,
    module: str,
    recipe_args: Sequence[str],
    max_np: int,
    output_dir: Path,
    repeats: int = 3,
    fusion_thresholds_mb: Sequence[float] = (0, tuning.TUNED_FUSION_THRESHOLD_MB),
    cycle_times_ms: Sequence[float] = DEFAULT_CYCLE_TIMES_MS,
    groups_wanted: Sequence[str] = GROUPS,
    threads: int | None = 1,
    label: str | None = None,
    command_line: str = "",
    timeout_s: float = RUN_TIMEOUT_S,
    wait_idle_s: float = 0.0,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run every setting ``repeats`` times (interleaved), write scaling.{json,csv,png}; return the document."""
    synthetic = recipe == SYNTHETIC
    groups = plan_groups(max_np, fusion_thresholds_mb, cycle_times_ms, groups_wanted)
    settings = unique_settings(groups)
    total = len(settings) * repeats
    say(
        f"bench scaling {recipe}: {len(settings)} setting(s) x {repeats} run(s) = {total} runs, np up to {max_np}; "
        f"output in {output_dir}"
    )
    runs: dict[Setting, list[float]] = {s: [] for s in settings}
    others: dict[Setting, list[float]] = {s: [] for s in settings}
    commands: dict[str, str] = {}
    run_log: list[dict[str, Any]] = []
    done = 0
    for repeat in range(repeats):
        for setting in settings:
            done += 1
            stem = f"{setting.key}-run{repeat + 1}"
            json_path, log_path = output_dir / "raw" / f"{stem}.json", output_dir / "logs" / f"{stem}.log"
            json_path.unlink(missing_ok=True)
            command = run_command(setting, module, recipe_args, synthetic, threads, json_path, extra_env)
            commands.setdefault(setting.key, command.shell_line())
            quiet = wait_for_idle(wait_idle_s)
            try:
                stats = run_job(command, log_path, timeout_s)
                value = read_throughput(synthetic, json_path, log_path)
            except JobFailed as exc:
                raise JobFailed(f"{setting.describe()}: {exc}") from None
            runs[setting].append(value)
            if stats["others_cpu"] is not None:
                others[setting].append(stats["others_cpu"])
            run_log.append(
                {"setting": setting.key, "run": repeat + 1, "samples_per_sec": value}
                | {"idle_before": quiet["idle"], **stats}
            )
            say(
                f"[{done}/{total}] {setting.describe()} (run {repeat + 1}/{repeats}): {value:.1f} samples/s"
                + _disturbance(stats)
            )

    rows = summarize(groups, runs, others)
    document = {
        "benchmark": "scaling",
        "recipe": recipe,
        "recipe_args": list(recipe_args),
        "label": label or machine_label(),
        "threads_per_rank": threads if synthetic else "back-end default (cores / local ranks)",
        "controller": "mpi",
        "extra_env": dict(extra_env or {}),
        "repeats": repeats,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command_line,
        "commands": commands,
        "runs": run_log,
        "rows": rows,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    report.write_json(output_dir / "scaling.json", document)
    report.write_csv(output_dir / "scaling.csv", rows, CSV_COLUMNS)
    plot(document, output_dir / "scaling.png")
    return document
