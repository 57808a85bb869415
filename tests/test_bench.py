"""The benchmarks' arithmetic and plumbing: sizes, iterations, busbw, the correctness column, the reference ring,
the tuned defaults, bad input, and a tiny end-to-end allreduce run. Never timing values."""

from __future__ import annotations

import csv
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import PYTHON, WORKERS, error_lines, launch, run

from hvdtrain import tuning
from hvdtrain.backends import installed_keras_major
from hvdtrain.bench import metrics, report, runner, scaling
from hvdtrain.bench.cli import bench
from hvdtrain.bench.metrics import AllreduceRow, SizeError
from hvdtrain.bench.ring import chunk_bounds
from hvdtrain.launch import HorovodKnobs
from hvdtrain.options import run_cli
from hvdtrain.recipes import synthetic

# --- arithmetic ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4, 8, 64])
def test_busbw_is_algbw_times_2_n_minus_1_over_n(n: int) -> None:
    alg = metrics.algbw(3_000_000, 0.002)  # 3 MB in 2 ms
    assert alg == pytest.approx(1.5)
    assert metrics.busbw(alg, n) == pytest.approx(alg * 2 * (n - 1) / n)
    assert metrics.ring_bytes_per_rank(1000, n) == pytest.approx(1000 * 2 * (n - 1) / n)


def test_bus_factor_known_values() -> None:
    assert metrics.bus_factor(1) == 0.0
    assert metrics.bus_factor(2) == 1.0
    assert metrics.bus_factor(4) == 1.5
    with pytest.raises(ValueError):
        metrics.bus_factor(0)


def test_row_derives_median_algbw_and_busbw() -> None:
    row = AllreduceRow("x", np=4, size_bytes=4096, warmup=2, iters=10, trial_seconds=[3e-6, 1e-6, 2e-6], wrong=0)
    d = row.to_dict()
    assert d["time_us"] == pytest.approx(2.0)
    assert (d["time_us_min"], d["time_us_max"]) == (pytest.approx(1.0), pytest.approx(3.0))
    assert d["algbw_gbs"] == pytest.approx(4096 / 2e-6 / 1e9)
    assert d["busbw_gbs"] == pytest.approx(d["algbw_gbs"] * 1.5)
    assert (d["count"], d["repeats"], d["size"]) == (1024, 3, "4 KiB")
    assert AllreduceRow.from_dict(json.loads(json.dumps(d))).to_dict() == d


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4B", 4),
        ("4", 4),
        (" 8 b ", 8),
        ("1KiB", 1024),
        ("2k", 2048),
        ("64MiB", 64 * 1024 * 1024),
        ("1GiB", 1024**3),
        ("1MB", 1_000_000),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert metrics.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "4XB", "-4B", "1.5MiB", "MiB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(SizeError, match="invalid size"):
        metrics.parse_size(text)


def test_size_sweep_powers_of_two() -> None:
    sizes = metrics.size_sweep(4, 64 * 1024 * 1024)
    assert len(sizes) == 25 and sizes[0] == 4 and sizes[-1] == 64 * 1024 * 1024
    assert all(b == 2 * a for a, b in zip(sizes, sizes[1:], strict=False))
    assert metrics.size_sweep(1024, 1024) == [1024]
    assert metrics.size_sweep(12, 100) == [12, 24, 48, 96]  # doubles from the smallest, never past the largest
    for low, high, message in [(2, 64, "at least 4 B"), (6, 64, "multiple of 4"), (64, 4, "smaller than")]:
        with pytest.raises(SizeError, match=message):
            metrics.size_sweep(low, high)
    assert [metrics.format_size(s) for s in (4, 1536, 1024, 64 << 20)] == ["4 B", "1536 B", "1 KiB", "64 MiB"]


