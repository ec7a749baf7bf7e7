"""Metrics by name or as functions: `resolve_metric(spec)` and the combination of several.

`base` holds the calling convention every metric goes through, `builtin` the reference-based
metrics, `judge` the LLM judge. Several metrics combine by mean, each reported in `by_metric`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import dspy

from reflex_dspy.errors import UsageError
from reflex_dspy.metrics.base import (
    RESERVED_ID_FIELD,
    FieldMetric,
    Metric,
    MetricFailure,
    MetricResult,
    as_text,
    call_metric,
    check_signature,
    input_fields,
    label_fields,
    metric_label,
    render_fields,
)
from reflex_dspy.metrics.builtin import Bleu, Contains, ExactMatch, JsonMatch, Rouge, normalize_exact
from reflex_dspy.metrics.judge import DEFAULT_JUDGE_CRITERIA, JudgeMetric, as_data, load_rubric

__all__ = [
    "DEFAULT_JUDGE_CRITERIA", "KNOWN_METRICS", "RESERVED_ID_FIELD", "Bleu", "CombinedMetric", "Contains",
    "ExactMatch", "FieldMetric", "JsonMatch", "JudgeMetric", "Metric", "MetricFailure", "MetricResult", "Rouge",
    "as_data", "as_text", "call_metric", "compares_labels", "input_fields", "label_fields", "load_rubric", "metric_names",
    "normalize_exact", "render_fields", "resolve_metric",
]


class CombinedMetric(Metric):
    """The mean of several metrics, each also reported alone in `by_metric`.

    If any part fails the example fails: a mean over whichever parts happened to work would not be
    comparable across examples.
    """

    def __init__(self, metrics: Sequence[Callable[..., Any]]):
        if not metrics:
            raise ValueError("CombinedMetric needs at least one metric")
        self.metrics = list(metrics)
        self.names = _unique([metric_label(m) for m in self.metrics])
        self.name = "+".join(self.names)

    def evaluate(self, example: dspy.Example, prediction: Any, trace: Any = None) -> MetricResult:
        by_metric: dict[str, float] = {}
        scores: list[float] = []
        feedback: list[str] = []
        for name, metric in zip(self.names, self.metrics, strict=True):
            try:
                result = call_metric(metric, example, prediction, trace)
            except MetricFailure as exc:
                raise MetricFailure(f"{name}: {exc}") from exc
            scores.append(result.score)
            by_metric[name] = result.score
            if result.feedback:
                feedback.append(f"[{name} {result.score:.2f}] {result.feedback}")
        return MetricResult(sum(scores) / len(scores), "\n".join(feedback) or None, by_metric)


def compares_labels(metric: object) -> bool:
    """Whether `metric` compares each of an example's non-input fields with the prediction's (the
    built-ins do; a user's function or a judge decide for themselves what they read)."""
    if isinstance(metric, CombinedMetric):
        return any(compares_labels(part) for part in metric.metrics)
    return isinstance(metric, FieldMetric)


def _unique(names: list[str]) -> list[str]:
    """Distinct keys for `by_metric` (two user lambdas are both called '<lambda>')."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


_BUILTINS: dict[str, Callable[[], Metric]] = {
    "exact": ExactMatch,
    "contains": Contains,
    "rouge": Rouge,
    "bleu": Bleu,
    "json_match": JsonMatch,
}
KNOWN_METRICS: tuple[str, ...] = tuple(sorted([*_BUILTINS, "judge"]))


def resolve_metric(
    spec: str | Callable[..., Any] | Sequence[str | Callable[..., Any]],
    *,
    judge_lm: dspy.BaseLM | None = None,
    judge_criteria: str | os.PathLike[str] | None = None,
) -> Callable[..., Any]:
    """A metric from a callable (returned as is), a built-in name, or a list of either.

    Several metrics combine by mean (`CombinedMetric`). `judge_criteria` is rubric text, or a path
    read with `load_rubric`. Unknown names and a judge without a judge model raise `UsageError`.
    """
    if callable(spec) and not isinstance(spec, str):
        check_signature(spec)
        return spec
    if isinstance(spec, str):
        return _resolve_name(spec, judge_lm, judge_criteria)
    items = list(spec)
    if not items:
        raise UsageError(f"no metric given (known: {', '.join(KNOWN_METRICS)})")
    metrics = [resolve_metric(item, judge_lm=judge_lm, judge_criteria=judge_criteria) for item in items]
    return metrics[0] if len(metrics) == 1 else CombinedMetric(metrics)


def _resolve_name(
    name: str, judge_lm: dspy.BaseLM | None, judge_criteria: str | os.PathLike[str] | None
) -> Metric:
    key = name.strip().lower()
    if key == "judge":
        if judge_lm is None:
            raise UsageError("metric 'judge' needs a judge model (--judge MODEL)")
        criteria = load_rubric(judge_criteria) if isinstance(judge_criteria, os.PathLike) else judge_criteria
        return JudgeMetric(judge_lm, criteria)
    if key not in _BUILTINS:
        raise UsageError(f"unknown metric {name!r} (known: {', '.join(KNOWN_METRICS)})")
    return _BUILTINS[key]()


def metric_names(metric: Callable[..., Any]) -> list[str]:
    """The names to record in config for a metric (each part of a combination)."""
    if isinstance(metric, CombinedMetric):
        return list(metric.names)
    return [metric_label(metric)]
