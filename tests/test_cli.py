"""The hvdtrain command: exact --dry-run command lines, presets, show/list, hostfiles, scheduler allocations, errors,
and real 2-rank runs (marked multiproc).

In-process tests go through ``hvdtrain.cli.main`` with click's CliRunner and never import TensorFlow; the real runs
and ``hvdtrain check`` are subprocesses.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

import hvdtrain.cli as cli_module
import hvdtrain.job as job_module
import hvdtrain.start as start_module
from hvdtrain.backends import installed_keras_major
from hvdtrain.config import TrainConfig, option_name
from hvdtrain.launch_config import LaunchConfig, launch_options
from hvdtrain.options import config_to_args, train_config_options
from hvdtrain.presets import load_preset
from hvdtrain.recipes import RECIPES, recipe_defaults, recipe_names

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "recipes").glob("*.toml"))
HOSTFILES = sorted(p for p in (ROOT / "hostfiles").iterdir() if p.is_file())
HVDTRAIN = Path(sys.executable).parent / "hvdtrain"
PY = shlex.quote(sys.executable)
DIGITS = f"{PY} -m hvdtrain.recipes.digits"
OMPI = "-bind-to none -map-by slot -mca pml ob1 -mca btl '^openib'"
ROOT_ENV = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
# Unset in every in-process test: scheduler jobs and launcher ranks of the machine running the tests.
CLEAN_ENV: dict[str, str | None] = {
    name: None
    for name in (
        "SLURM_JOB_ID",
        "SLURM_JOB_NODELIST",
        "SLURM_NODELIST",
        "SLURM_TASKS_PER_NODE",
        "SLURM_NTASKS",
        "SLURM_PROCID",
        "PBS_JOBID",
        "PBS_NODEFILE",
        "LSB_JOBID",
        "LSB_MCPU_HOSTS",
        "HOROVOD_RANK",
        "OMPI_COMM_WORLD_RANK",
        "PMI_RANK",
        "PMIX_RANK",
        "_HVDTRAIN_COMPLETE",
    )
}
SLURM = {"SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_TASKS_PER_NODE": "2(x2)"}


class _Entry:
    """Lets CliRunner drive ``hvdtrain.cli.main`` (the console entry point) rather than the click group."""

    name = "hvdtrain"

    def main(self, args: list[str], prog_name: str, **_: Any) -> None:
        cli_module.main(list(args))


def invoke(*args: str, env: Mapping[str, str] | None = None, root: bool = False) -> Result:
    """Run ``hvdtrain ARGS`` in-process, as a non-root user unless ``root``."""
    original = cli_module.running_as_root
    cli_module.running_as_root = lambda: root  # type: ignore[assignment]
    try:
        return CliRunner().invoke(_Entry(), list(args), env={**CLEAN_ENV, **(env or {})})  # type: ignore[arg-type]
    finally:
        cli_module.running_as_root = original  # type: ignore[assignment]


def dry(*args: str, recipe: str = "digits", env: Mapping[str, str] | None = None, root: bool = False) -> str:
    """The one line ``hvdtrain run RECIPE --dry-run ARGS`` prints."""
    result = invoke("run", recipe, "--dry-run", *args, env=env, root=root)
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1, result.stdout
    return result.stdout.rstrip("\n")


def assert_error(result: Result, fragment: str, code: int = 2) -> str:
    """One line on stderr, ``hvdtrain: error: ...`` containing ``fragment``; nothing on stdout; exit ``code``."""
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hvdtrain: error: "), lines[0]
    assert fragment in lines[0], lines[0]
    return lines[0]


def hvd_line(flags: str = "", np: int = 2, hosts: str = "", program: str = DIGITS) -> str:
    hosts = hosts or f"localhost:{np}"
    return " ".join(p for p in (f"HVDTRAIN_EXPECTED_SIZE={np} horovodrun -np {np} -H {hosts}", flags, program) if p)


def mpi_line(extra: str = "", np: int = 2, hosts: str = "", program: str = DIGITS) -> str:
    hosts = hosts or f"localhost:{np}"
    parts = (f"mpirun --tag-output -np {np} -H {hosts} {OMPI}", extra, f"-x HVDTRAIN_EXPECTED_SIZE={np}", program)
    return " ".join(p for p in parts if p)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- top level: help, version, list, completion ---------------------------------------------------------------------


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout == "hvdtrain 0.1.0\n"


@pytest.mark.parametrize("args", [[], ["-h"], ["--help"]])
def test_help_lists_commands(args: list[str]) -> None:
    result = invoke(*args)
    assert result.exit_code == 0
    for command in ("list", "show", "run", "hostfile", "check", "completion"):
        assert re.search(rf"^  {command}\s", result.stdout, re.M), command
    assert "_HVDTRAIN_COMPLETE=bash_source hvdtrain" in result.stdout


def test_run_help_lists_recipes_and_sections() -> None:
    result = invoke("run", "-h")
    assert result.exit_code == 0
    assert "Recipes:" in result.stdout
    for name in recipe_names():
        assert re.search(rf"^  {name}\s", result.stdout, re.M)
    result = invoke("run", "digits", "--help")
    assert result.exit_code == 0
    for heading in ("Preset:", "Training options (passed to every rank):", "Launch options:", "Other options:"):
        assert heading in result.stdout
    assert f"[default: {recipe_defaults('digits').epochs}]" in result.stdout  # the recipe's defaults, not TrainConfig's


def test_list_output() -> None:
    def first_docstring_line(name: str) -> str:
        source = (ROOT / "hvdtrain" / "recipes" / f"{name}.py").read_text(encoding="utf-8")
        return (ast.get_docstring(ast.parse(source)) or "").splitlines()[0]

    result = invoke("list")
    assert result.exit_code == 0
    width = max(len(n) for n in RECIPES) + 2
    assert result.stdout == "".join(f"{n:<{width}}{first_docstring_line(n)}\n" for n in sorted(RECIPES))
    assert {"digits", "mnist"} <= set(RECIPES)
    assert re.search(r"^digits +Handwritten digits", result.stdout, re.MULTILINE)


def test_light_commands_do_not_import_tensorflow() -> None:
    code = """