def test_iterations_scale_with_size() -> None:
    sizes = metrics.size_sweep(4, 64 * 1024 * 1024)
    plans = [metrics.iterations(s) for s in sizes]
    iters = [i for _, i in plans]
    assert iters[0] == metrics.DEFAULT_MAX_ITERS and iters[-1] == max(metrics.DEFAULT_MIN_ITERS, 16)
    assert all(a >= b for a, b in zip(iters, iters[1:], strict=False))  # never more iterations for bigger buffers
    assert all(2 <= w <= max(2, i) for w, i in plans)
    assert metrics.iterations(1 << 40, min_iters=3) == (2, 3)
    assert metrics.iterations(4, max_iters=20, min_iters=5) == (2, 20)
    with pytest.raises(SizeError):
        metrics.iterations(4, max_iters=2, min_iters=5)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_fill_sums_exactly(n: int) -> None:
    total = sum(metrics.fill(1000, r).astype(np.float64) for r in range(n))
    assert np.array_equal(total.astype(np.float32), metrics.expected_sum(1000, n))


def test_count_wrong_counts_injected_errors() -> None:
    expected = metrics.expected_sum(100, 2)
    result = expected.copy()
    assert metrics.count_wrong(result, expected) == 0
    result[[0, 17, 99]] += 1.0
    assert metrics.count_wrong(result, expected) == 3
    result[5] = np.nan
    assert metrics.count_wrong(result, expected) == 4
    assert metrics.count_wrong(expected[:50], expected) == 100  # a wrong shape: everything is wrong


@pytest.mark.parametrize(("count", "n"), [(0, 2), (1, 2), (5, 2), (7, 3), (1001, 4), (2, 5)])
def test_ring_chunks_cover_the_buffer(count: int, n: int) -> None:
    bounds = chunk_bounds(count, n)
    assert len(bounds) == n and bounds[0][0] == 0 and bounds[-1][1] == count
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    lengths = [stop - start for start, stop in bounds]
    assert max(lengths) - min(lengths) <= 1 and lengths[0] == max(lengths)


def test_scaling_efficiency_and_ratios() -> None:
    groups = scaling.plan_groups(2, [0, 64], [tuning.TUNED_CYCLE_TIME_MS, 1.0])
    settings = scaling.unique_settings(groups)
    # np=2 at tuned knobs is shared by the ranks, fusion (64 = tuned), fp16 off and tuned cycle items.
    assert len(settings) == 5
    runs = {s: [10.0, 12.0, 11.0] if s.np == 1 else [20.0, 19.0, 21.0] for s in settings}
    fusion_off = next(s for s in settings if s.fusion_threshold_mb == 0)
    runs[fusion_off] = [10.0, 10.0, 10.0]
    rows = {(r["group"], r["label"]): r for r in scaling.summarize(groups, runs)}
    assert rows[("ranks", "np=1")]["ratio"] == 1.0
    assert rows[("ranks", "np=2")]["ratio"] == pytest.approx(20.0 / (2 * 11.0))
    assert rows[("tensor fusion", "64 MiB")]["ratio"] == pytest.approx(2.0)
    assert rows[("cycle time", "1 ms")]["ratio"] == 1.0  # the reference: Horovod's default
    assert metrics.efficiency(180.0, 2, 100.0) == pytest.approx(0.9)


def test_tables_and_csv(tmp_path: Path) -> None:
    rows = [
        AllreduceRow(name, 2, size, 2, 10, [1e-5], wrong).to_dict()
        for name, wrong in (("a", 0), ("b", 2))
        for size in (4, 8)
    ]
    text = report.allreduce_tables(rows)
    assert "latency" in text and "busbw" in text and "wrong results" in text
    assert report.allreduce_tables(rows[:2]).endswith("0 for every contender and size")
    path = report.write_csv(tmp_path / "x.csv", rows, report.ALLREDUCE_CSV_COLUMNS)
    with path.open() as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == list(report.ALLREDUCE_CSV_COLUMNS) and len(read) == 4


# --- tuned defaults ----------------------------------------------------------------------------------------------


