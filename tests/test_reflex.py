"""The run lifecycle and the iterative strategy, end to end on deterministic fake models."""

from __future__ import annotations

import re

import dspy
import pytest
from conftest import LABELS, ScriptedReasoner, routing_examples, routing_respond
from fakes import fake_lm

from reflex_dspy import Reflex
from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.errors import UsageError
from reflex_dspy.strategies import Iterative, list_strategies

INITIAL = "Say which team should handle the message."
GOOD = "Route the message. Answer with one word: billing, shipping or technical."
VERBOSE = "Be verbose. Explain which of billing, shipping, technical applies."


def run(proposals, *, examples=None, **kwargs):
    reasoner = ScriptedReasoner(proposals)
    task = fake_lm(routing_respond)
    opt = Reflex(
        "exact", strategy="iterative", task_lm=task, reasoning_lm=fake_lm(reasoner), max_workers=2, **kwargs
    )
    program = opt.compile(program_from_prompt(INITIAL), trainset=examples or routing_examples())
    return program, reasoner, task


def test_iterative_finds_the_better_prompt_and_returns_exactly_the_selected_one():
    program, _, task = run([GOOD], max_iterations=2, early_stopping_patience=0, score_threshold=1.0)
    result = program.result
    billing = sum(s["expected"]["output"] == "billing" for s in result.baseline.samples)
    assert result.baseline.mean == pytest.approx(billing / result.baseline.n)
    assert result.final.mean == 1.0
    assert result.selected_iteration == 1
    # The returned program, the best prompt and the recorded candidate are the same thing.
    assert program.predict.signature.instructions == GOOD == result.best_prompt
    assert result.candidate["predictors"]["predict"]["instructions"] == GOOD
    assert result.stop_reason.startswith("score threshold")
    # The program really answers with labels now.
    task.fake_engine.requests.clear()
    with dspy.context(lm=task):
        assert program(input="my invoice is wrong").output == "billing"
    assert task.fake_engine.requests[0][0] == GOOD


def test_causal_log_attributes_each_delta_to_its_own_change():
    program, reasoner, _ = run([VERBOSE, GOOD], max_iterations=2, early_stopping_patience=0, train_ratio=1.0,
                               val_ratio=0.0)
    first, second = program.result.iterations
    assert first.delta == pytest.approx(-1 / 3, abs=0.01)  # verbose hurt relative to the initial prompt
    # The hurtful change was not kept: the second proposal is measured against the initial prompt again.
    assert second.delta == pytest.approx(2 / 3, abs=0.01)
    # The log shown to the reasoning model for the second proposal names the first change and its verdict.
    assert "Iter 1 (score 0.0000, Δ-0.3333 — ✗ hurt): proposal 1" in reasoner.seen[1]
    assert "Rewrite history" not in reasoner.seen[0]
    assert "✗ hurt" in second.reasoning


def test_grounding_facts_reach_the_reasoner_and_repair_a_dropped_label_set():
    program, reasoner, _ = run(["Answer briefly with the team name."], max_iterations=1, train_ratio=1.0,
                               val_ratio=0.0)
    shown = reasoner.seen[0]
    # The exact label set, computed from the data, is stated to the reasoning model.
    line = next(x for x in shown.splitlines() if "always exactly one of:" in x)
    assert sorted(line.split("one of:")[1].strip(" .").split(", ")) == sorted(LABELS)
    record = program.result.iterations[0]
    assert record.details["repaired"] and all(label in record.system_prompt["predict"] for label in LABELS)
    assert record.score == 1.0


def test_selection_uses_val_never_test_and_keeps_initial_when_nothing_beats_it():
    program, _, _ = run([VERBOSE], max_iterations=2, early_stopping_patience=0)
    result = program.result
    assert result.selected_iteration == 0
    assert result.selected_by == "val"
    assert program.predict.signature.instructions == INITIAL
    assert result.final.mean == result.baseline.mean
    assert result.significance.p_value == 1.0 or result.significance.p_value is None