import sys
from hvdtrain.cli import main
for args in (["list"], ["run", "digits", "-h"], ["run", "mnist", "--dry-run", "-np", "2"], ["show", "digits"]):
    try:
        main(args)
    except SystemExit as exc:
        assert exc.code == 0, (args, exc.code)
print("HEAVY", sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "horovod", "keras", "numpy"}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


def test_static_defaults_match_imported_recipes() -> None:
    code = (
        "from hvdtrain.recipes import RECIPES, load_recipe, recipe_defaults\n"
        "for name in RECIPES:\n"
        "    assert recipe_defaults(name) == load_recipe(name).defaults, name\n"
        "print('same')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "same"


@pytest.mark.parametrize(("shell", "marker"), [("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete")])
def test_completion_script(shell: str, marker: str) -> None:
    result = invoke("completion", shell)
    assert result.exit_code == 0
    assert "_HVDTRAIN_COMPLETE" in result.stdout
    assert marker in result.stdout


def test_completion_via_environment_variable() -> None:
    result = invoke(env={"_HVDTRAIN_COMPLETE": "bash_source"})
    assert result.exit_code == 0
    assert "_HVDTRAIN_COMPLETE=bash_complete" in result.stdout


@pytest.mark.parametrize(
    ("words", "cword", "expected"),
    [
        ("hvdtrain ru", 1, "plain,run"),
        ("hvdtrain run ", 2, "\n".join(f"plain,{name}" for name in sorted(RECIPES))),
        ("hvdtrain run digits --fusion", 3, "plain,--fusion-threshold-mb"),
        ("hvdtrain run digits --launcher ", 4, "plain,horovodrun\nplain,mpirun\nplain,none"),
    ],
)
def test_completion_words(words: str, cword: int, expected: str) -> None:
    env = {"_HVDTRAIN_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    result = invoke(env=env)
    assert result.exit_code == 0
    assert result.stdout.strip() == expected


# --- run --dry-run: exact command lines -----------------------------------------------------------------------------


def test_dry_run_defaults() -> None:
    assert dry() == hvd_line(np=1)
    assert dry("--launcher", "mpirun") == mpi_line(np=1)
    assert dry("-np", "2") == hvd_line()
    assert dry("--np", "2", "--launcher", "mpirun") == mpi_line()
    assert dry("--launcher", "none") == f"HVDTRAIN_EXPECTED_SIZE=1 {DIGITS}"


def test_dry_run_as_root() -> None:
    assert dry("-np", "2", root=True) == f"HVDTRAIN_EXPECTED_SIZE=2 {ROOT_ENV} horovodrun -np 2 -H localhost:2 {DIGITS}"
    assert dry("-np", "2", "--launcher", "mpirun", root=True) == mpi_line().replace(
        "mpirun --tag-output", "mpirun --allow-run-as-root --tag-output"
    )
    assert dry("--launcher", "none", root=True) == f"HVDTRAIN_EXPECTED_SIZE=1 {ROOT_ENV} {DIGITS}"


@pytest.mark.parametrize(
    ("args", "horovodrun", "mpirun"),
    [
        ("--fusion-threshold-mb 32", "--fusion-threshold-mb 32", "-x HOROVOD_FUSION_THRESHOLD=33554432"),
        ("--fusion-threshold-mb 0", "--fusion-threshold-mb 0", "-x HOROVOD_FUSION_THRESHOLD=0"),
        ("--cycle-time-ms 2.5", "--cycle-time-ms 2.5", "-x HOROVOD_CYCLE_TIME=2.5"),
        ("--cache-capacity 0", "--cache-capacity 0", "-x HOROVOD_CACHE_CAPACITY=0"),
        ("--hierarchical-allreduce", "--hierarchical-allreduce", "-x HOROVOD_HIERARCHICAL_ALLREDUCE=1"),
        ("--timeline /tmp/tl.json", "--timeline-filename /tmp/tl.json", "-x HOROVOD_TIMELINE=/tmp/tl.json"),
        (
            "--timeline tl.json --timeline-mark-cycles",
            "--timeline-filename tl.json --timeline-mark-cycles",
            "-x HOROVOD_TIMELINE=tl.json -x HOROVOD_TIMELINE_MARK_CYCLES=1",
        ),
        ("--autotune", "--autotune", "-x HOROVOD_AUTOTUNE=1"),
        (
            "--autotune --autotune-log at.csv",
            "--autotune --autotune-log-file at.csv",
            "-x HOROVOD_AUTOTUNE=1 -x HOROVOD_AUTOTUNE_LOG=at.csv",
        ),
        (
            "--network-interface eth0",
            "--network-interfaces eth0",
            "-mca btl_tcp_if_include eth0 -x NCCL_SOCKET_IFNAME=eth0",
        ),
        (
            "--network-interface ib0,eth0",
            "--network-interfaces ib0,eth0",
            "-mca btl_tcp_if_include ib0,eth0 -x NCCL_SOCKET_IFNAME=ib0,eth0",
        ),
        (
            "--stall-timeout 300",
            "--stall-check-warning-time-seconds 60 --stall-check-shutdown-time-seconds 300",
            "-x HOROVOD_STALL_CHECK_TIME_SECONDS=60 -x HOROVOD_STALL_SHUTDOWN_TIME_SECONDS=300",
        ),
        ("--horovod-log-level debug", "--log-level DEBUG", "-x HOROVOD_LOG_LEVEL=DEBUG"),
        ("--no-hierarchical-allreduce --no-autotune", "", ""),
    ],
)
def test_dry_run_each_launch_option(args: str, horovodrun: str, mpirun: str) -> None:
    assert dry("-np", "2", *args.split()) == hvd_line(horovodrun)
    assert dry("-np", "2", "--launcher", "mpirun", *args.split()) == mpi_line(mpirun)


def test_dry_run_launch_options_with_launcher_none_go_to_env() -> None:
    line = dry("--launcher", "none", "--fusion-threshold-mb", "1", "--cycle-time-ms", "3", "--network-interface", "lo")
    assert line == (
        f"HOROVOD_FUSION_THRESHOLD=1048576 HOROVOD_CYCLE_TIME=3 NCCL_SOCKET_IFNAME=lo HVDTRAIN_EXPECTED_SIZE=1 {DIGITS}"
    )


@pytest.mark.parametrize("controller", ["gloo", "mpi"])
def test_dry_run_controllers(controller: str) -> None:
    assert dry("-np", "2", f"--{controller}") == hvd_line(f"--{controller}")


def test_dry_run_mpi_controller_is_accepted_by_mpirun() -> None:
    assert dry("-np", "2", "--mpi", "--launcher", "mpirun") == mpi_line()


def test_dry_run_fractional_fusion_threshold() -> None:
    assert dry("-np", "2", "--launcher", "mpirun", "--fusion-threshold-mb", "1.5") == mpi_line(
        "-x HOROVOD_FUSION_THRESHOLD=1572864"
    )
    assert_error(invoke("run", "digits", "--dry-run", "--fusion-threshold-mb", "1.5"), "whole megabytes")


def test_dry_run_hosts_and_hostfile() -> None:
    assert dry("-H", "node1:4,node2:4") == hvd_line(np=8, hosts="node1:4,node2:4")
    assert dry("-np", "6", "--hosts", "node1:4,gpu_02:4") == hvd_line(np=6, hosts="node1:4,gpu_02:4")
    assert dry("-H", "node1,node2") == hvd_line(np=2, hosts="node1:1,node2:1")
    # The example hostfile has comments: parsed here, passed on as -H (horovodrun cannot read comments).
    hostfile = str(ROOT / "hostfiles" / "2nodes-4gpus")
    assert dry("--hostfile", hostfile) == hvd_line(np=8, hosts="node1:4,node2:4")
    assert dry("--hostfile", hostfile, "-np", "5", "--launcher", "mpirun") == mpi_line(np=5, hosts="node1:4,node2:4")


def test_all_options_together() -> None:
    args = "-np 4 -H a:2,b:2 --gloo --fusion-threshold-mb 64 --cycle-time-ms 1 --stall-timeout 30 --epochs 3 --seed 1"
    assert dry(*args.split()) == hvd_line(
        "--gloo --fusion-threshold-mb 64 --cycle-time-ms 1 "
        "--stall-check-warning-time-seconds 15 --stall-check-shutdown-time-seconds 30",
        np=4,
        hosts="a:2,b:2",
        program=f"{DIGITS} --epochs 3 --seed 1",
    )


# --- recipe options forwarded to the ranks --------------------------------------------------------------------------


def test_recipe_options_forwarded_in_field_order() -> None:
    args = [
        "--seed", "7", "--log-dir", "runs/my run", "--fp16-allreduce", "--lr-scaling", "sqrt",
        "--lr", "0.01", "--batch-size", "16", "--epochs", "3", "--warmup-epochs", "0.5",
    ]  # fmt: skip
    expected = (
        f"{DIGITS} --epochs 3 --batch-size 16 --lr 0.01 --lr-scaling sqrt --warmup-epochs 0.5 --fp16-allreduce "
        "--log-dir 'runs/my run' --seed 7"
    )
    assert dry("-np", "2", *args) == hvd_line(program=expected)
    assert dry("-np", "2", "--launcher", "mpirun", *args) == mpi_line(program=expected)


def test_values_equal_to_recipe_defaults_are_not_forwarded() -> None:
    defaults = recipe_defaults("digits")
    same = ["--epochs", str(defaults.epochs), "--lr", str(defaults.lr), "--no-fp16-allreduce", "--seed", "42"]
    assert defaults.seed == 42 and not defaults.fp16_allreduce
    assert dry(*same) == hvd_line(np=1)


def test_mnist_program() -> None:
    assert dry("--epochs", "1", recipe="mnist") == hvd_line(np=1, program=f"{PY} -m hvdtrain.recipes.mnist --epochs 1")


def test_config_to_args_round_trips_through_the_recipe_options() -> None:
    defaults = TrainConfig(epochs=20, tensorboard=True, log_dir=Path("logs"))
    config = TrainConfig(
        epochs=3, lr=0.0123, lr_schedule="cosine", tensorboard=False, data_dir=Path("/data/x y"), log_dir=Path("l")
    )
    args = config_to_args(config, defaults)
    assert args == [
        "--epochs", "3", "--lr", "0.0123", "--lr-schedule", "cosine", "--data-dir", "/data/x y", "--log-dir", "l",
        "--no-tensorboard",
    ]  # fmt: skip
    command = click.Command("r", params=train_config_options(defaults), callback=lambda **v: v)
    parsed = command.main(args, standalone_mode=False)
    assert defaults.with_overrides(parsed) == config
    assert config_to_args(defaults, defaults) == []


def test_option_names_do_not_collide() -> None:
    train = {f for p in train_config_options(TrainConfig()) for f in p.opts + p.secondary_opts}
    launch = {f for p in launch_options() for f in p.opts + p.secondary_opts}
    assert not train & launch
    assert not train & {"-c", "--config", "--dry-run", "-h", "--help"}
    assert not launch & {"-c", "--config", "--dry-run", "-h", "--help"}


# --- presets --------------------------------------------------------------------------------------------------------


def test_preset_layering_file_then_command_line(tmp_path: Path) -> None:
    preset = write(
        tmp_path / "p.toml",
        'recipe = "digits"\n'
        "[train]\nepochs = 5\nbatch-size = 16\nlr = 0.01\n"
        '[launch]\nnp = 2\nlauncher = "mpirun"\nfusion-threshold-mb = 32\nhosts = "node1:2,node2:2"\n',
    )
    assert dry("--config", str(preset)) == mpi_line(
        "-x HOROVOD_FUSION_THRESHOLD=33554432",
        hosts="node1:2,node2:2",
        program=f"{DIGITS} --epochs 5 --batch-size 16 --lr 0.01",
    )
    line = dry("-c", str(preset), "--epochs", "7", "--launcher", "horovodrun", "-np", "1", "-H", "localhost:1")
    assert line == hvd_line("--fusion-threshold-mb 32", np=1, program=f"{DIGITS} --epochs 7 --batch-size 16 --lr 0.01")


def test_preset_hosts_are_replaced_by_a_command_line_hostfile(tmp_path: Path) -> None:
    preset = write(tmp_path / "p.toml", '[launch]\nhosts = "node9:8"\n')
    hostfile = str(ROOT / "hostfiles" / "localhost")
    assert dry("-c", str(preset), "--hostfile", hostfile) == hvd_line(np=2)


def test_preset_without_recipe_key_fits_any_recipe(tmp_path: Path) -> None:
    preset = write(tmp_path / "p.toml", "[train]\nepochs = 1\n")
    assert dry("-c", str(preset), recipe="mnist").endswith("-m hvdtrain.recipes.mnist --epochs 1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('recipe = "digits"\n[train]\nepochs = "ten"\n', '[train] epochs: expected an integer, got "ten"'),
        ("[train]\nepochs = 2.5\n", "[train] epochs: expected an integer, got 2.5"),
        ("[train]\nepochs = true\n", "[train] epochs: expected an integer, got true"),
        ("[train]\nlr = -1\n", "[train] lr: must be > 0.0, got -1.0"),
        ("[train]\nlr = [1]\n", "[train] lr: expected a number, got a list"),
        ("[train]\nepochs = 0\n", "[train] epochs: must be >= 1, got 0"),
        (
            '[train]\nlr_scaling = "cubic"\n',
            '[train] lr_scaling: expected one of "linear", "sqrt", "none", got "cubic"',
        ),
        ('[train]\nlog_dir = ""\n', "[train] log_dir: expected a non-empty string"),
        ("[train]\nepoch = 3\n", "[train] unknown key 'epoch'; did you mean 'epochs'?"),
        ("[train]\nbatch-size = 3\nbatch_size = 4\n", "[train] 'batch_size' given twice (also as 'batch-size')"),
        ('recipe = "mnist"\n', "recipe = \"mnist\", but the command runs 'digits'"),
        ("recipe = 3\n", "recipe: expected a string, got 3"),
        ('recip = "digits"\n', "unknown key 'recip'"),
        ("train = 3\n", "'train' must be a table ([train]), got 3"),
        ("[launch]\nnp = 0\n", "[launch] np: must be >= 1, got 0"),
        ('[launch]\nnp = "2"\n', '[launch] np: expected an integer, got "2"'),
        ('[launch]\nlauncher = "srun"\n', '[launch] launcher: expected one of "horovodrun", "mpirun", "none"'),
        ('[launch]\ncontroller = "nccl"\n', '[launch] controller: expected one of "gloo", "mpi", got "nccl"'),
        ('[launch]\nfusion_threshold_mb = "big"\n', '[launch] fusion_threshold_mb: expected a number, got "big"'),
        ("[launch]\nstall_timeout = 0\n", "[launch] stall_timeout: must be >= 1, got 0"),
        ('[launch]\nhosts = "a;b:2"\n', "[launch] hosts: host list entry 1 ('a;b:2'): invalid host name 'a;b'"),
        ('[launch]\nnetwork_interface = "eth0;ls"\n', "[launch] network_interface: invalid network interface"),
        ('[launch]\ntimeline = "-rf"\n', "[launch] timeline: must not start with '-'"),
        ("[launch]\ngpus = 2\n", "[launch] unknown key 'gpus'"),
        ("[train\n", "invalid TOML: Expected ']'"),
    ],
)
def test_preset_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    preset = write(tmp_path / "bad.toml", text)
    for command in ("run", "show"):
        line = assert_error(invoke(command, "digits", "--config", str(preset)), message)
        assert line.startswith(f"hvdtrain: error: {preset}: ")


@pytest.mark.parametrize(
    ("text", "args", "message"),
    [
        ("[train]\nwarmup_epochs = 30\n", ["--epochs", "3"], "(warmup_epochs from {p}; epochs from command line)"),
        ('[launch]\nautotune_log = "at.csv"\n', [], "--autotune-log needs --autotune (autotune_log from {p}"),
        ('[launch]\nlauncher = "mpirun"\n', ["--gloo"], "--gloo needs --launcher horovodrun"),
        ('[launch]\nhosts = "a:1"\nhostfile = "h"\n', [], "give -H/--hosts or --hostfile, not both"),
    ],
)
def test_preset_cross_checks_say_where_values_came_from(
    tmp_path: Path, text: str, args: list[str], message: str
) -> None:
    preset = write(tmp_path / "p.toml", text)
    assert_error(invoke("run", "digits", "--dry-run", "-c", str(preset), *args), message.format(p=preset))


def test_missing_preset() -> None:
    assert_error(invoke("run", "digits", "--config", "/nonexistent/p.toml"), "cannot read preset /nonexistent/p.toml")


def test_shipped_presets() -> None:
    names = {p.name for p in PRESETS}
    for recipe in recipe_names():
        assert {f"{recipe}-quick.toml", f"{recipe}-full.toml"} <= names
    for path in PRESETS:
        preset = load_preset(path)
        recipe = path.name.split("-")[0]
        assert preset.recipe == recipe
        assert "hosts" not in preset.launch and "hostfile" not in preset.launch  # the allocation must win in jobs
        result = invoke("run", recipe, "--config", str(path), "--dry-run")
        assert result.exit_code == 0, result.output


def test_job_templates_run_shipped_presets() -> None:
    for name in ("slurm.sbatch", "pbs.job"):
        path = ROOT / "recipes" / name
        text = path.read_text(encoding="utf-8")
        assert subprocess.run(["bash", "-n", str(path)], check=False).returncode == 0
        recipe = re.search(r"^RECIPE=(?:\$\{RECIPE:-)?(\w+)\}?$", text, re.M)  # the default, when the job may set it
        preset = re.search(r"^PRESET=(?:\$\{PRESET:-)?([^\s}]+)\}?$", text, re.M)
        assert recipe and preset, name
        assert 'hvdtrain run "$RECIPE" --config "$PRESET"' in text
        assert load_preset(ROOT / preset.group(1)).recipe == recipe.group(1)
        assert "hostfile" not in text.split("set -euo pipefail")[1]


# --- show -----------------------------------------------------------------------------------------------------------


def test_show_marks_sources_and_is_a_valid_preset(tmp_path: Path) -> None:
    preset = write(tmp_path / "p.toml", '[train]\nbatch_size = 16\nepochs = 5\n[launch]\nnp = 2\nlauncher = "mpirun"\n')
    result = invoke("show", "digits", "--config", str(preset), "--epochs", "7", "--autotune")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"# hvdtrain show digits: recipe defaults < {preset} < command line"
    assert lines[1] == 'recipe = "digits"'

    def row(key: str) -> tuple[str, str]:
        match = [line for line in lines if re.match(rf"^(# )?{key}[ =]", line)]
        assert len(match) == 1, key
        text, _, source = match[0].rpartition("# ")
        return text.strip(), source

    defaults = recipe_defaults("digits")
    assert row("epochs") == ("epochs = 7", "command line")
    assert row("batch_size") == ("batch_size = 16", str(preset))
    assert row("seed") == (f"seed = {defaults.seed}", "recipe default")
    assert row("lr_scaling") == ('lr_scaling = "linear"', "recipe default")
    assert row("fp16_allreduce") == ("fp16_allreduce = false", "recipe default")
    assert row("log_dir") == ("# log_dir (unset)", "recipe default")
    assert row("np") == ("np = 2", str(preset))
    assert row("launcher") == ('launcher = "mpirun"', str(preset))
    assert row("autotune") == ("autotune = true", "command line")
    assert row("hosts") == ("# hosts (unset)", "default")
    # The output is a preset: reading it back gives the same values.
    saved = write(tmp_path / "saved.toml", result.stdout)
    parsed = tomllib.loads(result.stdout)
    assert parsed["train"]["epochs"] == 7 and parsed["launch"]["launcher"] == "mpirun"
    again = invoke("show", "digits", "--config", str(saved))
    strip = [re.sub(r"\s*#[^\n]*$", "", line) for line in lines[1:]]
    assert [re.sub(r"\s*#[^\n]*$", "", line) for line in again.stdout.splitlines()[1:]] == strip


def test_show_accepts_recipe_options_only_once_validated() -> None:
    assert_error(invoke("show", "digits", "--epochs", "2", "--warmup-epochs", "5"), "--warmup-epochs (5) is longer")
    assert_error(invoke("show", "digits", "--lr", "0"), "--lr must be > 0.0")


# --- errors: recipes, options, injection, slots ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "resnet"], f"unknown recipe 'resnet' (known: {', '.join(sorted(RECIPES))})"),
        (["show", "resnet"], f"unknown recipe 'resnet' (known: {', '.join(sorted(RECIPES))})"),
        (["run", "synthetic"], "the throughput benchmark is: hvdtrain bench synthetic"),
        (
            ["run", "digits", "--elastic", "--cycle-time-ms", "1", "--fusion-threshold-mb", "32"],
            "with --elastic give --cycle-time-ms or --fusion-threshold-mb, not both",
        ),
        (["run"], f"missing RECIPE (one of: {', '.join(sorted(RECIPES))})"),
        (["show"], f"missing RECIPE (one of: {', '.join(sorted(RECIPES))})"),
        (["frobnicate"], "No such command 'frobnicate'"),
        (["run", "digits", "--epoch", "2"], "--epoch"),
        (["run", "digits", "--epochs", "two"], "'two' is not a valid integer"),
        (["run", "digits", "--launcher", "srun"], "'srun' is not one of 'horovodrun', 'mpirun', 'none'"),
        (["run", "digits", "--lr", "-1"], "--lr must be > 0.0, got -1.0"),
        (["run", "digits", "--tensorboard"], "--tensorboard needs --log-dir"),
        (["run", "digits", "--fusion-threshold-mb", "-1"], "--fusion-threshold-mb must be >= 0, got -1.0"),
        (["run", "digits", "--stall-timeout", "0"], "--stall-timeout must be >= 1, got 0"),
        (["run", "digits", "--gloo", "--mpi"], "--gloo and --mpi exclude each other"),
        (["run", "digits", "--gloo", "--launcher", "mpirun"], "--gloo needs --launcher horovodrun"),
        (["run", "digits", "--mpi", "--launcher", "none"], "--mpi needs a launcher"),
        (["run", "digits", "--autotune-log", "a.csv"], "--autotune-log needs --autotune"),
        (["run", "digits", "--timeline-mark-cycles"], "--timeline-mark-cycles needs --timeline FILE"),
        (["run", "digits", "-H", "a:1", "--hostfile", "hostfiles/localhost"], "give -H/--hosts or --hostfile"),
        (["run", "digits", "--launcher", "none", "-np", "2"], "launcher 'none' runs a single process"),
        (["run", "digits", "--launcher", "none", "-H", "node1:1"], "leave hosts empty"),
        (["hostfile", "-o", "x", "check", "y"], "-o/--output writes the allocation"),
        (["completion", "tcsh"], "'tcsh' is not one of 'bash', 'zsh', 'fish'"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], message: str) -> None:
    assert_error(invoke(*args), message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-np", "3", "-H", "localhost:2"], "-np 3 is more than the 2 slot(s) on 1 host(s)"),
        (["-np", "9", "--hostfile", str(ROOT / "hostfiles" / "2nodes-4gpus")], "-np 9 is more than the 8 slot(s)"),
        (["-np", "0"], "-np must be >= 1, got 0"),
        (["-H", ""], "host list is empty"),
        (["-H", "node1:4,,node2:4"], "host list entry 2 is empty"),
        (["-H", "node1:0"], "slots must be a positive integer, got '0'"),
        (["-H", "node1:4,NODE1:2"], "duplicate host"),
    ],
)
def test_np_and_host_list_errors(args: list[str], message: str) -> None:
    assert_error(invoke("run", "digits", "--dry-run", *args), message)


