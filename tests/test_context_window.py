"""A request over the task model's context window has no answer: scored 0 (not "failed" and left
out), said so, never retried and never paid twice; so a candidate whose demos overflow the
context on long inputs cannot win on the short inputs it does answer."""

from __future__ import annotations

import re

import dspy
import pytest
from conftest import routing_examples, truth
from dspy.lm15 import ContextLengthError
from fakes import fake_lm

from reflex_dspy import Reflex
from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.retries import classify_error, exceeds_context


def number(messages: list[dict]) -> int:
    return int(re.search(r"Customer (\d+)", messages[-1]["content"]).group(1))


def demos_overflow(system: str, messages: list[dict]) -> str:
    """Demos make every answer right, but with them odd-numbered customers' messages overflow the
    context; without demos only billing (and every third customer) is answered with the bare label."""
    label = truth(messages[-1]["content"])
    if len(messages) > 1:  # demos are earlier turns
        if number(messages) % 2:
            raise ContextLengthError("request (4242 tokens) exceeds the available context size (4096 tokens)",
                                     provider="fake")
        return label
    return label if label == "billing" or number(messages) % 3 == 0 else f"This is about {label}."


def test_a_demo_set_over_the_context_window_is_not_picked_for_the_inputs_it_answers():
    """Before: the demo set scored 1.000 on the val examples it answered, was picked, and its final
    test score was "1.0000 (on 18-sample test set, 8 failed and excluded)"."""
    task = fake_lm(demos_overflow)
    result = Reflex("exact", strategy="fewshot", task_lm=task, reasoning_lm=fake_lm(lambda s, m: "x"),
                    track=False, progress=False, max_metric_calls=300, train_ratio=0.5, val_ratio=0.25).compile(
        program_from_prompt("Say which team."), trainset=routing_examples(12)).result
    assert result.usage["too_long"] > 0 and result.usage["failed"] == 0
    assert result.selected_iteration == 0 and not result.candidate["predictors"]["predict"]["demos"]
    assert result.final.n_failed == 0 and result.final.n_too_long == 0
    assert any("longer than the task model's context window and scored 0" in w for w in result.warnings)


def test_the_users_prompt_over_the_context_scores_zero_once_and_says_so():
    def long_for_some(system: str, messages: list[dict]) -> str:
        if number(messages) % 2:
            raise ContextLengthError("exceeds the available context size", provider="fake")
        return truth(messages[-1]["content"])

    task = fake_lm(long_for_some)
    opt = Reflex("exact", strategy="iterative", task_lm=task, reasoning_lm=fake_lm(lambda s, m: "RAW:{"),
                 track=False, progress=False, max_iterations=1)
    result = opt.compile(program_from_prompt("Say which team."), trainset=routing_examples(8)).result
    base = result.baseline
    too_long = [s for s in base.samples if s["error"]]
    assert too_long and base.n_too_long == len(too_long) and base.n_failed == 0
    assert all(s["score"] == 0.0 and "ContextWindowExceededError" in s["error"] for s in too_long)
    assert base.mean == pytest.approx(sum(s["score"] for s in base.samples) / base.n)
    assert f"{len(too_long)} over the model's context window and scored 0" in base.describe()
    assert result.usage["retries"] == 0  # the same request can never fit: never asked again
    # Cached like any answer: no request is ever sent twice (the final test reuses the baseline's).
    asked = [(system, messages[-1]["content"]) for system, messages in task.fake_engine.requests]
    assert result.selected_iteration == 0 and len(asked) == len(set(asked))


@pytest.mark.parametrize("error", [
    ContextLengthError("too long", provider="llama.cpp"),
    dspy.ContextWindowExceededError(model="m", message="too long"),
    type("ContextWindowExceededError", (Exception,), {})("litellm's own"),
])
def test_every_kind_of_context_overflow_is_recognised_and_never_retried(error):
    wrapped = RuntimeError("the adapter failed")
    wrapped.__cause__ = error
    assert exceeds_context(error) and exceeds_context(wrapped)
    assert classify_error(wrapped) == "fatal"
    assert not exceeds_context(RuntimeError("context"))
