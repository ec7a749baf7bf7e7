"""The metric calling convention and what every metric builds on.

Users bring metrics in three shapes (DSPy's `metric(example, pred, trace=None) -> float|bool`,
GEPA's five-argument form, and returns of `dspy.Prediction(score=, feedback=)` or a dict);
`call_metric` turns every one of them into a `MetricResult` so the evaluator and the strategies
never care which shape they got. A metric that cannot produce a score raises `MetricFailure`, which
the evaluator records as a failed example: a broken judge must never look like a bad prompt.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dspy

from reflex_dspy.errors import UsageError

RESERVED_ID_FIELD = "reflex_id"
FEEDBACK_CHARS = 160  # enough to show the gist of an output without flooding the proposal prompt



@dataclass
class MetricResult:
    """A normalised metric outcome: score in [0, 1], optional feedback, per-metric scores."""

    score: float
    feedback: str | None = None
    by_metric: dict[str, float] = field(default_factory=dict)


class MetricFailure(Exception):
    """The metric could not produce a score (e.g. the judge never answered parseably).

    The evaluator records the example as failed, never as 0: scoring it 0 would blame the prompt
    for an infrastructure problem.
    """


# ---------------------------------------------------------------------------------------------
# Normalising user metrics
# ---------------------------------------------------------------------------------------------

# Inspecting a signature costs microseconds; metrics are called thousands of times per run.
_CALL_STYLE_CACHE: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def _call_style(metric: Callable[..., Any]) -> int:
    """How many positional arguments to pass: 2 (example, pred), 3 (+ trace) or 5 (GEPA's form)."""
    # A bound method is a new object on every attribute access; its function is the stable key.
    key = getattr(metric, "__func__", metric)
    try:
        return _CALL_STYLE_CACHE[key]
    except (KeyError, TypeError):
        pass
    style = _inspect_call_style(metric)
    with contextlib.suppress(TypeError):  # not weak-referenceable: inspected again next time
        _CALL_STYLE_CACHE[key] = style
    return style


def _inspect_call_style(metric: Callable[..., Any]) -> int:
    try:
        params = list(inspect.signature(metric).parameters.values())
    except (TypeError, ValueError):
        return 3  # uninspectable: assume DSPy's own convention
    names = {p.name for p in params}
    if "pred_name" in names or "pred_trace" in names:
        return 5
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 5:
        return 5
    if len(positional) >= 3 or any(p.kind is p.VAR_POSITIONAL for p in params):
        return 3
    return 2


def check_signature(metric: Callable[..., Any]) -> None:
    """Raise a one-line `UsageError` for a metric that cannot take the arguments it will be called
    with (`_call_style`), before any model call: otherwise the first answer is paid for, then the
    run stops on a `TypeError` from inside the metric call."""
    if isinstance(metric, Metric):
        return
    try:
        signature = inspect.signature(metric)
    except (TypeError, ValueError):
        return  # uninspectable (a builtin): it is called as DSPy would call it
    style = _call_style(metric)
    try:
        signature.bind(*([None] * style))
    except TypeError as exc:
        shapes = {2: "metric(example, prediction)", 3: "metric(example, prediction, trace)",
                  5: "metric(gold, pred, trace, pred_name, pred_trace)"}
        raise UsageError(f"metric {metric_label(metric)!r} cannot be called as {shapes[style]}: {exc}; a metric "
                         "takes the example and the prediction as its first two positional arguments") from None


def metric_label(metric: Any) -> str:
    """A human name for a metric, for error messages and `by_metric` keys."""
    name = getattr(metric, "name", None)
    if isinstance(name, str) and name:
        return name
    name = getattr(metric, "__name__", None)
    if isinstance(name, str) and name:
        return name
    return type(metric).__name__


def _check_score(value: Any, metric: Any) -> float:
    """A finite float in [0, 1], or the error that says which metric misbehaved."""
    label = metric_label(metric)
    if value is None:
        raise MetricFailure(f"metric {label!r} returned no score (None)")
    if isinstance(value, bool):
        return float(value)
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"metric {label!r} returned {type(value).__name__} {value!r}; expected a number in [0, 1]"
        ) from None
    if math.isnan(score):
        raise MetricFailure(f"metric {label!r} returned NaN")
    if not -1e-9 <= score <= 1 + 1e-9:  # tolerate float noise from averaging, nothing more
        hint = " (DSPy's Evaluate reports 0-100: divide by 100)" if score <= 100 else ""
        raise ValueError(f"metric {label!r} returned {score!r}; scores must be in [0, 1]{hint}")
    return min(1.0, max(0.0, score))


def call_metric(
    metric: Callable[..., Any], example: dspy.Example, prediction: Any, trace: Any = None
) -> MetricResult:
    """Call any supported metric and return a `MetricResult`.

    Accepted returns: a number or bool, `dspy.Prediction(score=, feedback=)`, a mapping with
    `score` (and optional `feedback`), or a `MetricResult`. Raises `ValueError` for a score outside
    [0, 1], `MetricFailure` for None/NaN, and lets the metric's own exceptions through.
    """
    if isinstance(metric, Metric):
        return metric.evaluate(example, prediction, trace)
    style = _call_style(metric)
    if style == 5:
        # pred_name=None asks a GEPA metric for the score of the whole program.
        raw = metric(example, prediction, trace, None, None)
    elif style == 3:
        raw = metric(example, prediction, trace)
    else:
        raw = metric(example, prediction)
    return _normalise(raw, metric)


