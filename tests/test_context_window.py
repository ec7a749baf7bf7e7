"""Where a candidate has no answer (its request is over the task model's context window, or the
adapter cannot read the model's reply) the example scores 0, not "failed" and left out: said so,
never retried, never paid twice. So a candidate whose demos overflow the context on long inputs,
or whose instructions make half the replies unreadable, cannot win on the inputs it does answer."""

from __future__ import annotations

import re

import dspy
import pytest
from conftest import routing_examples, truth
from dspy.lm15 import ContextLengthError
from fakes import fake_lm

from reflex_dspy import Reflex
from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.errors import ReflexError
from reflex_dspy.retries import classify_error, no_answer


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
    assert result.final.n_failed == 0 and result.final.no_answers == {}
    assert any(w.startswith(f"{result.usage['too_long']} answers scored 0: the request was longer than the task "
                            "model's context window") for w in result.warnings)


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
    assert too_long and base.no_answers == {"too_long": len(too_long)} and base.n_failed == 0
    assert all(s["score"] == 0.0 and "ContextWindowExceededError" in s["error"] for s in too_long)
    assert base.mean == pytest.approx(sum(s["score"] for s in base.samples) / base.n)
    assert f"{len(too_long)} over the model's context window and scored 0" in base.describe()
    assert result.usage["retries"] == 0  # the same request can never fit: never asked again
    # Cached like any answer: no request is ever sent twice (the final test reuses the baseline's).
    asked = [(system, messages[-1]["content"]) for system, messages in task.fake_engine.requests]
    assert result.selected_iteration == 0 and len(asked) == len(set(asked))


def test_a_rewrite_that_makes_replies_unreadable_is_scored_on_all_of_them(tmp_path):
    """Before: "Final score : 1.0000 (on 18-sample test set, 8 failed and excluded)", "Improvement
    +0.7222 (+260.0%)", "significant": the rewrite's replies for odd customers had no field markers.
    It is still picked (5 of 9 on validation against 3), but its numbers are now what it scores,
    and the dashboard says so beside them as the summary does."""
    from conftest import ScriptedReasoner

    from reflex_dspy.dashboard.api import DashboardData

    def respond(system: str, messages: list[dict]) -> str:
        label = truth(messages[-1]["content"])
        if "tersely" in system:
            return f"[[ ## output ## ]]\n{label}\n\n[[ ## completed ## ]]" if number(messages) % 2 == 0 else "I cannot say"
        return f"[[ ## output ## ]]\n{label if label == 'billing' else 'unsure'}\n\n[[ ## completed ## ]]"

    result = Reflex("exact", strategy="iterative", task_lm=fake_lm(respond),
                    reasoning_lm=fake_lm(ScriptedReasoner(["Answer tersely."])), run_dir=tmp_path, mlflow=False,
                    progress=False, max_iterations=1, train_ratio=0.5, val_ratio=0.25).compile(
        dspy.Predict("input -> output"), trainset=routing_examples(12)).result
    (record,) = result.iterations
    assert record.val_score == pytest.approx(5 / 9)  # the unreadable odd ones count 0 now: 5 of 9
    final, samples = result.final, result.final.samples
    unreadable = [s for s in samples if s["error"]]
    assert unreadable and all("AdapterParseError" in s["error"] and s["score"] == 0.0 for s in unreadable)
    assert final.n_failed == 0 and final.no_answers == {"unreadable": len(unreadable)}
    assert final.mean == pytest.approx(sum(s["score"] for s in samples) / final.n) and final.mean < 1.0
    assert f"{len(unreadable)} unreadable replies and scored 0" in final.describe()
    assert result.improvement < 0.5 and not result.significance.significant
    assert result.usage["unreadable"] > 0 and result.usage["failed"] == 0
    assert any("could not be read as the program's output fields" in w for w in result.warnings)
    shown = DashboardData(tmp_path).run_view("001")["result"]["final"]
    assert shown["mean"] == pytest.approx(final.mean) and shown["n"] == final.n
    assert shown["caveats"] == [f"{len(unreadable)} unreadable replies and scored 0"]


@pytest.mark.parametrize(("error", "kind"), [
    (ContextLengthError("too long", provider="llama.cpp"), "too_long"),
    (dspy.ContextWindowExceededError(model="m", message="too long"), "too_long"),
    (type("ContextWindowExceededError", (Exception,), {})("litellm's own"), "too_long"),
    (dspy.utils.exceptions.AdapterParseError("ChatAdapter", dspy.Signature, "I cannot say"), "unreadable"),
])
def test_every_kind_of_no_answer_is_recognised_and_never_retried(error, kind):
    wrapped = RuntimeError("the adapter failed")
    wrapped.__cause__ = error
    assert no_answer(error) == kind and no_answer(wrapped) == kind
    assert classify_error(wrapped) == "fatal"
    assert no_answer(RuntimeError("context")) is None


def test_a_program_with_no_usable_answer_at_all_stops_at_the_baseline():
    """Every reply unreadable (a model that ignores the adapter's field markers) is a setup problem,
    as every example failing is: the run stops at the baseline, before any reasoning call."""
    reasoner = fake_lm(lambda system, messages: "x")
    opt = Reflex("exact", strategy="iterative", task_lm=fake_lm(lambda system, messages: "billing"),
                 reasoning_lm=reasoner, track=False, progress=False, max_iterations=1)
    with pytest.raises(ReflexError, match=r"^no test example got a usable answer \(.*\); first error: "
                                          r"AdapterParseError"):
        opt.compile(dspy.Predict("input -> output"), trainset=routing_examples(4))
    assert reasoner.fake_engine.calls == 0