def test_apply_tuned_defaults_sets_only_what_is_unset() -> None:
    env: dict[str, str] = {}
    chosen = tuning.apply_tuned_defaults(env)
    assert chosen == env == tuning.tuned_env()
    assert env["HOROVOD_FUSION_THRESHOLD"] == str(tuning.TUNED_FUSION_THRESHOLD_MB * 1024 * 1024)
    assert float(env["HOROVOD_CYCLE_TIME"]) == tuning.TUNED_CYCLE_TIME_MS

    env = {"HOROVOD_CYCLE_TIME": "3", "HOROVOD_FUSION_THRESHOLD": ""}  # the user's, even empty
    assert tuning.apply_tuned_defaults(env) == {}
    assert env == {"HOROVOD_CYCLE_TIME": "3", "HOROVOD_FUSION_THRESHOLD": ""}

    env = {"HOROVOD_CYCLE_TIME": "3"}
    assert tuning.apply_tuned_defaults(env) == {
        "HOROVOD_FUSION_THRESHOLD": tuning.tuned_env()["HOROVOD_FUSION_THRESHOLD"]
    }
    assert tuning.apply_tuned_defaults({"HOROVOD_AUTOTUNE": "1"}) == {}  # the autotuner tunes both
    assert tuning.apply_tuned_defaults({"HOROVOD_AUTOTUNE": "0"}) == tuning.tuned_env()
    assert "HOROVOD_CYCLE_TIME" not in tuning.apply_tuned_defaults({"HOROVOD_ENABLE_XLA_OPS": "1"})


def test_elastic_workers_never_get_both_knobs() -> None:
    """Horovod 0.28.1 crashes on rank 0 when an elastic worker leaves while both knobs are set."""
    cycle = {"HOROVOD_CYCLE_TIME": tuning.tuned_env()["HOROVOD_CYCLE_TIME"]}
    assert tuning.apply_tuned_defaults({"HOROVOD_ELASTIC": "1"}) == cycle
    assert tuning.apply_tuned_defaults({"HOROVOD_ELASTIC": "1", "HOROVOD_FUSION_THRESHOLD": "0"}) == {}
    assert tuning.apply_tuned_defaults({"HOROVOD_ELASTIC": "1", "HOROVOD_CYCLE_TIME": "1"}) == {}


def test_mpi_yield_only_for_cpu_training() -> None:
    env: dict[str, str] = {}
    assert tuning.apply_mpi_yield(on_gpu=False, env=env) == env == {"OMPI_MCA_mpi_yield_when_idle": "1"}
    assert tuning.apply_mpi_yield(on_gpu=True, env={}) == {}  # GPU hosts keep busy-polling
    mine = {"OMPI_MCA_mpi_yield_when_idle": "0"}
    assert tuning.apply_mpi_yield(on_gpu=False, env=mine) == {} and mine["OMPI_MCA_mpi_yield_when_idle"] == "0"


def test_mpi_ring_only_with_one_rank_on_each_of_3_or_more_hosts() -> None:
    three_hosts = {"OMPI_COMM_WORLD_SIZE": "3", "OMPI_MCA_orte_num_nodes": "3"}
    env = dict(three_hosts)
    assert tuning.apply_mpi_ring(env) == tuning.MPI_RING_ENV
    assert env["OMPI_MCA_coll_tuned_use_dynamic_rules"] == "1" and env["OMPI_MCA_coll_tuned_allreduce_algorithm"] == "4"
    for size, nodes in (("2", "2"), ("4", "2"), ("2", "1"), ("x", "3")):  # 2 ranks; 2 ranks per host; one host
        assert tuning.apply_mpi_ring({"OMPI_COMM_WORLD_SIZE": size, "OMPI_MCA_orte_num_nodes": nodes}) == {}
    assert tuning.apply_mpi_ring({}) == {}  # not under Open MPI (Gloo, one process)
    mine = {**three_hosts, "OMPI_MCA_coll_tuned_use_dynamic_rules": "0"}  # the user's choice: both left alone
    assert tuning.apply_mpi_ring(mine) == {} and "OMPI_MCA_coll_tuned_allreduce_algorithm" not in mine
    applied = tuning.apply_runtime_defaults(on_gpu=True, env=dict(three_hosts))
    assert tuning.MPI_RING_ENV.items() <= applied.items()


def test_runtime_defaults_combine_and_respect_the_user() -> None:
    env = {"HOROVOD_CYCLE_TIME": "2"}
    applied = tuning.apply_runtime_defaults(on_gpu=False, env=env)
    assert applied == {
        "HOROVOD_FUSION_THRESHOLD": str(tuning.TUNED_FUSION_THRESHOLD_MB * 1024 * 1024),
        "OMPI_MCA_mpi_yield_when_idle": "1",
    }
    assert env["HOROVOD_CYCLE_TIME"] == "2"
    assert tuning.horovod_default_knobs() == HorovodKnobs(cycle_time_ms=1.0, fusion_threshold_mb=128)