def test_np_above_allocation() -> None:
    assert_error(invoke("run", "digits", "--dry-run", "-np", "5", env=SLURM), "-np 5 is more than the 4 slot(s)")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-H", "node1;rm -rf /:2"], "invalid host name 'node1;rm -rf /'"),
        (["-H", "$(reboot):1"], "invalid host name '$(reboot)'"),
        (["-H", "`id`:1"], "invalid host name '`id`'"),
        (["-H", "node1 node2:1"], "invalid host name 'node1 node2'"),
        (["-H", "-oProxyCommand=touch /tmp/x:1"], "must not start with '-'"),
        (["--network-interface", "eth0;ls"], "invalid network interface 'eth0;ls'"),
        (["--network-interface", "$(x)"], "invalid network interface"),
        (["--timeline", "-rf"], "must not start with '-'"),
        (["--autotune", "--autotune-log", "--help"], "must not start with '-'"),
    ],
)
def test_injection_attempts_rejected(args: list[str], message: str) -> None:
    for launcher in ("horovodrun", "mpirun"):
        assert_error(invoke("run", "digits", "--dry-run", "--launcher", launcher, *args), message)


def test_injection_in_hostfile_and_allocation_rejected(tmp_path: Path) -> None:
    hostfile = write(tmp_path / "hosts", "# ok\nnode1 slots=2\n$(id) slots=1\nnode2;reboot slots=1\n")
    line = assert_error(invoke("run", "digits", "--dry-run", "--hostfile", str(hostfile)), f"{hostfile}:3:")
    assert line.endswith(f"(and 1 more problem(s); see: hvdtrain hostfile check {hostfile})")
    env = {**SLURM, "SLURM_JOB_NODELIST": "a;reboot", "SLURM_TASKS_PER_NODE": "1"}
    assert_error(invoke("run", "digits", "--dry-run", env=env), "slurm allocation: SLURM_JOB_NODELIST: invalid host")


