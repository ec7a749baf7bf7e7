"""Which predictors of a program are optimized: the one selection rule.

In a pipeline only some nodes should change (the answer step of an agent, say); the others are
context that the judge sees but no strategy touches. A user says which, in one of two ways:

- `Reflex(..., optimize=["answer"])`: by `named_predictors()` name;
- `self.answer = reflex_dspy.optimize(dspy.Predict(...))` inside the module (reads as
  `optimize=True`); `reflex_dspy.optimize(p, False)` marks a predictor as context explicitly.

The rule: explicit names win; else the predictors marked `True`, if any; else every predictor
not marked `False`. A candidate holds only the selected predictors, so a strategy cannot change
any other: `Candidate.apply` leaves predictors outside the candidate exactly as they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reflex_dspy.errors import UsageError

MARK = "_reflex_optimize"  # an instance attribute: it survives deepcopy and Candidate.apply


def optimize(predictor: Any, enabled: bool = True) -> Any:
    """Mark `predictor` to be optimized (or, with `enabled=False`, kept as context); returns it.

    `self.answer = reflex_dspy.optimize(dspy.Predict(Answer))` or `reflex_dspy.optimize(self.answer)`.
    A module that is not a predictor (e.g. `dspy.ChainOfThought`) marks the predictors inside it.
    """
    from dspy import Predict  # the user's program imported dspy already

    targets = [predictor] if isinstance(predictor, Predict) else [p for _, p in _predictors(predictor)]
    if not targets:
        raise UsageError(
            f"reflex_dspy.optimize(): {type(predictor).__name__} holds no DSPy predictor to mark"
        )
    for target in targets:
        setattr(target, MARK, bool(enabled))
    return predictor


def marked(predictor: Any) -> bool | None:
    """True (optimize), False (context) or None (not marked)."""
    return getattr(predictor, MARK, None)


def _predictors(program: Any) -> list[tuple[str, Any]]:
    named = getattr(program, "named_predictors", None)
    return list(named()) if callable(named) else []


def select_predictors(program: Any, names: Sequence[str] | None = None) -> list[str]:
    """The names of the predictors to optimize, in program order, by the rule in the module docstring.

    Unknown or empty `names` raise a one-line `UsageError` listing the program's predictors.
    """
    predictors = _predictors(program)
    known = [name for name, _ in predictors]
    listing = ", ".join(known) or "none"
    if names is not None:
        if isinstance(names, str):
            names = [names]
        wanted = list(dict.fromkeys(names))
        if not wanted:
            raise UsageError(f"optimize=[] selects no predictor (the program has: {listing})")
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise UsageError(
                f"optimize: no predictor named {unknown[0]!r} in the program (it has: {listing})"
            )
        return [n for n in known if n in wanted]
    chosen = [name for name, p in predictors if marked(p) is True]
    if chosen:
        return chosen
    return [name for name, p in predictors if marked(p) is not False]
