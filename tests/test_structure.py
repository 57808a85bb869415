"""The package's structure: no import cycles, the rank side apart from the launcher side, one table of Horovod knobs."""

from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path

import pytest

from hvdtrain.knobs import KNOB, KNOBS, HorovodKnobs, Knob
from hvdtrain.launch_config import LaunchConfig

PACKAGE = Path(__file__).resolve().parents[1] / "hvdtrain"
LAUNCHER_SIDE = {"hvdtrain.cli", "hvdtrain.start", "hvdtrain.job", "hvdtrain.launch", "hvdtrain.launch_config"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph() -> dict[str, set[str]]:
    """Module -> the hvdtrain modules it imports, at the top or inside a function (not under TYPE_CHECKING, which
    never runs)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _type_checking_only(node)
                   for n in ast.walk(node)}  # fmt: skip
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                for alias in node.names:  # from pkg import submodule: an edge to the submodule
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import each other, directly or not (strongly connected components > 1)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    """Before: hvdtrain.options <-> hvdtrain.recipe, hvdtrain.cli <-> hvdtrain.bench.cli."""
    graph = import_graph()
    assert len(graph) > 30 and "hvdtrain.recipe" in graph["hvdtrain.recipes.digits"]
    assert cycles(graph) == []


def test_tuning_which_runs_on_every_rank_imports_nothing_of_the_launcher_side() -> None:
    graph = import_graph()
    reached, todo = set(), ["hvdtrain.tuning"]
    while todo:
        for target in graph[todo.pop()] - reached:
            reached.add(target)
            todo.append(target)
    assert "hvdtrain.knobs" in reached and not reached & LAUNCHER_SIDE, sorted(reached)


def test_every_knob_has_a_flag_variables_and_a_conversion() -> None:
    import horovod.runner.common.util.config_parser as horovod_config

    horovod_names = {v for k, v in vars(horovod_config).items() if k.startswith("HOROVOD_")} | {"NCCL_SOCKET_IFNAME"}
    samples = {bool: True, int: 30, float: 2.0, str: "eth0"}
    for knob in KNOBS:
        assert knob.flag.startswith("--") and knob.horovodrun and knob.help, knob
        assert knob.env and set(knob.env) <= horovod_names, knob  # Horovod's own variable names
        sample = KNOB["log_level"].check("info") if knob.name == "log_level" else samples[knob.kind]
        texts = knob.to_env(knob.checked(sample))
        assert len(texts) == len(knob.env) and all(isinstance(t, str) and t for t in texts), knob
        assert knob.requires is None or knob.requires in KNOB


def test_the_knob_table_is_the_knobs_of_both_configs() -> None:
    assert {f.name for f in dataclasses.fields(HorovodKnobs)} == set(KNOB)
    options = {f.name: f for f in dataclasses.fields(LaunchConfig)}
    for knob in KNOBS:
        meta = options[knob.option].metadata
        assert meta["knob"] is knob and meta["help"] == knob.help, knob.option


@pytest.mark.parametrize("knob", KNOBS, ids=[k.name for k in KNOBS])
def test_horovodrun_takes_each_knobs_flags(monkeypatch: pytest.MonkeyPatch, knob: Knob) -> None:
    """Each knob's horovodrun flags, as built from the table, parse with horovodrun's own parser to the value."""
    from horovod.runner import launch as horovodrun

    value = {bool: True, int: 30, float: 2.0, str: "eth0"}[knob.kind]
    if knob.name in ("timeline", "autotune_log"):
        value = "/tmp/x.json"
    elif knob.name == "log_level":
        value = "DEBUG"

    def parse(*flags: str) -> dict[str, object]:
        monkeypatch.setattr(sys, "argv", ["horovodrun", "-np", "1", *flags, "python"])
        return vars(horovodrun.parse_args())  # an unknown flag: SystemExit

    without, given = parse(), parse(*knob.horovodrun_args(value))
    assert {k for k in given if given[k] != without[k]}, knob.horovodrun_args(value)
