"""Strategy parameters typed and range-checked from the constructor's own annotations (pydantic).

`-p bottom_k=abc` used to pass `--dry-run` and crash the real run after files were written, and
`bottom_k=-5` ran. `validate_params` builds a pydantic model from the strategy's `__init__`
signature when the strategy is built (`get_strategy`), so `--dry-run` and the start of a run
refuse a bad value with one line, before anything is written. A strategy declares a range by
annotating the parameter, e.g. `bottom_k: Annotated[int, Field(ge=1)] = 10`; a parameter
annotated with `STRATEGY_PARAMS` (auto's `axis_params`) maps strategy names to their own
parameters, and each of those is validated against that strategy in turn.
"""

from __future__ import annotations

import inspect
import sys
import typing
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model


class _StrategyParams:
    """Marker for `Annotated[...]`: a {strategy name: {param: value}} mapping, checked per strategy."""

    def __repr__(self) -> str:
        return "STRATEGY_PARAMS"


STRATEGY_PARAMS = _StrategyParams()
_SKIP = {"self", "metric"}


def _hint(cls: type, name: str, annotation: Any) -> Any:
    """The annotation as a type; a name only importable for type checkers counts as Any."""
    if not isinstance(annotation, str):
        return Any if annotation is inspect.Parameter.empty else annotation
    module = sys.modules.get(cls.__module__)
    namespace = {**vars(typing), **(vars(module) if module else {})}
    try:
        return eval(annotation, namespace)  # noqa: S307 - the class's own annotation text
    except Exception:  # noqa: BLE001 - TYPE_CHECKING-only names: validate nothing rather than guess
        return Any


def _nested(hint: Any) -> bool:
    return typing.get_origin(hint) is typing.Annotated and any(
        isinstance(m, _StrategyParams) for m in typing.get_args(hint)[1:]
    )


@cache
def _model(cls: type) -> tuple[type[BaseModel], frozenset[str], bool]:
    """(pydantic model of `cls.__init__`'s keyword parameters, nested-params names, accepts **kwargs)."""
    fields: dict[str, Any] = {}
    nested: set[str] = set()
    open_ended = False
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name in _SKIP or param.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            open_ended = True
            continue
        hint = _hint(cls, name, param.annotation)
        if _nested(hint):
            nested.add(name)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[name] = (hint, default)
    config = ConfigDict(arbitrary_types_allowed=True, extra="allow" if open_ended else "forbid")
    return create_model(f"{cls.__name__}Params", __config__=config, **fields), frozenset(nested), open_ended


def _describe(exc: ValidationError, known: Any = ()) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "parameters"
    if err.get("type") == "extra_forbidden":
        return f"unknown parameter {where!r} (known: {', '.join(sorted(known)) or 'none'})"
    got = err.get("input")
    shown = f" (got {got!r})" if not isinstance(got, dict) else ""
    return f"{where}: {err.get('msg', 'invalid value').removeprefix('Value error, ')}{shown}"


def validate_params(cls: type, params: dict[str, Any], resolve: Any = None) -> dict[str, Any]:
    """`params` checked against `cls.__init__`'s annotations; the values as validated (5.0 → 5).

    Raises ValueError with one line naming the parameter. `resolve(name)` gives the class of a
    strategy named inside a `STRATEGY_PARAMS` mapping; that strategy is also built once with its
    parameters, so its own checks (a ValueError in its constructor) run now, not mid-run.
    """
    model, nested, _ = _model(cls)
    try:
        checked = model.model_validate(params)
    except ValidationError as exc:
        raise ValueError(_describe(exc, model.model_fields)) from None
    values = {k: getattr(checked, k) for k in params if k in model.model_fields}
    values.update({k: v for k, v in params.items() if k not in model.model_fields})  # **kwargs: as given
    for name in nested:
        for sub, sub_params in (values.get(name) or {}).items():
            if resolve is None or not isinstance(sub_params, dict):
                continue
            try:
                sub_cls = resolve(sub)
                values[name][sub] = checked_sub = validate_params(sub_cls, sub_params, resolve)
                sub_cls(None, **checked_sub)  # its own cross-parameter checks, now rather than mid-run
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{name}.{sub}: {exc}") from None
    return values