def test_recipe_option_values_are_quoted_not_interpreted() -> None:
    line = dry("--log-dir", "$(touch /tmp/pwned); echo", "--data-dir", "a'b")
    assert line.endswith("--data-dir 'a'\"'\"'b' --log-dir '$(touch /tmp/pwned); echo'")
    assert shlex.split(line)[-4:] == ["--data-dir", "a'b", "--log-dir", "$(touch /tmp/pwned); echo"]


# --- scheduler allocations ------------------------------------------------------------------------------------------


def test_slurm_allocation_gives_hosts_and_np() -> None:
    assert dry(env=SLURM) == hvd_line(np=4, hosts="node1:2,node2:2")
    assert dry("-np", "2", env=SLURM) == hvd_line(np=2, hosts="node1:2,node2:2")
    assert dry("--launcher", "mpirun", env=SLURM) == mpi_line(np=4, hosts="node1:2,node2:2")
    assert dry("-H", "localhost:2", env=SLURM) == hvd_line(np=2)  # explicit hosts win
    assert dry("--launcher", "none", env=SLURM) == f"HVDTRAIN_EXPECTED_SIZE=1 {DIGITS}"  # no allocation needed


def test_pbs_and_lsf_allocations(tmp_path: Path) -> None:
    nodefile = write(tmp_path / "nodefile", "cn1\ncn1\ncn2\ncn2\ncn2\n")
    assert dry(env={"PBS_JOBID": "7", "PBS_NODEFILE": str(nodefile)}) == hvd_line(np=5, hosts="cn1:2,cn2:3")
    assert dry(env={"LSB_JOBID": "8", "LSB_MCPU_HOSTS": "h1 4 h2 4"}) == hvd_line(np=8, hosts="h1:4,h2:4")


