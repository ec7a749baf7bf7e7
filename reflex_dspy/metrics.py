"""Metrics: one calling convention for user metrics, and the built-in metrics by name.

Users bring metrics in three shapes (DSPy's `metric(example, pred, trace=None) -> float|bool`,
GEPA's five-argument form, and returns of `dspy.Prediction(score=, feedback=)` or a dict);
`call_metric` turns every one of them into a `MetricResult` so the evaluator and the strategies
never care which shape they got. A metric that cannot produce a score raises `MetricFailure`, which
the evaluator records as a failed example: a broken judge must never look like a bad prompt.

The built-ins compare the gold label fields of an example with the same-named fields of the
prediction and also write a short feedback line, because the optimizer shows feedback to a
reasoning model and "expected X, got Y" is far more useful to it than a bare 0.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import re
import warnings
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError

from reflex_dspy.errors import UsageError
from reflex_dspy.signatures import JudgeResponse

RESERVED_ID_FIELD = "reflex_id"
_FEEDBACK_CHARS = 160  # enough to show the gist of an output without flooding the proposal prompt

# The judge re-asks with a fresh `rollout_id` (a new cache key) rather than a higher temperature,
# so that a retry is a true re-ask yet a later replay of the same run hits the cache. DSPy warns
# that rollout_id does not change *sampling* at temperature 0; for us it is only a cache key.
warnings.filterwarnings("ignore", message="rollout_id has no effect when temperature=0")


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


def _metric_label(metric: Any) -> str:
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
    label = _metric_label(metric)
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
                f"metric {_metric_label(metric)!r} returned a {type(raw).__name__} without 'score'"
            )
        feedback = raw.get("feedback")
        return MetricResult(_check_score(raw["score"], metric), None if feedback is None else str(feedback))
    return MetricResult(_check_score(raw, metric))


# ---------------------------------------------------------------------------------------------
# Field plumbing shared by the built-ins
# ---------------------------------------------------------------------------------------------


def _as_text(value: Any) -> str:
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


def _clip(text: str, limit: int = _FEEDBACK_CHARS) -> str:
    """Quote `text` for feedback, shortened to `limit` characters and kept on one line."""
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return f'"{flat}"'


def _clip_json(value: Any, limit: int = 40) -> str:
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


def _render_fields(fields: Mapping[str, Any]) -> str:
    """One field as its bare text; several as `name: value` blocks."""
    if len(fields) == 1:
        return _as_text(next(iter(fields.values())))
    return "\n".join(f"{name}: {_as_text(value)}" for name, value in fields.items())


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


_QUOTE_PAIRS = {'"': '"', "'": "'", "`": "`", "“": "”", "‘": "’", "«": "»"}


def normalize_exact(text: str) -> str:
    """Strip whitespace, surrounding quotes and a trailing period, then casefold.

    These are the differences a small model adds without meaning anything by them
    (`"Billing."` for `billing`); anything else counts as a real difference.
    """
    previous = None
    while text != previous:
        previous = text
        text = text.strip()
        if text.endswith("."):
            text = text[:-1]
        if len(text) >= 2 and _QUOTE_PAIRS.get(text[0]) == text[-1]:
            text = text[1:-1]
    return text.casefold()


def _loose(text: str) -> str:
    """Casefolded with whitespace collapsed: the comparison form for `contains`."""
    return " ".join(text.casefold().split())


class ExactMatch(FieldMetric):
    """1 if the output equals the gold after `normalize_exact`, else 0."""

    name = "exact"

    def compare(self, gold: Any, predicted: Any) -> tuple[float, str]:
        gold_text, pred_text = _as_text(gold), _as_text(predicted)
        if normalize_exact(gold_text) == normalize_exact(pred_text):
            return 1.0, f"correct: {_clip(pred_text)}"
        feedback = f"expected {_clip(gold_text)}, got {_clip(pred_text)}"
        if not pred_text.strip():
            feedback += " (empty output)"
        elif normalize_exact(gold_text) and normalize_exact(gold_text) in normalize_exact(pred_text):
            feedback += " (the answer is there, but with extra text)"
        return 0.0, feedback


class Contains(FieldMetric):
    """1 if the gold text occurs in the output (casefolded, whitespace collapsed), else 0."""

    name = "contains"

    def compare(self, gold: Any, predicted: Any) -> tuple[float, str]:
        gold_text, pred_text = _as_text(gold), _as_text(predicted)
        if _loose(gold_text) in _loose(pred_text):
            return 1.0, f"contains {_clip(gold_text)}"
        return 0.0, f"expected the output to contain {_clip(gold_text)}, got {_clip(pred_text)}"


def _length_note(gold_text: str, pred_text: str) -> str:
    """Say when the output is much longer or shorter than the reference: a common, fixable cause."""
    gold_words, pred_words = len(gold_text.split()), len(pred_text.split())
    if not gold_words or not pred_words:
        return ""
    ratio = pred_words / gold_words
    if ratio >= 1.5:
        return f"; output is {ratio:.1f}x longer than the reference ({pred_words} vs {gold_words} words)"
    if ratio <= 0.67:
        return f"; output is shorter than the reference ({pred_words} vs {gold_words} words)"
    return ""


@cache
def _rouge_scorer() -> Any:
    """One ROUGE-L scorer per process: building it loads the stemmer, scoring is stateless."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


