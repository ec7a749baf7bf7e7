"""Strategies and their registry: `register_strategy(name, cls)`, `list_strategies()`.

Built-in strategies are imported when first asked for, so importing the package (and the
CLI's `--help`) does not pay for Optuna or GEPA.
"""

from __future__ import annotations

import importlib
from typing import Any

from reflex_dspy.errors import UsageError
from reflex_dspy.strategies.base import SearchContext, Step, Strategy

_BUILTIN = {
    "auto": "reflex_dspy.strategies.auto:Auto",
    "fewshot": "reflex_dspy.strategies.fewshot:FewShot",
    "gepa": "reflex_dspy.strategies.gepa:GEPA",
    "iterative": "reflex_dspy.strategies.iterative:Iterative",
    "joint": "reflex_dspy.strategies.joint:Joint",
    "pdo": "reflex_dspy.strategies.pdo:PDO",
    "structural": "reflex_dspy.strategies.structural:Structural",
}
_REGISTRY: dict[str, type[Strategy]] = {}


def register_strategy(name: str, cls: type[Strategy]) -> None:
    """Make `cls` available as `Reflex(strategy=name)` and `reflex-dspy optimize -s name`."""
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise TypeError(f"{cls!r} is not a subclass of reflex_dspy.strategies.Strategy")
    _REGISTRY[name] = cls


def list_strategies(*, builtin_only: bool = False) -> list[str]:
    """Every strategy name; `builtin_only`: those any new process knows (not ones registered here)."""
    return sorted(_BUILTIN) if builtin_only else sorted(set(_BUILTIN) | set(_REGISTRY))


def strategy_class(name: str) -> type[Strategy]:
    """The class registered under `name`; unknown names are a `UsageError` listing the known ones."""
    cls = _REGISTRY.get(name)
    if cls is None and name in _BUILTIN:
        module, _, attr = _BUILTIN[name].partition(":")
        cls = _REGISTRY[name] = getattr(importlib.import_module(module), attr)
    if cls is None:
        raise UsageError(f"unknown strategy {name!r} (known: {', '.join(list_strategies())})")
    return cls


def get_strategy(name: str, metric: Any = None, **params: Any) -> Strategy:
    """Instantiate the strategy registered under `name` with its parameters (`extra_kwargs`)."""
    from reflex_dspy.strategies.params import validate_params

    cls = strategy_class(name)
    try:  # typed and range-checked from the constructor's annotations first (strategies/params.py)
        return cls(metric, **validate_params(cls, params, strategy_class))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"invalid parameters for strategy {name!r}: {exc}") from None


def __getattr__(name: str) -> Any:
    """`from reflex_dspy.strategies import PDO` etc. without importing every strategy up front."""
    for key, target in _BUILTIN.items():
        if target.endswith(f":{name}"):
            return strategy_class(key)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SearchContext", "Step", "Strategy", "get_strategy", "list_strategies", "register_strategy",
           "strategy_class"]