def test_malformed_allocation_is_one_line() -> None:
    env = {**SLURM, "SLURM_NTASKS": "3"}
    assert_error(invoke("run", "digits", "--dry-run", env=env), "slurm allocation: SLURM_NTASKS=3 but")


# --- hostfile commands ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", HOSTFILES, ids=lambda p: p.name)
def test_hostfile_check_shipped(path: Path) -> None:
    result = invoke("hostfile", "check", str(path))
    assert result.exit_code == 0
    assert re.fullmatch(rf"{re.escape(str(path))}: \d+ hosts, \d+ slots\n", result.stdout)


def test_hostfile_check_reports_every_problem_with_line_numbers(tmp_path: Path) -> None:
    good = write(tmp_path / "good", "# two hosts\nnode1 slots=2\n\nnode2  # one slot\n")
    result = invoke("hostfile", "check", str(good))
    assert result.exit_code == 0
    assert result.stdout == f"{good}: 2 hosts, 3 slots\n"
    bad = write(tmp_path / "bad", "node1 slots=2\nnode2 slots=0\n# c\nnode1 slots=1\nx;y slots=1\nnode3 gpus=2\n")
    result = invoke("hostfile", "check", str(bad))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{bad}:2: slots must be a positive integer, got '0'",
        f"{bad}:4: duplicate host 'node1' (first on line 1)",
        f"{bad}:5: invalid host name 'x;y': contains ';' (only letters, digits, '_', '-' and '.' are allowed)",
        f"{bad}:6: unknown key 'gpus' (expected slots, max_slots or max-slots)",
    ]
    assert_error(invoke("hostfile", "check", str(tmp_path / "absent")), "No such file or directory")
    empty = write(tmp_path / "empty", "# nothing\n")
    result = invoke("hostfile", "check", str(empty))
    assert result.exit_code == 2
    assert result.stderr == f"{empty}: no hosts (the file is empty or only has comments)\n"