def test_early_stopping_counts_ties_as_no_improvement():
    program, _, _ = run([VERBOSE, VERBOSE + " Really.", VERBOSE + " Truly.", GOOD], max_iterations=6,
                        early_stopping_patience=2)
    result = program.result
    assert len(result.iterations) == 2
    assert result.early_stopped


def test_looping_truncated_reply_is_salvaged_not_adopted_verbatim():
    from reflex_dspy.proposals import salvage

    text, note = salvage("Answer with one label. Be brief. Be brief. Be brief. Be bri", truncated=True)
    assert text == "Answer with one label. Be brief."
    assert note == "dropped a truncated tail and 2 repeated sentences"
    assert salvage("Complete sentence.", truncated=False) == ("Complete sentence.", None)


def test_unparseable_proposals_are_rejected_never_adopted():
    # The initial prompt already states the labels, so no grounded fallback applies either.
    reasoner = ScriptedReasoner(["", "RAW:not json at all {", "RAW:"])
    opt = Reflex("exact", strategy="iterative", task_lm=fake_lm(routing_respond), reasoning_lm=fake_lm(reasoner), max_iterations=1,
                 train_ratio=1.0, val_ratio=0.0)
    program = opt.compile(program_from_prompt(GOOD), trainset=routing_examples())
    record = program.result.iterations[0]
    assert record.change_summary.startswith("no valid proposal")
    assert record.system_prompt["predict"] == GOOD
    assert len(reasoner.seen) == 3  # retried


def test_rejected_proposals_fall_back_to_stating_the_computed_label_set():
    parrot = "Customer 0: my delivery issue number 0 needs help (sh0), so route it"
    program, reasoner, _ = run(["", parrot, "RAW:{"], max_iterations=1, train_ratio=1.0, val_ratio=0.0)
    record = program.result.iterations[0]
    assert "copied example text" in record.details["rejected"]
    assert record.system_prompt["predict"].startswith(INITIAL)
    assert all(label in record.system_prompt["predict"] for label in LABELS)
    assert record.score == 1.0 and "proposals were rejected" in record.change_summary


def test_minibatches_are_seeded_and_full_eval_steps_mark_iterations():
    program, _, _ = run([GOOD], max_iterations=3, batch_size=4, full_eval_steps=2, early_stopping_patience=0,
                        score_threshold=1.0, val_ratio=0.0)
    records = program.result.iterations
    assert [r.batch_size for r in records][:1] == [4]
    assert all(r.is_full_eval == (r.iteration % 2 == 0) for r in records)


def test_budget_stops_the_search_at_the_metric_call_limit():
    program, _, _ = run([VERBOSE, GOOD], max_iterations=5, max_metric_calls=50, early_stopping_patience=0)
    result = program.result
    left = 50 - result.usage["search_calls"]  # none, or too few for the next evaluation: said, not "spent"
    assert result.stop_reason == "metric-call budget spent" if not left else re.fullmatch(
        rf"metric-call budget: {left} calls? left, too few for the next evaluation \(\d+ needed\)", result.stop_reason)
    assert 0 < result.usage["search_calls"] <= 50 and result.iterations  # a step fits, the next does not
    assert result.usage["metric_calls"] <= result.usage["search_calls"] + 2 * result.split_sizes["test"]


