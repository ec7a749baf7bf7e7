"""One JSON-friendly form for values that come out of DSPy: demos, outputs, trace inputs.

A leaf: `candidate` (demos in a checkpoint) and `trace` (a pipeline's steps) both use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def plain(value: Any) -> Any:
    """A JSON-friendly copy of `value` (pydantic models dumped, dspy objects as dicts, else text)."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "toDict"):
        return plain(value.toDict())
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
