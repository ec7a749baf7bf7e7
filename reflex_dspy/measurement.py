"""A measurement on a reporting split: `eval_runs` passes of one candidate, outside the search
budget, folded into the `Measurement` that result.json, the trackers and significance read.

Apart from the lifecycle because it is a calculation over evaluator results, not a step of the
run; the lifecycle only says what to measure and when.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import dspy

from reflex_dspy.candidate import Candidate
from reflex_dspy.data import example_id
from reflex_dspy.errors import ReflexError
from reflex_dspy.eval_requests import Group
from reflex_dspy.evaluation import EvalResult, Evaluator
from reflex_dspy.metrics import label_fields
from reflex_dspy.result import Measurement
from reflex_dspy.stats import mean_std


def measure(evaluator: Evaluator, candidate: Candidate, what: str, split: str, examples: list[dspy.Example],
            eval_runs: int, alongside: tuple[Group, str] | None = None, beside: Callable[[], Any] | None = None
            ) -> tuple[Measurement, list[EvalResult] | None]:
    """`eval_runs` passes of `what` (baseline, final) on `split`; `alongside` is one more evaluation
    (and its progress label) run with the first pass, in the same worker pool (the initial
    candidate on val with the baseline: neither then waits for the other's last, partly filled
    wave); `beside` is work done while the first pass runs (`Evaluator.evaluate_groups`).
    Returns the measurement and the `alongside` results (None without it)."""
    passes: list[EvalResult] = []
    extra = None
    for p in range(eval_runs):
        group = Group([(candidate, examples)], budgeted=False, eval_pass=p)
        label = f"{what} on {split}, pass {p + 1}"
        first = beside if p == 0 else None
        if p == 0 and alongside is not None:
            ours, extra = evaluator.evaluate_groups([group, alongside[0]], label=f"{label} + {alongside[1]}",
                                                    beside=first)
        else:
            ours = evaluator.evaluate_groups([group], label=label, beside=first)[0]
        passes.append(ours[0])
    return _fold(passes, split, examples), extra


def _fold(passes: Sequence[EvalResult], split: str, examples: list[dspy.Example]) -> Measurement:
    """Per-example means over the passes, the mean's spread across passes, the first pass's samples."""
    per_example: dict[str, list[float]] = {}
    per_model: dict[str, list[float]] = {}
    for result in passes:
        for eid, score in result.scores.items():
            per_example.setdefault(eid, []).append(score)
        for label, score in result.by_model.items():
            per_model.setdefault(label, []).append(score)
    scores = {eid: sum(v) / len(v) for eid, v in per_example.items()}
    means = [r.mean for r in passes if r.mean is not None]
    mean, std = mean_std(means) if means else (None, 0.0)
    first = passes[0]
    if first.n_failed == first.n:
        raise ReflexError(f"every {split} example failed; first error: {first.results[first.failed_ids[0]].error}")
    if all(r.failed or r.no_answer for r in first.results.values()):  # a setup problem, not a prompt to improve
        error = next(r.error for r in first.results.values() if r.no_answer)
        raise ReflexError(f"no {split} example got a usable answer (the adapter, the model or its context "
                          f"window do not fit the program); first error: {error}")
    by_id = {example_id(ex): ex for ex in examples}
    samples = [{
        "id": eid,
        "inputs": {k: str(v) for k, v in by_id[eid].inputs().items()},
        "expected": {k: str(v) for k, v in label_fields(by_id[eid]).items()},
        "output": r.output,
        "score": r.score,
        "error": r.error,
    } for eid, r in first.results.items()]
    return Measurement(split, mean, std, len(passes), first.n, first.n_failed, scores, first.by_metric, samples,
                       scores_by_model={k: sum(v) / len(v) for k, v in per_model.items()}, no_answers=first.no_answers)