def _normalise(raw: Any, metric: Any) -> MetricResult:
    if isinstance(raw, MetricResult):
        return MetricResult(_check_score(raw.score, metric), raw.feedback, dict(raw.by_metric))
    if isinstance(raw, dspy.Prediction | Mapping):
        if "score" not in raw:
            raise TypeError(
                f"metric {metric_label(metric)!r} returned a {type(raw).__name__} without 'score'"
            )
        feedback = raw.get("feedback")
        return MetricResult(_check_score(raw["score"], metric), None if feedback is None else str(feedback))
    return MetricResult(_check_score(raw, metric))


# ---------------------------------------------------------------------------------------------
# Field plumbing shared by the built-ins
# ---------------------------------------------------------------------------------------------


def as_text(value: Any) -> str:
    """The text a model output or gold value stands for (structured values as JSON)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if hasattr(value, "model_dump_json"):
        return value.model_dump_json()
    if isinstance(value, Mapping | list | tuple):
        try:
            return json.dumps(value, ensure_ascii=False)
        except TypeError:
            return str(value)
    return str(value)


def clip(text: str, limit: int = FEEDBACK_CHARS) -> str:
    """Quote `text` for feedback, shortened to `limit` characters and kept on one line."""
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return f'"{flat}"'


def clip_json(value: Any, limit: int = 40) -> str:
    """A JSON value as it would be written in JSON (true, null, "text"), shortened for feedback."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except TypeError:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _has_input_keys(example: dspy.Example) -> bool:
    return getattr(example, "_input_keys", None) is not None


def label_fields(example: dspy.Example, prediction: Any = None) -> dict[str, Any]:
    """The gold label fields of `example`, without the reserved `reflex_id`.

    Examples without `with_inputs(...)` have no declared labels; then the fields the prediction
    also has are taken as labels (inputs are not echoed in a prediction).
    """
    if _has_input_keys(example):
        labels = dict(example.labels().items())
    else:
        shared = set(prediction.keys()) if prediction is not None and hasattr(prediction, "keys") else set()
        labels = {k: v for k, v in example.items() if k in shared}
    labels.pop(RESERVED_ID_FIELD, None)
    predicted = set(prediction.keys()) if prediction is not None and hasattr(prediction, "keys") else set()
    if "id" not in predicted:
        labels.pop("id", None)  # a dataset's own example id is bookkeeping, not a label to produce
    return labels


def input_fields(example: dspy.Example, prediction: Any = None) -> dict[str, Any]:
    """The input fields of `example`, without `reflex_id` (see `label_fields` for the fallback)."""
    if _has_input_keys(example):
        inputs = dict(example.inputs().items())
    else:
        labels = label_fields(example, prediction)
        inputs = {k: v for k, v in example.items() if k not in labels}
    inputs.pop(RESERVED_ID_FIELD, None)
    return inputs


def _field_pairs(example: dspy.Example, prediction: Any) -> list[tuple[str, Any, Any]]:
    """(field, gold, predicted) for every gold label field; a missing prediction field fails."""
    labels = label_fields(example, prediction)
    if not labels:
        raise MetricFailure(
            "example has no gold label fields to compare (mark inputs with example.with_inputs(...))"
        )
    pairs = []
    for name, gold in labels.items():
        try:
            predicted = prediction[name]
        except (KeyError, TypeError, IndexError):
            raise MetricFailure(
                f"prediction has no field {name!r} (a gold label field of the example)"
            ) from None
        pairs.append((name, gold, predicted))
    return pairs


def render_fields(fields: Mapping[str, Any]) -> str:
    """One field as its bare text; several as `name: value` blocks."""
    if len(fields) == 1:
        return as_text(next(iter(fields.values())))
    return "\n".join(f"{name}: {as_text(value)}" for name, value in fields.items())


# ---------------------------------------------------------------------------------------------
# Built-in metrics
# ---------------------------------------------------------------------------------------------


class Metric(ABC):
    """Base of reflex_dspy's own metrics: a DSPy metric that can also explain its score.

    `metric(example, pred, trace=None)` returns a float, so a built-in can be handed to any DSPy
    optimizer; `evaluate` returns the full `MetricResult` (feedback, per-metric scores).
    """

    name: str = "metric"

    def __call__(self, example: dspy.Example, prediction: Any, trace: Any = None) -> float:
        return self.evaluate(example, prediction, trace).score

    @abstractmethod
    def evaluate(self, example: dspy.Example, prediction: Any, trace: Any = None) -> MetricResult:
        """Score one prediction with feedback; raise `MetricFailure` when no score is possible."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class FieldMetric(Metric):
    """A metric that scores each gold label field on its own and averages over fields."""

    @abstractmethod
    def compare(self, gold: Any, predicted: Any) -> tuple[float, str]:
        """Score one field in [0, 1] with a one-line feedback."""

    def evaluate(self, example: dspy.Example, prediction: Any, trace: Any = None) -> MetricResult:
        pairs = _field_pairs(example, prediction)
        scored = [(name, *self.compare(gold, predicted)) for name, gold, predicted in pairs]
        score = sum(s for _, s, _ in scored) / len(scored)
        if len(scored) == 1:
            feedback = scored[0][2]
        else:
            feedback = "; ".join(f"{name}: {text}" for name, _, text in scored)
        return MetricResult(score, feedback, {self.name: score})