def test_hostfile_from_allocation(tmp_path: Path) -> None:
    result = invoke("hostfile", env=SLURM)
    assert result.exit_code == 0
    assert result.stdout == "node1 slots=2\nnode2 slots=2\n"
    out = tmp_path / "alloc"
    result = invoke("hostfile", "-o", str(out), env=SLURM)
    assert result.exit_code == 0
    assert out.read_text() == "node1 slots=2\nnode2 slots=2\n"
    assert invoke("hostfile", "check", str(out)).stdout == f"{out}: 2 hosts, 4 slots\n"


def test_hostfile_without_allocation_fails() -> None:
    assert_error(invoke("hostfile"), "no scheduler allocation here")
    assert_error(invoke("hostfile", env={**SLURM, "SLURM_TASKS_PER_NODE": "2(x3)"}), "slurm allocation:")


# --- execution (launcher mocked) ------------------------------------------------------------------------------------


class FakePopen:
    """Stands in for subprocess.Popen: records each launch; ``wait`` returns ``returncode`` or raises ``errors``."""

    returncode = 0
    errors: list[BaseException] = []
    launches: list[FakePopen] = []
    stdout = stderr = None  # not relayed

    def __init__(self, argv: list[str], **kwargs: Any) -> None:
        self.argv, self.kwargs, self.signals, self.waits = argv, kwargs, [], []
        FakePopen.launches.append(self)

    def wait(self, timeout: float | None = None) -> int:
        self.waits.append(timeout)
        if FakePopen.errors:
            raise FakePopen.errors.pop(0)
        return FakePopen.returncode

    def send_signal(self, signum: int) -> None:
        self.signals.append(signum)