def test_summary_numbers_come_from_the_result():
    program, _, _ = run([GOOD], max_iterations=1)
    result = program.result
    text = result.summary()
    assert f"{result.baseline.mean:.4f}" in text and f"{result.final.mean:.4f}" in text
    assert "Train/val/test" in text and "Significance" in text
    assert program.trial_logs[1]["change_summary"] == "proposal 1"
    assert program.candidate_programs[0]["iteration"] == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"reasoning_lm": 123}, "reasoning_lm must be a dspy.LM or a model string, got int"),
    ({"task_lm": 5}, "task_lm must be a dspy.LM or a model string, got int"),
    ({"task_lm": {"a": "openai/x", "b": None}}, "task_lm['b'] must be a dspy.LM or a model string, got NoneType"),
    ({"task_lm": {}}, "task_lm is an empty dict"),
    ({"task_lm": "nosuch/model"}, "unknown provider 'nosuch'"),
])
def test_model_arguments_of_the_wrong_kind_are_one_line_errors(kwargs, message):
    """Before: an AttributeError ("'int' object has no attribute 'copy'") out of compile."""
    with pytest.raises(UsageError, match=re.escape(message)):
        Reflex("exact", **kwargs)


def test_a_task_model_may_be_a_model_string_as_the_reasoning_model_may():
    opt = Reflex("exact", task_lm="openai/gpt-4o-mini")
    assert opt.task_lm.model == "openai/gpt-4o-mini"
    several = Reflex("exact", task_lm={"mini": "openai/gpt-4o-mini", "fake": fake_lm(routing_respond)})
    assert several.task_lm["mini"].model == "openai/gpt-4o-mini"


def test_config_errors_name_the_field():
    with pytest.raises(UsageError, match="max_iterations"):
        Reflex("exact", max_iterations=0)
    with pytest.raises(UsageError, match="unknown strategy 'nope'.*iterative"):
        Reflex("exact", strategy="nope")
    with pytest.raises(UsageError, match="val_ratio"):
        Reflex("exact", train_ratio=0.5, val_ratio=0.6)


def test_strategy_is_a_teleprompter_usable_alone():
    reasoner = ScriptedReasoner([GOOD])
    strategy = Iterative(metric="exact", bottom_k=3)
    assert strategy.get_params()["bottom_k"] == 3
    with dspy.context(lm=fake_lm(routing_respond)):
        better = strategy.compile(
            program_from_prompt(INITIAL), trainset=routing_examples(4), reasoning_lm=fake_lm(reasoner),
            max_iterations=1,
        )
    assert better.predict.signature.instructions == GOOD
    assert "iterative" in list_strategies()


def routing_wants_a_verb(system: str, messages: list[dict]) -> str:
    """Like `routing_respond`, but the label set alone helps only billing: "Route" must be said too."""
    text = routing_respond(system, messages)
    return text if "route" in system.lower() or text == "billing" else f"This is about {text}."


def run_controlled(proposals, respond=routing_respond, train_ratio=1.0, val_ratio=0.0):
    """One iterative step with `grounded_control` on the routing fakes: (result, its first record)."""
    opt = Reflex("exact", strategy=Iterative(grounded_control=True), task_lm=fake_lm(respond),
                 reasoning_lm=fake_lm(ScriptedReasoner(proposals)), max_iterations=1, train_ratio=train_ratio,
                 val_ratio=val_ratio)
    result = opt.compile(program_from_prompt(INITIAL), trainset=routing_examples()).result
    return result, result.iterations[0]


@pytest.mark.parametrize(("proposal", "respond", "control_adopted"), [
    (VERBOSE, routing_respond, True), (GOOD, routing_respond, True), (GOOD, routing_wants_a_verb, False),
], ids=["hurt", "tie", "better"])
def test_grounded_control_keeps_a_rewrite_only_when_its_own_words_score(proposal, respond, control_adopted):
    """With `grounded_control` (auto's default), the rewrite meets the current instructions plus only
    the sentence the data states; the rewrite is adopted only when strictly better (a tie is the control's)."""
    _, record = run_controlled([proposal], respond)
    control = record.details["grounded_control"]
    assert control["adopted"] is control_adopted and control["fix"].startswith("Answer with exactly one of")
    if control_adopted:
        assert control["control_score"] == 1.0 >= control["rewrite_score"]
        assert record.system_prompt["predict"] == f"{INITIAL}\n\n{control['fix']}"
    else:
        assert control["rewrite_score"] == 1.0 > control["control_score"]
        assert record.system_prompt["predict"] == proposal
    assert record.score == 1.0 and ("did not earn their place" in record.reasoning) is control_adopted


