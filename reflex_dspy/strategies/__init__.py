"""Strategies and their registry: `register_strategy(name, cls)`, `list_strategies()`."""

from __future__ import annotations

from typing import Any

from reflex_dspy.errors import UsageError
from reflex_dspy.strategies.base import SearchContext, Step, Strategy
from reflex_dspy.strategies.iterative import Iterative

_REGISTRY: dict[str, type[Strategy]] = {}


def register_strategy(name: str, cls: type[Strategy]) -> None:
    """Make `cls` available as `Reflex(strategy=name)` and `reflex-dspy optimize -s name`."""
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise TypeError(f"{cls!r} is not a subclass of reflex_dspy.strategies.Strategy")
    _REGISTRY[name] = cls


def list_strategies() -> list[str]:
    return sorted(_REGISTRY)


def get_strategy(name: str, metric: Any = None, **params: Any) -> Strategy:
    """Instantiate the strategy registered under `name` with its parameters (`extra_kwargs`)."""
    cls = _REGISTRY.get(name)
    if cls is None:
        raise UsageError(f"unknown strategy {name!r} (known: {', '.join(list_strategies())})")
    try:
        return cls(metric, **params)
    except TypeError as exc:
        raise UsageError(f"invalid parameters for strategy {name!r}: {exc}") from None


register_strategy("iterative", Iterative)

__all__ = ["Iterative", "SearchContext", "Step", "Strategy", "get_strategy", "list_strategies", "register_strategy"]