class Rouge(FieldMetric):
    """ROUGE-L F1 (longest common subsequence, Porter stemmer) against the gold text.

    rouge_score's tokenizer keeps only ASCII letters and digits, so text in other scripts scores 0.
    """

    name = "rouge"

    def compare(self, gold: Any, predicted: Any) -> tuple[float, str]:
        gold_text, pred_text = _as_text(gold), _as_text(predicted)
        if not gold_text.strip() and not pred_text.strip():
            return 1.0, "both empty"
        score = float(_rouge_scorer().score(gold_text, pred_text)["rougeL"].fmeasure)
        if score >= 1.0:
            return 1.0, "matches the reference"
        feedback = f"ROUGE-L {score:.2f}: expected {_clip(gold_text)}, got {_clip(pred_text)}"
        return score, feedback + _length_note(gold_text, pred_text)


class Bleu(FieldMetric):
    """Sentence BLEU (sacrebleu defaults) against the gold text, scaled to [0, 1]."""

    name = "bleu"

    def compare(self, gold: Any, predicted: Any) -> tuple[float, str]:
        import sacrebleu

        gold_text, pred_text = _as_text(gold), _as_text(predicted)
        if not gold_text.strip() and not pred_text.strip():
            return 1.0, "both empty"
        score = min(1.0, max(0.0, sacrebleu.sentence_bleu(pred_text, [gold_text]).score / 100))
        if score >= 1.0:
            return 1.0, "matches the reference"
        feedback = f"BLEU {score:.2f}: expected {_clip(gold_text)}, got {_clip(pred_text)}"
        return score, feedback + _length_note(gold_text, pred_text)