@pytest.fixture
def fake_popen(monkeypatch: pytest.MonkeyPatch) -> type[FakePopen]:
    monkeypatch.setattr(FakePopen, "returncode", 0)
    monkeypatch.setattr(FakePopen, "errors", [])
    monkeypatch.setattr(FakePopen, "launches", [])
    monkeypatch.setattr(job_module.subprocess, "Popen", FakePopen)
    monkeypatch.setattr(start_module, "find_program", lambda name: f"/opt/bin/{name}")
    monkeypatch.setattr(start_module, "controller_problem", lambda controller: None)  # no Horovod import here
    return FakePopen


def test_execute_passes_argv_env_and_exit_code(fake_popen: type[FakePopen]) -> None:
    fake_popen.returncode = 3
    result = invoke("run", "digits", "-np", "2", "--epochs", "2")
    assert result.exit_code == 3
    (launch,) = fake_popen.launches
    program = [sys.executable, "-m", "hvdtrain.recipes.digits", "--epochs", "2"]
    assert launch.argv == ["horovodrun", "-np", "2", "-H", "localhost:2", *program]
    assert launch.kwargs["executable"] == "/opt/bin/horovodrun"
    assert launch.kwargs["env"]["HVDTRAIN_EXPECTED_SIZE"] == "2"
    assert launch.kwargs["env"]["PATH"] == os.environ["PATH"]  # the caller's environment, plus the launch variables
    assert "shell" not in launch.kwargs


def test_execute_mpirun_exports_expected_size_with_x(fake_popen: type[FakePopen]) -> None:
    assert invoke("run", "digits", "-np", "2", "--launcher", "mpirun").exit_code == 0
    argv = fake_popen.launches[0].argv
    assert argv[argv.index("HVDTRAIN_EXPECTED_SIZE=2") - 1] == "-x"


def test_execute_killed_by_signal(fake_popen: type[FakePopen]) -> None:
    fake_popen.returncode = -9
    assert_error(invoke("run", "digits"), "horovodrun was killed by SIGKILL", code=137)


def test_launcher_runs_in_a_session_of_its_own(fake_popen: type[FakePopen]) -> None:
    assert invoke("run", "digits").exit_code == 0
    assert fake_popen.launches[0].kwargs["start_new_session"] is True  # a terminal's Ctrl-C reaches hvdtrain only


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_stop_signal_stops_the_job_and_says_so(fake_popen: type[FakePopen], signum: int, code: int) -> None:
    fake_popen.errors = [job_module.Interrupted(signum)]  # what the handler raises while hvdtrain waits
    result = invoke("run", "digits")
    assert result.exit_code == code
    assert result.stderr == f"hvdtrain: stopped by {signal.Signals(signum).name}: ended the job's 0 process(es)\n"


def test_launcher_cannot_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(job_module.subprocess, "Popen", broken)
    monkeypatch.setattr(start_module, "find_program", lambda name: f"/opt/bin/{name}")
    assert_error(invoke("run", "digits"), "cannot start horovodrun: Permission denied")


def test_execute_launcher_not_found(monkeypatch: pytest.MonkeyPatch, fake_popen: type[FakePopen]) -> None:
    monkeypatch.setattr(start_module, "find_program", lambda name: None)
    assert_error(invoke("run", "digits", "--launcher", "mpirun"), "mpirun not found on PATH")
    assert fake_popen.launches == []


