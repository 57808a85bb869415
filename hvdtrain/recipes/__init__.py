"""The recipe registry: name -> module, readable without importing TensorFlow.

``hvdtrain list``, ``--help``, shell completion and ``--dry-run`` only need a recipe's summary and defaults, so both
are read from the module's source (its docstring, and the literal ``TrainConfig(...)`` passed as ``defaults=``).
Only :func:`load_recipe` imports the module, and with it TensorFlow.

A recipe with its own options defines a ``TrainConfig`` subclass (fields with ``metadata=recipe_option(...)``) in a
module that does not import TensorFlow, registers it in :data:`CONFIGS`, and passes ``defaults=ThatClass(...)``.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import typing
from functools import cache
from typing import TYPE_CHECKING, Any

from hvdtrain.config import TrainConfig

if TYPE_CHECKING:
    from hvdtrain.recipe import Recipe

RECIPES: dict[str, str] = {
    "cifar10": "hvdtrain.recipes.cifar10",
    "digits": "hvdtrain.recipes.digits",
    "imdb": "hvdtrain.recipes.imdb",
    "mnist": "hvdtrain.recipes.mnist",
    "movielens": "hvdtrain.recipes.movielens",
}
# Recipes with options of their own: "module:Class" of their TrainConfig subclass (a module without TensorFlow).
CONFIGS: dict[str, str] = {
    "cifar10": "hvdtrain.recipes.cifar10_config:Cifar10Config",
    "imdb": "hvdtrain.recipes.imdb_config:ImdbConfig",
    "movielens": "hvdtrain.recipes.movielens_config:MovielensConfig",
}


class RecipeError(ValueError):
    """An unknown or broken recipe; the message is one line meant for the user."""


def recipe_names() -> list[str]:
    """The registered recipe names, sorted."""
    return sorted(RECIPES)


def module_name(name: str) -> str:
    """The module that defines recipe ``name`` (``python -m`` runs it on every rank)."""
    if name not in RECIPES:
        raise RecipeError(f"unknown recipe {name!r} (known: {', '.join(recipe_names())})")
    return RECIPES[name]


@cache
def _source_tree(name: str) -> ast.Module:
    module = module_name(name)
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise RecipeError(f"recipe {name!r}: cannot find the source of module {module}")
    try:
        with open(spec.origin, encoding="utf-8") as f:
            return ast.parse(f.read(), filename=spec.origin)
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe {name!r}: cannot read {spec.origin}: {exc}") from None


def summary(name: str) -> str:
    """The first line of the recipe module's docstring (empty if it has none)."""
    doc = ast.get_docstring(_source_tree(name)) or ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""


def config_type(name: str) -> type[TrainConfig]:
    """The recipe's configuration class: ``TrainConfig``, or its subclass with the recipe's own options."""
    module_name(name)
    if name not in CONFIGS:
        return TrainConfig
    module, _, cls = CONFIGS[name].partition(":")
    found = getattr(importlib.import_module(module), cls, None)
    if not (isinstance(found, type) and issubclass(found, TrainConfig)):
        raise RecipeError(f"recipe {name!r}: {CONFIGS[name]} is not a TrainConfig subclass")
    typing.get_type_hints(found)  # every annotation resolvable (the options are built from them)
    return found


def _literal_defaults(tree: ast.Module, class_name: str = "TrainConfig") -> dict[str, Any] | None:
    """Keywords of ``recipe = Recipe(..., defaults=TrainConfig(k=literal, ...))``; None when not that simple."""
    calls = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "recipe" for t in node.targets)
    ]
    if len(calls) != 1:
        return None
    call = calls[0]
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Recipe"):
        return None
    given = [kw.value for kw in call.keywords if kw.arg == "defaults"]
    if any(kw.arg is None for kw in call.keywords):  # **kwargs could hide defaults=
        return None
    if not given:
        return {}
    config = given[0]
    if not (isinstance(config, ast.Call) and isinstance(config.func, ast.Name) and config.func.id == class_name):
        return None
    if config.args or any(kw.arg is None for kw in config.keywords):
        return None
    try:
        return {kw.arg: ast.literal_eval(kw.value) for kw in config.keywords if kw.arg is not None}
    except ValueError:
        return None


def recipe_defaults(name: str) -> TrainConfig:
    """The recipe's default configuration (a :func:`config_type` instance), read from its source; imports the recipe
    only if that is not literal."""
    cls = config_type(name)
    values = _literal_defaults(_source_tree(name), cls.__name__)
    if values is None:
        return load_recipe(name).defaults
    try:
        return dataclasses.replace(cls(), **values)
    except TypeError as exc:
        raise RecipeError(f"recipe {name!r}: bad defaults: {exc}") from None


def load_recipe(name: str) -> Recipe:
    """Import the recipe's module (and TensorFlow) and return its ``recipe`` object."""
    module = importlib.import_module(module_name(name))
    recipe = getattr(module, "recipe", None)
    if recipe is None:
        raise RecipeError(f"module {module.__name__} defines no 'recipe'")
    return recipe
