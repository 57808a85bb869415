"""Presets: TOML files of training and launch settings, layered as recipe defaults < preset < command line.

    recipe = "digits"          # optional; when given it must match the recipe on the command line
    [train]                    # TrainConfig fields, snake_case or kebab-case: epochs, batch_size, lr, ...
    epochs = 2
    [launch]                   # LaunchConfig fields: np, hosts, hostfile, launcher, controller, ...
    np = 2

Values are type-checked as TOML values (``epochs = "ten"`` is an error, ``lr = 1`` is the float 1.0). Paths are
used as written, relative to the directory hvdtrain runs in, as on the command line. Every problem is one line that
names the file and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from hvdtrain.config import ConfigError, TrainConfig, range_problem
from hvdtrain.launch import LaunchError
from hvdtrain.launch_config import LaunchConfig

T = TypeVar("T", TrainConfig, LaunchConfig)

TABLES: dict[str, type[TrainConfig] | type[LaunchConfig]] = {"train": TrainConfig, "launch": LaunchConfig}
TOP_LEVEL_KEYS = ("recipe", "train", "launch")
COMMAND_LINE = "command line"
HOST_KEYS = ("hosts", "hostfile")  # one setting: the layer that names either replaces both


class PresetError(ValueError):
    """A preset problem; the message is one line naming the file and the key."""


@dataclass(frozen=True)
class Preset:
    """A parsed, type-checked preset file."""

    path: Path
    recipe: str | None
    train: dict[str, Any]
    launch: dict[str, Any]

    @property
    def label(self) -> str:
        """How the file is named in messages and in ``hvdtrain show``."""
        return str(self.path)


@dataclass(frozen=True)
class Layered(Generic[T]):
    """A merged configuration and, per field, where its value came from."""

    value: T
    sources: dict[str, str]


def toml_value(value: Any) -> str:
    """``value`` as a TOML literal (str and Path quoted, bools lower-case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    escaped = "".join(
        "\\\\" if c == "\\" else '\\"' if c == '"' else f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c
        for c in text
    )
    return f'"{escaped}"'


def _describe(annotation: Any) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(toml_value(a) for a in typing.get_args(annotation))
    if args:
        return _describe(args[0])
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path (string)"}.get(
        annotation, str(annotation)
    )


def _typed(annotation: Any, value: Any, meta: Mapping[str, Any]) -> Any:
    """``value`` checked against (and converted to) ``annotation``; raise ValueError with the reason."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    shown = toml_value(value) if _is_scalar(value) else f"a {type(value).__name__}"
    expected = f"expected {_describe(annotation)}, got {shown}"
    if typing.get_origin(annotation) is Literal:
        choices = typing.get_args(annotation)
        if isinstance(value, str) and meta.get("case_insensitive"):
            value = next((c for c in choices if c.lower() == value.lower()), value)
        if value not in choices or not isinstance(value, str):
            raise ValueError(expected)
        return value
    if args:  # Optional[X]
        return _typed(args[0], value, meta)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError(expected)
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(expected)
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(expected)
        return float(value)
    if annotation in (str, Path):
        if not isinstance(value, str) or not value:
            raise ValueError(expected if not isinstance(value, str) else "expected a non-empty string")
        return Path(value) if annotation is Path else value
    raise ValueError(f"unsupported field type {annotation}")


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str))


def _check_range(meta: Mapping[str, Any], value: Any) -> None:
    if (problem := range_problem(meta, value)) is not None:
        raise ValueError(problem)


def _table(where: str, table: str, raw: Any, cls: type[Any] | None = None) -> dict[str, Any]:
    """Check one ``[train]``/``[launch]`` table against its dataclass (``cls``: a recipe's TrainConfig subclass)."""
    if not isinstance(raw, dict):
        raise PresetError(f"{where}: '{table}' must be a table ([{table}]), got {toml_value(raw)}")
    cls = cls or TABLES[table]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    result: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(fields)})"
            raise PresetError(f"{where}: [{table}] unknown key {key!r}{hint}")
        if name in spelled:
            raise PresetError(f"{where}: [{table}] {key!r} given twice (also as {spelled[name]!r})")
        spelled[name] = key
        try:
            typed = _typed(hints[name], value, fields[name].metadata)
            _check_range(fields[name].metadata, typed)
            if "check" in fields[name].metadata:
                fields[name].metadata["check"](typed)
        except ValueError as exc:
            raise PresetError(f"{where}: [{table}] {key}: {exc}") from None
        result[name] = typed
    return result