def test_unresolvable_host_stops_before_launch(monkeypatch: pytest.MonkeyPatch, fake_popen: type[FakePopen]) -> None:
    looked_up: list[str] = []

    def fake_getaddrinfo(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        looked_up.append(host)
        if host == "ghost":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return []

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    args = ["run", "digits", "-H", "localhost:1,10.0.0.9:1,node1:1,ghost:1"]
    assert_error(invoke(*args), "cannot resolve host name(s) 'ghost' (Name or service not known)")
    assert sorted(looked_up) == ["ghost", "node1"]  # localhost and addresses are not looked up
    assert fake_popen.launches == []
    assert invoke(*args, "--no-check-hosts").exit_code == 0
    assert len(fake_popen.launches) == 1
    assert invoke(*args, "--dry-run").exit_code == 0  # --dry-run does not resolve


def test_every_launch_config_field_is_an_option() -> None:
    names = {p.name for p in launch_options()}
    assert names == ({f for f in LaunchConfig.__dataclass_fields__} - {"controller"}) | {"gloo", "mpi"}


# --- real runs ------------------------------------------------------------------------------------------------------


def run_real(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    return subprocess.run(
        [str(HVDTRAIN), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False
    )


def test_check_command() -> None:
    out = run_real("check", cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"^Horovod\s+0\.28\.1$", out.stdout, re.M)
    assert re.search(r"^  controllers\s+\[X\] MPI  \[X\] Gloo$", out.stdout, re.M)
    assert re.search(r"^  tensor ops\s+.*\[X\] MPI  \[X\] Gloo$", out.stdout, re.M)
    for name in ("Python", "TensorFlow", "MPI", "GPUs", "Scheduler"):
        assert re.search(rf"^{name}\s+\S", out.stdout, re.M), name
    major = installed_keras_major()
    assert re.search(
        rf"^TensorFlow\s+2\.\d+\.\d+, Keras {major}\.\d+\.\d+: hvdtrain back end keras{major} ", out.stdout, re.M
    )


def assert_trained(out: subprocess.CompletedProcess[str]) -> None:
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    accuracies = [float(a) for a in re.findall(r"test accuracy (\d+\.\d+)", out.stdout)]
    assert len(accuracies) == 1, out.stdout[-3000:]
    assert accuracies[0] > 0.5


@pytest.mark.multiproc
@pytest.mark.parametrize(
    "launch",
    [
        ["--launcher", "horovodrun", "--gloo"],
        ["--launcher", "horovodrun", "--mpi"],
        ["--launcher", "mpirun"],
    ],
    ids=["horovodrun-gloo", "horovodrun-mpi", "mpirun"],
)
def test_real_two_rank_run(launch: list[str], tmp_path: Path) -> None:
    out = run_real("run", "digits", "--epochs", "2", "-np", "2", "--log-all-ranks", *launch, cwd=tmp_path)
    assert_trained(out)
    # Plain output: rank 0's lines read like a single-process Keras run (before: each carried the launcher's
    # [1,0]<stdout>: tag), and each epoch is one line, Keras's, with the throughput in it (before: a second one).
    lines = out.stdout.splitlines() + out.stderr.splitlines()
    assert not [line for line in lines if re.match(r"\[\d+(,\d+)?\]<std(out|err)>:", line)], out.stdout + out.stderr
    epochs = [line for line in out.stdout.splitlines() if "samples_per_sec: " in line]
    assert len(epochs) == 2 and all(re.match(r"\d+/\d+ - ", line) for line in epochs), out.stdout
    assert re.findall(r"^Epoch (\d)/2$", out.stdout, re.M) == ["1", "2"]
    assert "samples/s (global)," not in out.stderr
    assert re.search(r"^\[rank 1\] recipe digits", out.stderr, re.M), out.stderr  # other ranks keep a rank tag
    assert "[rank 1] [rank 1]" not in out.stderr


def test_real_run_in_this_process(tmp_path: Path) -> None:
    assert_trained(run_real("run", "digits", "--epochs", "1", "--launcher", "none", cwd=tmp_path))


@pytest.mark.parametrize(
    ("args", "controller"),
    [(["--launcher", "mpirun"], "mpi"), (["--mpi"], "mpi"), (["--gloo"], "gloo"), (["--elastic"], "gloo")],
)
def test_a_controller_horovod_lacks_is_refused_before_launch(
    monkeypatch: pytest.MonkeyPatch, fake_popen: type[FakePopen], args: list[str], controller: str
) -> None:
    asked: list[str] = []

    def lacks(name: str) -> str:
        asked.append(name)
        return f"this Horovod was built without {name.upper()}"

    monkeypatch.setattr(start_module, "controller_problem", lacks)
    assert_error(invoke("run", "digits", *args), f"built without {controller.upper()}")
    assert asked == [controller] and fake_popen.launches == []


def _float_flags() -> list[str]:
    """Every float option of ``hvdtrain run``: TrainConfig's and LaunchConfig's float fields, as flags."""
    import typing

    flags = []
    for cls in (TrainConfig, LaunchConfig):
        hints = typing.get_type_hints(cls)
        flags += [option_name(name) for name, hint in hints.items() if float in (hint, *typing.get_args(hint))]
    return flags


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
@pytest.mark.parametrize("flag", _float_flags())
def test_every_float_option_refuses_nan_and_inf(flag: str, value: str) -> None:
    shown = str(float(value))
    assert_error(invoke("run", "digits", "--dry-run", flag, value), f"{flag} must be a finite number, got {shown}")


def test_there_are_float_options_of_both_kinds() -> None:
    assert {"--lr", "--warmup-epochs", "--cycle-time-ms", "--fusion-threshold-mb"} <= set(_float_flags())


@pytest.mark.parametrize(
    ("table", "line", "message"),
    [
        ("train", "lr = nan", "[train] lr: must be a finite number, got nan"),
        ("train", "warmup_epochs = inf", "[train] warmup_epochs: must be a finite number, got inf"),
        ("launch", "cycle_time_ms = nan", "cycle_time_ms: must be a finite number, got nan"),
        ("train", "epochs = 1_000_000_000_000", "epochs: must be <= 1,000,000, got 1,000,000,000,000"),
    ],
)
def test_presets_refuse_nan_inf_and_huge_values(tmp_path: Path, table: str, line: str, message: str) -> None:
    preset = tmp_path / "p.toml"
    preset.write_text(f"[{table}]\n{line}\n")
    assert_error(invoke("run", "digits", "--dry-run", "--config", str(preset)), message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "1000000000000"], "--epochs must be <= 1,000,000, got 1,000,000,000,000"),
        (["--batch-size", "100000000000"], "--batch-size must be <= 1,048,576, got 100,000,000,000"),
        (["--seed", "99999999999"], "--seed must be <= 2,147,483,647, got 99,999,999,999"),
        (["--cycle-time-ms", "1e9"], "--cycle-time-ms must be <= 60,000.0, got 1,000,000,000.0"),
        (["--cache-capacity", "99999999999999"], "--cache-capacity must be <= 2,147,483,647"),
        (["--stall-timeout", "99999999999999"], "--stall-timeout must be <= 2,147,483,647"),
    ],
)
def test_values_that_cannot_be_meant_are_refused(args: list[str], message: str) -> None:
    assert_error(invoke("run", "digits", "--dry-run", *args), message)
