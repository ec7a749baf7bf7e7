"""The LLM judge: a 1-5 rubric score, normalised to (s-1)/4, for tasks without an exact answer.

The judge sees the task input, the reference answer (when there is one) and the response, each
delimited as data so that text in them cannot instruct it. An unparseable reply is asked again
with a new `rollout_id` and, if it never parses, the example is recorded as failed
(`MetricFailure`): a broken judge must never look like a middling answer.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError

from reflex_dspy.data import read_text_file
from reflex_dspy.errors import UsageError
from reflex_dspy.metrics.base import (
    RESERVED_ID_FIELD,
    Metric,
    MetricFailure,
    MetricResult,
    as_text,
    input_fields,
    label_fields,
    render_fields,
)
from reflex_dspy.signatures import JudgeResponse
from reflex_dspy.trace import as_data, current_trace

# The judge re-asks with a fresh `rollout_id` (a new cache key) rather than a higher temperature,
# so that a retry is a true re-ask yet a later replay of the same run hits the cache. DSPy warns
# that rollout_id does not change *sampling* at temperature 0; for us it is only a cache key.
warnings.filterwarnings("ignore", message="rollout_id has no effect when temperature=0")


DEFAULT_JUDGE_CRITERIA = """\
Grade the response on accuracy, helpfulness, clarity and completeness, judged together.
5 - Accurate (agrees with the reference answer when one is given), directly helpful, clear and complete.
4 - Accurate and helpful, with a minor omission or a small lapse in clarity.
3 - Partly accurate or partly complete: useful, but with a noticeable error or gap.
2 - Mostly inaccurate, unhelpful or unclear, with only a little of value.
1 - Wrong, off-task, empty or fabricated."""

TRACE_NOTE = (
    "The full execution trace of the pipeline that produced this response follows, step by step in "
    "order: every step's inputs and outputs and every tool call with its arguments and result. Steps "
    "marked [optimize] are the ones whose prompt is being optimized; [context] steps are fixed parts of "
    "the pipeline."
)


def load_rubric(path: str | os.PathLike[str]) -> str:
    """Read a custom judge rubric file (`--judge-criteria FILE`); UsageError names the problem."""
    file = Path(path)
    text = read_text_file(file, "judge criteria")
    if not text.strip():
        raise UsageError(f"{file}: judge criteria file is empty")
    return text.strip()


class JudgeMetric(Metric):
    """An LLM judge scoring 1-5 by a rubric, normalised to (s-1)/4; its reasoning is the feedback.

    The judge sees the task input, the reference answer (when the example has one) and the
    response, each delimited as data. An unparseable reply is asked again (`attempts` in all)
    with a fresh `rollout_id`, so the retry bypasses DSPy's response cache and is really sent;
    after the last attempt the example fails with `MetricFailure` instead of getting a made-up
    middle score. Provider errors (rate limits, timeouts, auth) propagate: the evaluator owns
    retrying those.

    `render_response(example, prediction) -> str` replaces how the response is shown.

    Pipeline mode: when the evaluator provides the example's execution trace (`current_trace()`)
    and it has more than one step or any tool call, the rendered trace follows the response, so
    a rubric can judge how the answer was reached (e.g. penalise an answer that ignored a tool).
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
            response = render_fields(shown) if shown else as_text(prediction)
        response = as_data(response)
        trace = current_trace()
        if trace is not None and trace.is_pipeline:
            response = f"{response}\n\n{TRACE_NOTE}\n{trace.render()}"
        return {
            "criteria": self.criteria,
            "task_input": as_data(render_fields(input_fields(example, prediction))),
            "reference_answer": as_data(render_fields(labels) if labels else ""),
            "response": response,
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