def load_preset(path: str | Path, train_type: type[TrainConfig] = TrainConfig, for_recipe: str | None = None) -> Preset:
    """Read and type-check a preset file; raise PresetError with one line.

    ``[train]`` is checked against ``train_type`` (a recipe's TrainConfig subclass takes its own keys too); with
    ``for_recipe``, a preset naming another recipe is refused first.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise PresetError(f"cannot read preset {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise PresetError(f"{path}: invalid TOML: not UTF-8") from None
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise PresetError(f'{path}: unknown key {key!r} (expected recipe = "...", [train] and [launch])')
    recipe = raw.get("recipe")
    if recipe is not None and not isinstance(recipe, str):
        raise PresetError(f"{path}: recipe: expected a string, got {toml_value(recipe)}")
    if for_recipe is not None and recipe is not None and recipe != for_recipe:
        raise PresetError(f"{path}: recipe = {toml_value(recipe)}, but the command runs {for_recipe!r}")
    where = str(path)
    train = _table(where, "train", raw.get("train", {}), train_type)
    return Preset(path, recipe, train, _table(where, "launch", raw.get("launch", {})))


def check_recipe(preset: Preset, name: str) -> None:
    """Raise PresetError if the preset names a different recipe than ``name``."""
    if preset.recipe is not None and preset.recipe != name:
        raise PresetError(f"{preset.label}: recipe = {toml_value(preset.recipe)}, but the command runs {name!r}")


def layer(base: T, layers: Sequence[tuple[str, Mapping[str, Any]]], base_label: str) -> Layered[T]:
    """``base`` with each layer's non-None values on top, in order, remembering each value's source."""
    values: dict[str, Any] = {}
    sources = {f.name: base_label for f in dataclasses.fields(base)}
    for label, overrides in layers:
        for name, value in overrides.items():
            if value is not None:
                values[name] = value
                sources[name] = label
    return Layered(dataclasses.replace(base, **values), sources)


def merge_train(defaults: TrainConfig, preset: Preset | None, cli: Mapping[str, Any]) -> Layered[TrainConfig]:
    """Recipe defaults < preset [train] < command line, validated; a ConfigError names preset-sourced keys."""
    layers = ([(preset.label, preset.train)] if preset else []) + [(COMMAND_LINE, cli)]
    merged = layer(defaults, layers, "recipe default")
    try:
        merged.value.validate()
    except ConfigError as exc:
        raise ConfigError(_explain(str(exc), merged.sources, preset)) from None
    return merged


def merge_launch(preset: Preset | None, cli: Mapping[str, Any]) -> Layered[LaunchConfig]:
    """Defaults < preset [launch] < command line; -H/--hostfile on the command line replace the preset's hosts."""
    from_preset = dict(preset.launch) if preset else {}
    if any(cli.get(k) is not None for k in HOST_KEYS):
        for key in HOST_KEYS:
            from_preset.pop(key, None)
    layers = ([(preset.label, from_preset)] if preset else []) + [(COMMAND_LINE, cli)]
    merged = layer(LaunchConfig(), layers, "default")
    try:
        merged.value.validate()
    except LaunchError as exc:
        raise LaunchError(_explain(str(exc), merged.sources, preset)) from None
    return merged


def _explain(message: str, sources: Mapping[str, str], preset: Preset | None) -> str:
    """Append where the values named in a validation message (``--flag``) came from, when the preset set one."""
    names = [n for n in dict.fromkeys(f[2:].replace("-", "_") for f in re.findall(r"--[a-z0-9-]+", message))]
    names = [n for n in names if n in sources]
    if preset is None or all(sources[n] != preset.label for n in names):
        return message
    return f"{message} ({'; '.join(f'{n} from {sources[n]}' for n in names)})"


def dump(recipe: str, sections: Sequence[tuple[str, Layered[Any]]], header: str) -> str:
    """A merged configuration as preset-compatible TOML: values marked with their source, unset keys commented out."""
    rows: list[tuple[str, str]] = [(f"recipe = {toml_value(recipe)}", "")]
    for table, merged in sections:
        rows.append(("", ""))
        rows.append((f"[{table}]", ""))
        hints = typing.get_type_hints(type(merged.value))
        for f in dataclasses.fields(merged.value):
            value = getattr(merged.value, f.name)
            if float in (hints[f.name], *typing.get_args(hints[f.name])) and type(value) is int:
                value = float(value)  # keep TOML's float type for float fields set as int literals
            source = merged.sources[f.name]
            if value is None:
                rows.append((f"# {f.name} (unset)", source))
            else:
                rows.append((f"{f.name} = {toml_value(value)}", source))
    width = max(len(text) for text, source in rows if source) + 2
    lines = [f"# {header}"]
    lines += [f"{text:<{width}}# {source}" if source else text for text, source in rows]
    return "\n".join(lines) + "\n"
