"""The joint strategy: instruction candidates x demo sets, searched by Optuna's TPE under the one
evaluator and budget; no demo scored on its own example; a resumed run makes the same choices."""

from __future__ import annotations

import json

import pytest
from fakes import LABELS, fake_lm, routing_examples, truth
from strategy_kit import comparable, demo_labels, interrupted_then_resumed, run_strategy

from reflex_dspy import Reflex
from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.strategies import get_strategy
from reflex_dspy.strategies.joint import Joint


def labels_listing_reasoner(system: str, messages: list[dict]) -> str:
    """Proposes instructions that list the labels (the shown failures differ, so proposals differ)."""
    shown = len(messages[-1]["content"])
    return json.dumps({"failure_patterns": "-", "change_summary": "listed the labels",
                       "revised_instructions": f"Route the message ({shown} characters seen). Answer with one of: "
                                               f"{', '.join(LABELS)}."})


def refuses(system: str, messages: list[dict]) -> str:
    return json.dumps({"failure_patterns": "-", "change_summary": "-", "revised_instructions": ""})


def needs_both(system: str, messages: list[dict]) -> str:
    """Right only with the labels in the instructions AND a demo of the message's label."""
    label = truth(messages[-1]["content"])
    listed = all(lbl in system.lower() for lbl in LABELS)
    return label if listed and label in demo_labels(messages) else f"This is about {label}."


def test_joint_finds_the_pair_that_neither_axis_alone_finds():
    result = run_strategy(Joint(), labels_listing_reasoner, respond=needs_both, examples=routing_examples(6),
                          track=False, max_iterations=12, train_ratio=1.0, val_ratio=0.0,
                          score_threshold=1.0).result
    assert result.baseline.mean == 0.0 and result.final.mean == 1.0
    best = result.iterations[result.selected_iteration - 1]
    assert best.details["demos"] > 0 and best.details["params"]["instruction:predict"] > 0
    first = result.iterations[0]
    assert "search space: 4 instructions, 8 demo sets" in first.reasoning
    assert first.details["sampler"].startswith("TPE")
    assert all(r.phase == r.strategy == "joint" for r in result.iterations)


def test_no_demo_is_scored_on_its_own_example():
    asked: list[list[dict]] = []

    def recording(system: str, messages: list[dict]) -> str:
        asked.append(messages)
        return needs_both(system, messages)

    # A held-out split, as a user has: the final measurement is then not on the train set the demos come from.
    run_strategy(Joint(), labels_listing_reasoner, respond=recording, examples=routing_examples(10), track=False,
                 max_iterations=6, train_ratio=0.6, val_ratio=0.2, score_threshold=1.0)
    with_demos = [m for m in asked if len(m) > 1]
    assert with_demos, "no prompt carried demos"
    for messages in with_demos:
        shown = {m["content"] for m in messages[:-1] if m["role"] == "user"}
        assert messages[-1]["content"] not in shown


def test_the_search_ends_when_every_pair_was_tried():
    result = run_strategy(Joint(num_instructions=1, num_demo_sets=2), refuses, track=False, max_iterations=6,
                          train_ratio=1.0, val_ratio=0.0, score_threshold=1.0).result
    assert len(result.iterations) == 3  # two pairs, then the step that finds none left
    assert result.stop_reason == "strategy finished: every instruction x demo-set pair was tried"


def test_with_score_on_val_trials_are_scored_there_and_use_whole_sets():
    """With `score_on_val` each trial is scored on validation (the lifecycle's own score of it, so
    no call on the batch), and the demo sets are not capped to leave batch examples to score on."""
    result = run_strategy(Joint(score_on_val=True), labels_listing_reasoner, respond=needs_both,
                          examples=routing_examples(8), track=False, max_iterations=8, train_ratio=0.75,
                          val_ratio=0.25, score_threshold=1.0, max_workers=1).result
    trials = [r for r in result.iterations if "trial_on_val" in r.details]
    assert len(trials) == len(result.iterations) >= 2
    for r in trials:
        assert r.score is None and r.details["scored_on"] == 0 and r.val_score == r.details["trial_on_val"]
    assert any(r.details["demos"] > 12 // 3 for r in trials)  # a batch-scored set is capped at a third
    assert result.baseline.mean == 0.0 and result.final.mean > 0.5


def test_demo_sets_fit_the_task_models_stated_context():
    """Uncapped by the batch (`score_on_val`), a set is still capped by what fits 60% of a stated
    context: on the bench 16 facility e-mails overflowed the embedded model and every answer failed."""
    import dspy

    padding = " It has been like this for weeks and nobody has answered my earlier letters." * 6
    examples = [dspy.Example(input=ex.input + padding, output=ex.output).with_inputs("input")
                for ex in routing_examples(8)]
    task = fake_lm(needs_both)
    task.fake_engine.n_ctx = 1200
    opt = Reflex("exact", strategy=Joint(score_on_val=True), task_lm=task, reasoning_lm=fake_lm(labels_listing_reasoner),
                 max_iterations=6, train_ratio=0.75, val_ratio=0.25, early_stopping_patience=0, score_threshold=1.0)
    result = opt.compile(program_from_prompt("Route it."), trainset=examples).result
    demo_chars = len(json.dumps({"input": examples[0].input, "output": "shipping"}))
    fit = int(1200 * 0.6 / (demo_chars / 3))
    sizes = [r.details["demos"] for r in result.iterations if "demos" in r.details]
    assert sizes and max(sizes) <= fit < 16, (sizes, fit)


def never_customer_0(system: str, messages: list[dict]) -> str:
    """`needs_both`, but Customer 0 is never answered right: the run cannot stop at the threshold."""
    return "unsure" if "Customer 0:" in messages[-1]["content"] else needs_both(system, messages)


def test_joint_state_survives_an_interruption(tmp_path):
    reference, resumed = interrupted_then_resumed(
        lambda: Joint(), labels_listing_reasoner, tmp_path, at=2, max_iterations=5, train_ratio=1.0,
        val_ratio=0.0, respond=never_customer_0, examples=routing_examples(6), score_threshold=1.0)
    assert len(reference.iterations) >= 3
    assert comparable(reference) == comparable(resumed)


def test_parameters_are_checked_and_registered():
    assert get_strategy("joint", num_demo_sets=3).get_params()["num_demo_sets"] == 3
    with pytest.raises(ValueError, match="at least 1"):
        Joint(max_demos=0)