def test_no_idle_wait_when_not_asked() -> None:
    assert runner.wait_for_idle(0) == {"waited_s": 0.0, "idle": None}


# --- bad input ---------------------------------------------------------------------------------------------------


KERAS2 = installed_keras_major() == 2  # bench overhead's baseline is Horovod's Keras layer: Keras 2 only


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["allreduce", "--min-size", "4XB"], "invalid size '4XB'"),
        (["allreduce", "--min-size", "64B", "--max-size", "4B"], "smaller than --min-size"),
        (["allreduce", "--min-size", "6B"], "multiple of 4"),
        (["allreduce", "-np", "0"], "-np must be >= 1, got 0"),
        (["allreduce", "--cycle-time-sweep", "0.1,x"], "not a number"),
        (["scaling", "nosuch"], "unknown recipe 'nosuch'"),
        (["scaling", "-np", "0", "synthetic"], "-np must be >= 1"),
        (["scaling", "--fusion-thresholds-mb", "0,1.5", "synthetic"], "whole MiB"),
        (["scaling", "--env", "NOEQUALS", "synthetic"], "--env takes NAME=VALUE"),
        (["scaling", "--groups", "ranks,speed", "synthetic"], "--groups takes ranks, fusion, fp16, cycle"),
        (["overhead", "--epochs", "1"], "--epochs must be >= 2" if KERAS2 else "run it on the tf2.15 stack"),
        (["overhead", "--data-dir", "/nonexistent"], "mnist.npz not found" if KERAS2 else "does not average"),
        (["synthetic", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["synthetic", "--launcher", "none", "--gloo"], "--gloo needs a launcher"),
        (["synthetic", "--hostfile", "/nonexistent/hosts"], "/nonexistent/hosts"),
        (["report", "/nonexistent.json"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert run_cli(bench, argv, prog_name="hvdtrain bench") == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("hvdtrain: error: ") and message in lines[0], lines


def test_synthetic_unknown_model_is_one_line() -> None:
    done = run([PYTHON, "-m", "hvdtrain.recipes.synthetic", "--model", "NoSuchNet", "--image-size", "8"])
    assert done.returncode == 2, done.stderr[-2000:]
    assert error_lines(done.stderr)[-1].startswith("hvdtrain: error: unknown --model 'NoSuchNet'")


@pytest.mark.parametrize("sync", ["--gradient-sync", "--no-gradient-sync"])
def test_synthetic_recipe_writes_throughput(tmp_path: Path, sync: str) -> None:
    out = tmp_path / "synthetic.json"
    options = ["--model", "small-layers", "--depth", "3", "--width", "8", "--image-size", "8", "--batch-size", "4"]
    options += ["--num-classes", "5", "--num-warmup-batches", "1", "--num-batches-per-iter", "2", "--num-iters", "3"]
    done = run([PYTHON, "-m", "hvdtrain.recipes.synthetic", *options, sync, "--threads", "1", "--json", str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Total img/sec on 1 rank(s):" in done.stdout
    assert ("each rank trains alone" in done.stderr) == (sync == "--no-gradient-sync")
    result = json.loads(out.read_text())
    assert result["size"] == 1 and len(result["img_sec_per_rank_iters"]) == 3
    assert result["img_sec_total"] == pytest.approx(result["img_sec_per_rank"])


def test_synthetic_config_args_round_trip() -> None:
    config = synthetic.SyntheticConfig(
        model="small-layers", image_size=32, fp16_allreduce=True, gradient_sync=False, threads=2
    )
    args = synthetic.config_args(config)
    assert args == [
        *("--model", "small-layers", "--image-size", "32", "--fp16-allreduce", "--no-gradient-sync", "--threads", "2")
    ]
    parsed = synthetic.command.make_context("synthetic", list(args)).params
    assert synthetic.SyntheticConfig(**parsed) == config
    assert synthetic.config_args(synthetic.SyntheticConfig()) == []


@pytest.mark.parametrize("launcher", ["horovodrun", "mpirun"])
def test_bench_synthetic_builds_the_launch(launcher: str, capsys: pytest.CaptureFixture) -> None:
    argv = ["synthetic", "-np", "2", "--launcher", launcher, "--model", "small-layers", "--fp16-allreduce"]
    assert run_cli(bench, [*argv, "--cycle-time-ms", "0.5", "--dry-run"], prog_name="hvdtrain bench") == 0
    words = shlex.split(capsys.readouterr().out.strip())
    program = words[words.index(sys.executable) :]
    assert program[3:] == ["--model", "small-layers", "--fp16-allreduce"]
    assert program[:3] == [sys.executable, "-m", "hvdtrain.recipes.synthetic"]
    assert launcher in words and words[words.index("-np") + 1] == "2"
    if launcher == "horovodrun":
        assert words[words.index("--cycle-time-ms") + 1] == "0.5"
    else:
        assert "HOROVOD_CYCLE_TIME=0.5" in words


def test_report_rejects_files_that_are_not_results(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for name, text in (("broken.json", "{not json"), ("other.json", '{"rows": []}')):
        (tmp_path / name).write_text(text)
        assert run_cli(bench, ["report", str(tmp_path / name)], prog_name="hvdtrain bench") == 2
        lines = error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and lines[0].startswith(f"hvdtrain: error: {tmp_path / name}: not"), lines


# --- several ranks -----------------------------------------------------------------------------------------------


@pytest.mark.multiproc
def test_bench_synthetic_runs_two_ranks() -> None:
    options = ["--model", "small-layers", "--depth", "3", "--width", "8", "--image-size", "8", "--batch-size", "4"]
    options += ["--num-classes", "5", "--num-warmup-batches", "1", "--num-batches-per-iter", "2", "--num-iters", "2"]
    done = run([PYTHON, "-m", "hvdtrain.bench", "synthetic", "-np", "2", *options])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Total img/sec on 2 rank(s):" in done.stdout
    assert "hvdtrain defaults (export a variable to override it): HOROVOD_CYCLE_TIME=" in done.stderr


@pytest.mark.multiproc
def test_ring_equals_mpi_allreduce_at_np2() -> None:
    done = launch("mpirun", 2, [PYTHON, str(WORKERS / "ring_check.py"), "random"])
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("case ")]
    assert len(lines) == 9 and all(line.endswith(" equal") for line in lines), done.stdout


@pytest.mark.multiproc
def test_ring_equals_mpi_allreduce_at_np3() -> None:
    argv = ["mpirun", "-np", "3", "--oversubscribe", "-bind-to", "none", PYTHON, str(WORKERS / "ring_check.py")]
    done = run([*argv, "integers"])
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("case ")]
    assert len(lines) == 9 and all(line.endswith(" equal") for line in lines), done.stdout


@pytest.mark.multiproc
def test_correctness_column_counts_injected_wrong_results(tmp_path: Path) -> None:
    out = tmp_path / "mpi.json"
    worker = [PYTHON, "-m", "hvdtrain.bench.allreduce_worker", "--library", "mpi4py", "--library", "ring"]
    options = ["--max-size", "64B", "--max-iters", "3", "--min-iters", "2", "--repeats", "2", "--inject-wrong", "5"]
    done = launch("mpirun", 2, [*worker, *options, "--output", str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 * 5
    for row in rows:  # 5 elements of rank 0's result corrupted, or all of them when the buffer is smaller
        assert row["wrong"] == min(5, row["count"]), row


@pytest.mark.multiproc
def test_allreduce_end_to_end_np2(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    argv = ["allreduce", "-np", "2", "--max-size", "1KiB", "--max-iters", "5", "--min-iters", "2", "--repeats", "1"]
    done = run([PYTHON, "-m", "hvdtrain.bench", *argv, "-o", str(out)])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "busbw" in done.stdout and "0 for every contender and size" in done.stdout
    assert "[6/5]" not in done.stderr and "[5/5] horovod-gloo-tuned" in done.stderr  # progress per job

    document = json.loads((out / "allreduce.json").read_text())
    rows = document["rows"]
    names = [
        "mpi4py-Allreduce",
        "ring-reference",
        *(f"horovod-{c}-{s}" for c in ("mpi", "gloo") for s in ("default", "tuned")),
    ]
    assert report.contenders_in_order(rows) == names
    assert len(rows) == 6 * 9 and {r["size_bytes"] for r in rows} == {4 << i for i in range(9)}
    for row in rows:
        assert row["np"] == 2 and row["wrong"] == 0
        assert row["algbw_gbs"] == pytest.approx(row["size_bytes"] / (row["time_us"] * 1e-6) / 1e9)
        assert row["busbw_gbs"] == pytest.approx(row["algbw_gbs"] * 2 * (2 - 1) / 2)
    knobs = {job["job"]: job for job in document["jobs"]}
    assert knobs["horovod-mpi-default"]["cycle_time_ms"] == 1.0
    assert knobs["horovod-gloo-tuned"]["cycle_time_ms"] == tuning.TUNED_CYCLE_TIME_MS
    seen = document["environment"]["horovod-gloo-tuned"]["env"]  # what the ranks actually got
    assert float(seen["HOROVOD_CYCLE_TIME"]) == tuning.TUNED_CYCLE_TIME_MS
    assert document["environment"]["horovod-mpi-tuned"]["env"]["OMPI_MCA_mpi_yield_when_idle"] == "1"
    assert "OMPI_MCA_mpi_yield_when_idle" not in document["environment"]["horovod-mpi-default"]["env"]

    with (out / "allreduce.csv").open() as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(report.ALLREDUCE_CSV_COLUMNS) and len(table) == len(rows)
    assert (out / "allreduce.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    shown = run([PYTHON, "-m", "hvdtrain.bench", "report", str(out / "allreduce.json")])
    assert shown.returncode == 0, shown.stderr
    assert "bench allreduce -np 2 --max-size 1KiB" in shown.stdout  # the command that reproduces it
    assert "| size | " + " | ".join(names) + " |" in shown.stdout and "| 1 KiB |" in shown.stdout


def test_stacks_checks_each_python_has_its_keras(tmp_path: Path) -> None:
    from hvdtrain.bench import stacks

    mine = f"keras{installed_keras_major()}"
    other = "keras2" if mine == "keras3" else "keras3"
    stacks.check_pythons({mine: Path(sys.executable)})
    with pytest.raises(stacks.StackError, match=f"not what --{other}-python needs"):
        stacks.check_pythons({other: Path(sys.executable)})
    assert run_cli(bench, ["stacks", f"--{other}-python", sys.executable], prog_name="hvdtrain bench") == 2
    missing = tmp_path / "nope" / "python"
    with pytest.raises(stacks.StackError, match="does not exist"):
        stacks.check_pythons({mine: missing})


def test_stacks_resnet50_alone_is_resnet50_without_gradient_sync(tmp_path: Path) -> None:
    from hvdtrain.bench import stacks

    synced, alone = stacks.workloads(["resnet50", "resnet50-alone"], tmp_path, epochs=3, batch_size=16, iters=2)
    assert alone.args == (*synced.args, "--no-gradient-sync") and "--no-gradient-sync" not in synced.args


def test_stacks_table_and_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from hvdtrain.bench import runner

    rows = [
        {"workload": "mnist", "run": run, "program": name, "steps_per_sec": rate}
        for run, (k3, k2) in enumerate([(10.0, 10.0), (9.0, 10.0), (11.0, 10.0)], start=1)
        for name, rate in (("keras3", k3), ("keras2", k2))
    ]
    summary = runner.ratio_summary(rows, "keras3", "keras2")
    assert summary["ratio_median"] == pytest.approx(1.0) and summary["ratio_min"] == pytest.approx(0.9)
    document = {"benchmark": "stacks", "date": "d", "command": "hvdtrain bench stacks -np 2", "label": "here"}
    document["workloads"] = {"mnist": {"rows": rows, "summary": summary}}
    path = tmp_path / "stacks.json"
    path.write_text(json.dumps(document))
    assert run_cli(bench, ["report", str(path)], prog_name="hvdtrain bench") == 0
    out = capsys.readouterr().out
    assert "hvdtrain bench stacks -np 2" in out and "| mnist | median | 10.00 | 10.00 | 1.000 |" in out
    assert "keras3 / keras2 steps/s: mnist: median 1.000 (min 0.900, max 1.100 over 3 pairs)" in out
