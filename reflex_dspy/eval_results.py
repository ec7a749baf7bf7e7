"""What one evaluation produced: per-example results, a candidate's scores, and the run's totals.

Plain records (JSON via `to_dict`/`asdict`), kept apart from the evaluator that fills them so
strategies, proposals and the journal can read results without the machinery that runs them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import dspy

from reflex_dspy.retries import NO_ANSWER


@dataclass
class ExampleResult:
    """The outcome of one (candidate, example) pair. `score is None` means it failed."""

    example_id: str
    score: float | None
    by_metric: dict[str, float] = field(default_factory=dict)
    feedback: str | None = None
    output: dict[str, Any] = field(default_factory=dict)
    trace: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    by_model: dict[str, float] = field(default_factory=dict)  # with several task models
    agent_trace: dict[str, Any] | None = None  # the whole execution trace (trace.AgentTrace), pipeline mode
    # Why the candidate has no answer here ("too_long", "unreadable": `retries.no_answer`): the
    # example scores 0 with its error kept, unlike a failure (see evaluation.py).
    no_answer: str | None = None

    @property
    def failed(self) -> bool:
        return self.score is None

    def to_dict(self) -> dict[str, Any]:
        # Fresh containers (a journal entry never shares them with the run cache) without
        # `asdict`'s deep copy of every leaf: this runs once per paid call (8x faster, bench/).
        return {f.name: _copied(getattr(self, f.name)) for f in fields(self)}


def _copied(value: Any) -> Any:
    """`value` with its dicts and lists copied (their leaves are plain JSON values)."""
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copied(v) for v in value]
    return value


@dataclass
class EvalResult:
    """Scores of one candidate on a list of examples, keyed by stable example id."""

    fingerprint: str
    results: dict[str, ExampleResult]
    new_calls: int = 0
    cache_hits: int = 0

    @property
    def scores(self) -> dict[str, float]:
        """Per-example scores of the examples that did not fail."""
        return {i: r.score for i, r in self.results.items() if r.score is not None}

    @property
    def n(self) -> int:
        return len(self.results)

    @property
    def failed_ids(self) -> list[str]:
        return [i for i, r in self.results.items() if r.failed]

    @property
    def n_failed(self) -> int:
        return len(self.failed_ids)

    @property
    def mean(self) -> float | None:
        """Mean over scored examples; failed ones are excluded and reported, never counted as 0."""
        scores = list(self.scores.values())
        return sum(scores) / len(scores) if scores else None

    @property
    def by_metric(self) -> dict[str, float]:
        """Mean score per metric (a composite metric's parts)."""
        return self._means("by_metric")

    @property
    def by_model(self) -> dict[str, float]:
        """Mean score per task model (empty with a single task model)."""
        return self._means("by_model")

    @property
    def no_answers(self) -> dict[str, int]:
        """How many examples scored 0 for want of an answer, by reason (`retries.NO_ANSWER`)."""
        return dict(Counter(r.no_answer for r in self.results.values() if r.no_answer))

    def _means(self, part: str) -> dict[str, float]:
        """The mean of each name in the examples' `part` mapping, over the examples that have it;
        an example with no answer counts 0 for every name, as it does in `mean`."""
        totals: dict[str, list[float]] = {}
        for r in self.results.values():
            for name, value in getattr(r, part).items():
                totals.setdefault(name, []).append(value)
        unanswered = sum(1 for r in self.results.values() if r.no_answer and not getattr(r, part))
        for values in totals.values():
            values.extend([0.0] * unanswered)
        return {name: sum(v) / len(v) for name, v in totals.items()}

    def worst(self, k: int) -> list[ExampleResult]:
        """The `k` lowest-scoring scored examples (ties keep example order)."""
        scored = [r for r in self.results.values() if r.score is not None]
        return sorted(scored, key=lambda r: r.score)[:k]


class ReplayedFailure(Exception):
    """A reasoning call that failed before a resume, raised again instead of paying for it twice."""


@dataclass
class Usage:
    """Running totals for one run. Reasoning tokens are kept apart from evaluation tokens."""

    metric_calls: int = 0
    search_calls: int = 0  # the budgeted part of metric_calls (train and val, not test)
    cache_hits: int = 0
    lm_calls: int = 0
    eval_tokens: int = 0
    # Of lm_calls / eval_tokens, those the metric made (an LLM judge): a judge's cost is its own line.
    metric_lm_calls: int = 0
    metric_tokens: int = 0
    reasoning_calls: int = 0
    reasoning_tokens: int = 0
    failed: int = 0
    # Examples scored 0 for want of an answer, one counter per `retries.NO_ANSWER` kind (same names):
    too_long: int = 0  # the request was over the task model's context window
    unreadable: int = 0  # the adapter could not read the model's reply
    retries: int = 0
    rate_limits: int = 0  # 429 answers seen: each one slowed the run down, and was retried unless last
    reasoning_failed: int = 0  # reasoning requests that got no usable reply (after retries)
    reasoning_error: str | None = None  # the first of them, redacted (why "reasoning 0 calls")

    def to_dict(self) -> dict[str, int | str | None]:
        return asdict(self)

    def warnings(self) -> list[str]:
        """What the run's summary must say about these totals (the other counts have their own line)."""
        return [f"{n} answers scored 0: {why.reason} ({why.hint})"
                for kind, why in NO_ANSWER.items() if (n := getattr(self, kind))]


def usage_totals(tracker: Any) -> tuple[int, int]:
    """(calls, tokens) recorded by a `dspy.track_usage()` tracker; DSPy cache hits record nothing."""
    calls = tokens = 0
    for entries in tracker.usage_data.values():
        for entry in entries:
            calls += 1
            total = entry.get("total_tokens")
            if total is None:
                total = (entry.get("prompt_tokens") or 0) + (entry.get("completion_tokens") or 0)
            tokens += total or 0
    return calls, tokens


def plain_output(prediction: Any) -> dict[str, Any]:
    if isinstance(prediction, dspy.Prediction):
        items = prediction.toDict().items()
    elif isinstance(prediction, Mapping):
        items = prediction.items()
    else:
        return {"output": str(prediction)}
    return {k: v if isinstance(v, str | int | float | bool | type(None)) else str(v) for k, v in items}