def test_auto_turns_the_grounded_control_on_and_a_user_can_turn_it_off():
    from reflex_dspy.strategies.auto import Auto

    assert Auto()._params("iterative") == {"grounded_control": True}
    assert Auto(axis_params={"iterative": {"grounded_control": False}})._params("iterative") == {
        "grounded_control": False}


def test_with_a_validation_split_the_control_is_decided_there():
    """A probe's batch is a few train examples where rewrite and control mostly tie: with validation,
    the choice is made there (the kept one's val scores are those the run records anyway)."""
    result, record = run_controlled([GOOD], routing_wants_a_verb, train_ratio=0.5, val_ratio=0.25)
    control = record.details["grounded_control"]
    assert control["decided_on"] == "validation" and result.split_sizes["val"] >= 4
    assert control["rewrite_val"] == 1.0 > control["control_val"] and control["adopted"] is False
    assert record.system_prompt["predict"] == GOOD and record.val_score == 1.0
    assert "on validation" in record.reasoning


def test_the_control_is_not_scored_against_itself():
    """When every reply is refused, the fallback states the data's fact: it is the control itself,
    so nothing is compared and no control note is written (the README's main job takes this path)."""
    parrot = "Customer 0: my delivery issue number 0 needs help (sh0), so route it"
    _, record = run_controlled(["", parrot, "RAW:{"])
    assert "proposals were rejected" in record.change_summary and record.score == 1.0
    assert record.details["grounded_control"] is None and "Control:" not in record.reasoning


def test_a_metric_that_raises_stops_the_run_naming_the_example(tmp_path):
    """Not scored 0 and not skipped: a metric's own bug stops the run with a `MetricError` that
    names the example and its input (the metric's error is its cause), and the run record says so."""
    import json

    from reflex_dspy.errors import MetricError

    def picky(gold, pred, trace=None):
        if "number 3 " in gold.input:
            raise KeyError("unit")
        return float(gold.output == pred.output)

    opt = Reflex(picky, task_lm=fake_lm(routing_respond), reasoning_lm=fake_lm(ScriptedReasoner([GOOD])),
                 run_dir=tmp_path / "runs")
    with pytest.raises(MetricError) as caught:
        opt.compile(program_from_prompt(INITIAL), trainset=routing_examples())
    message = str(caught.value)
    assert message.startswith("the metric raised KeyError: 'unit' on example ")
    assert 'input="Customer 3: my ' in message and isinstance(caught.value.__cause__, KeyError)
    (failure,) = (tmp_path / "runs").glob("*/failure.json")
    assert json.loads(failure.read_text())["reason"] == message


def test_the_python_api_shows_progress_on_stderr_unless_told_not_to(capfd):
    """Like DSPy's own optimizers: a compile is not silent for minutes. stdout stays clean; a
    console tracker the user passes is not doubled; `progress=False` prints nothing."""
    from reflex_dspy.progress import ConsoleTracker

    def compile_once(**kwargs) -> str:
        opt = Reflex("exact", strategy="iterative", task_lm=fake_lm(routing_respond),
                     reasoning_lm=fake_lm(ScriptedReasoner([GOOD])), max_iterations=1, track=False, **kwargs)
        opt.compile(program_from_prompt(INITIAL), trainset=routing_examples())
        out, err = capfd.readouterr()
        assert out == ""
        return err

    err = compile_once()
    assert "Baseline on test: " in err and err.count("Iter 1 [") == 1 and "reflex iterative · task" in err
    assert compile_once(trackers=[ConsoleTracker()]).count("Iter 1 [") == 1
    assert compile_once(progress=False) == ""
