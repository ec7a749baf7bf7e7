"""The built-in metrics: exact, contains, rouge, bleu, json_match.

Each compares the gold label fields of an example with the same-named fields of the prediction
and also writes a short feedback line, because the optimizer shows feedback to a reasoning model
and "expected X, got Y" is far more useful to it than a bare 0.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from reflex_dspy.metrics.base import FEEDBACK_CHARS, FieldMetric, MetricFailure, as_text, clip, clip_json

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


def _same_number(gold: Any, predicted: Any) -> bool:
    """Equal as numbers where either side is one (a signature's `answer: float` gives 3.0 for a
    dataset's "3"); two strings stay strings ("007" is not "7")."""
    if not any(isinstance(v, int | float) and not isinstance(v, bool) for v in (gold, predicted)):
        return False
    try:
        return float(normalize_exact(as_text(gold))) == float(normalize_exact(as_text(predicted)))
    except ValueError:
        return False


class ExactMatch(FieldMetric):
    """1 if the output equals the gold after `normalize_exact`, else 0."""

    name = "exact"

    def compare(self, gold: Any, predicted: Any) -> tuple[float, str]:
        gold_text, pred_text = as_text(gold), as_text(predicted)
        if normalize_exact(gold_text) == normalize_exact(pred_text) or _same_number(gold, predicted):
            return 1.0, f"correct: {clip(pred_text)}"
        feedback = f"expected {clip(gold_text)}, got {clip(pred_text)}"
        if not pred_text.strip():
            feedback += " (empty output)"
        elif normalize_exact(gold_text) and normalize_exact(gold_text) in normalize_exact(pred_text):
            feedback += " (the answer is there, but with extra text)"
        return 0.0, feedback


class Contains(FieldMetric):
    """1 if the gold text occurs in the output (casefolded, whitespace collapsed), else 0."""

    name = "contains"

    def compare(self, gold: Any, predicted: Any) -> tuple[float, str]:
        gold_text, pred_text = as_text(gold), as_text(predicted)
        if _loose(gold_text) in _loose(pred_text):
            return 1.0, f"contains {clip(gold_text)}"
        return 0.0, f"expected the output to contain {clip(gold_text)}, got {clip(pred_text)}"


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
        gold_text, pred_text = as_text(gold), as_text(predicted)
        if not gold_text.strip() and not pred_text.strip():
            return 1.0, "both empty"
        score = float(_rouge_scorer().score(gold_text, pred_text)["rougeL"].fmeasure)
        if score >= 1.0:
            return 1.0, "matches the reference"
        feedback = f"ROUGE-L {score:.2f}: expected {clip(gold_text)}, got {clip(pred_text)}"
        return score, feedback + _length_note(gold_text, pred_text)


class Bleu(FieldMetric):
    """Sentence BLEU (sacrebleu defaults) against the gold text, scaled to [0, 1]."""

    name = "bleu"

    def compare(self, gold: Any, predicted: Any) -> tuple[float, str]:
        import sacrebleu

        gold_text, pred_text = as_text(gold), as_text(predicted)
        if not gold_text.strip() and not pred_text.strip():
            return 1.0, "both empty"
        score = min(1.0, max(0.0, sacrebleu.sentence_bleu(pred_text, [gold_text]).score / 100))
        if score >= 1.0:
            return 1.0, "matches the reference"
        feedback = f"BLEU {score:.2f}: expected {clip(gold_text)}, got {clip(pred_text)}"
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
    text = as_text(value).strip()
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
            raise MetricFailure(f"json_match: the gold value is not valid JSON: {clip(as_text(gold))}")
        pred_value = _parse_json(predicted, "{" if isinstance(gold_value, dict) else "[")
        if pred_value is _NOT_JSON:
            shape = (
                f" (expected an object with keys {', '.join(gold_value)})"
                if isinstance(gold_value, dict)
                else ""
            )
            return 0.0, f"output is not valid JSON{shape}: {clip(as_text(predicted))}"
        if not isinstance(gold_value, dict):
            if _json_equal(gold_value, pred_value):
                return 1.0, "JSON matches"
            return (
                0.0,
                f"expected {clip_json(gold_value, FEEDBACK_CHARS)}, got {clip_json(pred_value, FEEDBACK_CHARS)}",
            )
        if not isinstance(pred_value, dict):
            return (
                0.0,
                f"expected a JSON object with keys {', '.join(gold_value)}, got {clip_json(pred_value, FEEDBACK_CHARS)}",
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
                f"{k} (expected {clip_json(gold_value[k])}, got {clip_json(pred_value[k])})" for k in wrong
            )
            parts.append(f"wrong: {details}")
        if missing:
            parts.append(f"missing: {', '.join(missing)}")
        return score, "; ".join(parts)