_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n?(.*?)```", re.DOTALL)
_NOT_JSON = object()


def _parse_json(value: Any, opener: str = "{") -> Any:
    """JSON value of `value`: already-structured values as is; text as JSON, from a ``` fence,
    or from the first decodable `opener`...closer span in surrounding prose. `_NOT_JSON` if none."""
    if isinstance(value, Mapping | list):
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    text = _as_text(value).strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    for block in _FENCE.findall(text):
        try:
            return json.loads(block.strip())
        except ValueError:
            continue
    decoder = json.JSONDecoder()
    start = text.find(opener)
    while start != -1:
        try:
            return decoder.raw_decode(text, start)[0]
        except ValueError:
            start = text.find(opener, start + 1)
    return _NOT_JSON


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers compare by value (1 == 1.0) but booleans are not numbers (true != 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


class JsonMatch(FieldMetric):
    """Fraction of the gold object's top-level keys whose values the output gets exactly right.

    The output may be wrapped in a ``` fence or have prose around the JSON; an output with no
    parseable JSON scores 0. A gold value that is not a JSON object scores all-or-nothing.
    """

    name = "json_match"

    def compare(self, gold: Any, predicted: Any) -> tuple[float, str]:
        gold_value = _parse_json(gold)
        if gold_value is _NOT_JSON:
            raise MetricFailure(f"json_match: the gold value is not valid JSON: {_clip(_as_text(gold))}")
        pred_value = _parse_json(predicted, "{" if isinstance(gold_value, dict) else "[")
        if pred_value is _NOT_JSON:
            shape = (
                f" (expected an object with keys {', '.join(gold_value)})"
                if isinstance(gold_value, dict)
                else ""
            )
            return 0.0, f"output is not valid JSON{shape}: {_clip(_as_text(predicted))}"
        if not isinstance(gold_value, dict):
            if _json_equal(gold_value, pred_value):
                return 1.0, "JSON matches"
            return (
                0.0,
                f"expected {_clip_json(gold_value, _FEEDBACK_CHARS)}, got {_clip_json(pred_value, _FEEDBACK_CHARS)}",
            )
        if not isinstance(pred_value, dict):
            return (
                0.0,
                f"expected a JSON object with keys {', '.join(gold_value)}, got {_clip_json(pred_value, _FEEDBACK_CHARS)}",
            )
        if not gold_value:
            return 1.0, "JSON object (the gold object is empty)"
        missing = [k for k in gold_value if k not in pred_value]
        wrong = [k for k in gold_value if k in pred_value and not _json_equal(gold_value[k], pred_value[k])]
        right = len(gold_value) - len(missing) - len(wrong)
        score = right / len(gold_value)
        if score == 1.0:
            return 1.0, f"all {len(gold_value)} keys match"
        parts = [f"{right}/{len(gold_value)} keys match"]
        if wrong:
            details = ", ".join(
                f"{k} (expected {_clip_json(gold_value[k])}, got {_clip_json(pred_value[k])})" for k in wrong
            )
            parts.append(f"wrong: {details}")
        if missing:
            parts.append(f"missing: {', '.join(missing)}")
        return score, "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# LLM judge
# ---------------------------------------------------------------------------------------------

DEFAULT_JUDGE_CRITERIA = """\
Grade the response on accuracy, helpfulness, clarity and completeness, judged together.
5 - Accurate (agrees with the reference answer when one is given), directly helpful, clear and complete.
4 - Accurate and helpful, with a minor omission or a small lapse in clarity.
3 - Partly accurate or partly complete: useful, but with a noticeable error or gap.
2 - Mostly inaccurate, unhelpful or unclear, with only a little of value.
1 - Wrong, off-task, empty or fabricated."""

_DATA_TAG = re.compile(r"</?data\b", re.IGNORECASE)


def as_data(text: str) -> str:
    """Wrap untrusted text (dataset rows, model outputs) in <data> tags for a judge or proposer.

    Tags inside the text are defanged so an output cannot close the block early and smuggle in
    instructions (SPEC §13).
    """
    return f"<data>\n{_DATA_TAG.sub(lambda m: m.group(0) + '_', text)}\n</data>"


def load_rubric(path: str | os.PathLike[str]) -> str:
    """Read a custom judge rubric file (`--judge-criteria FILE`); UsageError names the problem."""
    file = Path(path)
    if not file.exists():
        raise UsageError(f"judge criteria file not found: {file}")
    if not file.is_file():
        raise UsageError(f"judge criteria path is not a file: {file}")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read judge criteria file {file}: {exc}") from None
    if not text.strip():
        raise UsageError(f"judge criteria file is empty: {file}")
    return text.strip()


class JudgeMetric(Metric):
    """An LLM judge scoring 1-5 by a rubric, normalised to (s-1)/4; its reasoning is the feedback.

    The judge sees the task input, the reference answer (when the example has one) and the
    response, each delimited as data. An unparseable reply is asked again (`attempts` in all)
    with a fresh `rollout_id`, so the retry bypasses DSPy's response cache and is really sent;
    after the last attempt the example fails with `MetricFailure` instead of getting a made-up
    middle score. Provider errors (rate limits, timeouts, auth) propagate: the evaluator owns
    retrying those.

    `render_response(example, prediction) -> str` replaces how the response is shown, e.g. a whole
    pipeline execution trace instead of the final output fields.
    """

    name = "judge"

    def __init__(
        self,
        lm: dspy.BaseLM,
        criteria: str | None = None,
        *,
        attempts: int = 3,
        render_response: Callable[[dspy.Example, Any], str] | None = None,
    ):
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.lm = lm
        self.criteria = criteria.strip() if criteria and criteria.strip() else DEFAULT_JUDGE_CRITERIA
        self.attempts = attempts
        self.render_response = render_response
        self.predict = dspy.Predict(JudgeResponse)

    def judge_inputs(self, example: dspy.Example, prediction: Any) -> dict[str, str]:
        """The signature inputs for one example: the data to be judged, delimited."""
        labels = label_fields(example, prediction)
        if self.render_response is not None:
            response = self.render_response(example, prediction)
        else:
            # Show the answer fields the gold speaks about; all outputs when there is no gold to match.
            keys = prediction.keys() if hasattr(prediction, "keys") else []
            shown = {k: prediction[k] for k in labels if k in keys}
            if not shown or len(shown) < len(labels):
                shown = {k: prediction[k] for k in keys if k != RESERVED_ID_FIELD}
            response = _render_fields(shown) if shown else _as_text(prediction)
        return {
            "criteria": self.criteria,
            "task_input": as_data(_render_fields(input_fields(example, prediction))),
            "reference_answer": as_data(_render_fields(labels) if labels else ""),
            "response": as_data(response),
        }

    def evaluate(self, example: dspy.Example, prediction: Any, trace: Any = None) -> MetricResult:
        inputs = self.judge_inputs(example, prediction)
        problem = "no reply"
        for attempt in range(self.attempts):
            config = {"rollout_id": attempt} if attempt else {}
            try:
                # trace=None: the judge's call must not enter the program's trace, or DSPy's
                # bootstrapping (which calls the metric inside its trace context) would take the
                # judge for a step of the program.
                with dspy.context(lm=self.lm, adapter=dspy.JSONAdapter(), trace=None):
                    reply = self.predict(**inputs, config=config)
            except AdapterParseError as exc:
                problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                continue
            score = reply.get("score")
            if isinstance(score, int) and not isinstance(score, bool) and 1 <= score <= 5:
                normalised = (score - 1) / 4
                return MetricResult(
                    normalised, str(reply.get("reasoning") or "").strip() or None, {self.name: normalised}
                )
            problem = f"score {score!r} is not an integer from 1 to 5"
        raise MetricFailure(f"judge gave no parseable score after {self.attempts} attempts: {problem}")


# ---------------------------------------------------------------------------------------------
# Combination and lookup
# ---------------------------------------------------------------------------------------------


class CombinedMetric(Metric):
    """The mean of several metrics, each also reported alone in `by_metric`.

    If any part fails the example fails: a mean over whichever parts happened to work would not be
    comparable across examples.
    """

    def __init__(self, metrics: Sequence[Callable[..., Any]]):
        if not metrics:
            raise ValueError("CombinedMetric needs at least one metric")
        self.metrics = list(metrics)
        self.names = _unique([_metric_label(m) for m in self.metrics])
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
    return [_metric_label(metric)]
