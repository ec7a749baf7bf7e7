"""The auto strategy: every axis probed, then the budget follows the measured gains; best candidate handed on."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from fakes import bangs_respond, bangs_splits, fake_lm, routing_examples
from strategy_kit import INITIAL, comparable, interrupted_then_resumed, routing_with_demos, run_strategy

import reflex_dspy.strategies as strategies
from reflex_dspy import Reflex
from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.candidate import Candidate
from reflex_dspy.strategies import SearchContext, Step, Strategy
from reflex_dspy.strategies.allocation import Allocator
from reflex_dspy.strategies.auto import Auto


def run_quiet(strategy, reasoner, **kwargs):
    """`run_strategy` with no run record (these tests read the result, not the record)."""
    return run_strategy(strategy, reasoner, track=False, **kwargs)


def reasoner_choosing(axis: str):
    """A stateless reasoning model: would pick `axis` if asked, and answers other meta-prompts with
    unusable rewrites (so the fallbacks stated from the data are what gets written)."""

    def respond(system: str, messages: list[dict]) -> str:
        prompt = system + messages[-1]["content"]
        if "available_axes" in prompt:
            return json.dumps({"reason": f"{axis} has not been tried", "axis": axis})
        if "restructured_instructions" in prompt:
            return json.dumps({"change_summary": "no new layout", "restructured_instructions": ""})
        return json.dumps({"failure_patterns": "-", "change_summary": "-", "revised_instructions": ""})

    return respond


def test_auto_probes_axes_in_order_and_hands_on_the_better_candidate(tmp_path):
    program = run_quiet(Auto(axes=["iterative", "fewshot"], state_facts=False), reasoner_choosing("structural"),
                           run_dir=tmp_path, max_iterations=6, train_ratio=1.0, val_ratio=0.0)
    result = program.result
    phases = [r.phase for r in result.iterations]
    assert phases[0] == "iterative"  # the probe order, not the reasoning model's "structural"
    assert {r.strategy for r in result.iterations} == {"auto"} and result.strategy == "auto"
    first = result.iterations[0]
    assert first.reasoning.startswith("[iterative phase 1] Phase 1 (probe): iterative")
    assert "probe 1 of 2: iterative has not been tried" in first.reasoning
    assert first.details["auto"]["kind"] == "probe"
    assert result.final.mean == 1.0


def test_the_data_s_facts_are_tried_on_their_own_before_the_probes(tmp_path):
    """The label set the instructions lack is the opening step, measured where phases are, so the
    first probe's axis is not credited with its gain; facts that do not score better are not kept."""
    examples = routing_examples(8)
    auto = Auto(axes=["iterative", "fewshot"])
    result = run_quiet(auto, reasoner_choosing("structural"), examples=examples, run_dir=tmp_path,
                       max_iterations=6, train_ratio=0.5, val_ratio=0.25).result
    opening = result.iterations[0]
    assert opening.phase == "facts" and opening.details["auto"]["kind"] == "opening"
    assert opening.details["facts"]["adopted"] and opening.details["facts"]["decided_on"] == "validation"
    assert "Answer with exactly one of these labels" in opening.candidate["predictors"]["predict"]["instructions"]
    assert auto.phases[0]["axis"] == "facts" and auto.phases[0]["gain"] > 0.3
    assert result.stop_reason.startswith("score threshold")  # the label set is this fake's whole lever

    # A fake that ignores the label set: the facts are scored, not kept, and the probes follow.
    auto = Auto(axes=["iterative", "fewshot"])
    result = run_quiet(auto, reasoner_choosing("structural"), respond=lambda s, m: "no idea", examples=examples,
                       run_dir=tmp_path / "ignored", max_iterations=4, train_ratio=0.5, val_ratio=0.25).result
    assert [r.phase for r in result.iterations][:2] == ["facts", "iterative"]
    assert not result.iterations[0].details["facts"]["adopted"] and auto.phases[0]["gain"] == 0.0
    probe = result.iterations[1]
    assert probe.reasoning.startswith("[iterative phase 2] Phase 2 (probe): iterative")
    assert "starting from iteration 0's candidate" in probe.reasoning  # the user's words, not the facts


# -- scripted axes: the phase logic in isolation ---------------------------------------------
BETTER = {"input": "Customer 0: my delivery issue.", "output": "shipping"}
EDITS = {
    "fewshot": lambda c: c.with_demos("predict", [BETTER]),  # 1/3 → 2/3
    "iterative": lambda c: c.with_instructions("predict", c.predictors["predict"].instructions + " Be verbose."),
    "structural": lambda c: c,  # no change at all
}


class Scripted(Strategy):
    """Applies EDITS[axis] to the candidate it was started from; records what it started from."""

    starts: list[tuple[str, Candidate]] = []

    def __init__(self, metric: Any = None) -> None:
        super().__init__(metric)
        self.current: Candidate | None = None

    def start(self, ctx: SearchContext, initial: Candidate) -> None:
        self.current = initial
        Scripted.starts.append((self.name, initial))

    def step(self, ctx: SearchContext, iteration: int, batch) -> Step:
        parent = ctx.evaluate(self.current, batch)
        candidate = EDITS[self.name](self.current)
        result = ctx.evaluate(candidate, batch)
        return Step(candidate, result, parent.mean, reasoning="scripted", change_summary=f"{self.name} edit")

    def state_dict(self) -> dict[str, Any]:
        return {"current": self.current.to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current = Candidate.from_dict(state["current"])


@pytest.fixture
def scripted_axes(monkeypatch):
    Scripted.starts = []
    for axis in EDITS:
        monkeypatch.setitem(strategies._REGISTRY, axis, type(f"Scripted_{axis}", (Scripted,), {"name": axis}))


def axes_in_order(*order: str):
    def respond(system: str, messages: list[dict]) -> str:
        done = messages[-1]["content"].count('"axis"')
        return json.dumps({"reason": "scripted", "axis": order[min(done, len(order) - 1)]})

    return respond


SCRIPTED = ["structural", "iterative", "fewshot"]


def test_a_regressing_phase_hands_on_the_best_candidate_so_far(scripted_axes, tmp_path):
    auto = Auto(axes=SCRIPTED, state_facts=False)  # probe order: iterative, fewshot, structural
    program = run_quiet(auto, axes_in_order("structural"), run_dir=tmp_path, max_iterations=3,
                           train_ratio=1.0, val_ratio=0.0, score_threshold=0.99)
    result = program.result
    assert [r.phase for r in result.iterations] == ["iterative", "fewshot", "structural"]
    assert [round(r.score, 3) for r in result.iterations] == [0.0, 0.667, 0.667]
    (_, first), (_, second), (_, third) = Scripted.starts
    assert second == first and third.predictors["predict"].demos  # not the verbose regression
    gains = [p["gain"] for p in auto.phases]
    # A phase's gain is what it added to the best candidate: a regression adds nothing (it is not handed on).
    assert gains[0] == pytest.approx(0.0) and gains[1] == pytest.approx(1 / 3, abs=1e-3)
    assert result.selected_iteration in (2, 3) and result.final.mean == pytest.approx(2 / 3)


@pytest.mark.parametrize("margin", [1, 0])
def test_a_rewrite_one_example_ahead_is_not_handed_on(scripted_axes, tmp_path, monkeypatch, margin):
    """The rewrite wins validation by one example: with the margin, the demo phase starts from the
    user's words (and the rewrite's phase gained nothing); without it, from the rewrite."""
    monkeypatch.setitem(EDITS, "iterative", lambda c: c.with_instructions(
        "predict", c.predictors["predict"].instructions + " !"))
    train, val = bangs_splits()
    auto = Auto(axes=["iterative", "fewshot"], state_facts=False, rewrite_margin=margin)
    opt = Reflex("exact", strategy=auto, task_lm=fake_lm(bangs_respond, name="fake/task"),
                 reasoning_lm=fake_lm(axes_in_order("fewshot"), name="fake/reasoner"), run_dir=tmp_path,
                 track=False, max_iterations=2, train_ratio=1.0, early_stopping_patience=0, score_threshold=1.0)
    result = opt.compile(program_from_prompt(INITIAL), trainset=train, valset=val).result
    assert [r.val_score for r in result.iterations] == [0.625, 0.5 if margin else 0.625]
    (_, iterative_start), (_, fewshot_start) = Scripted.starts
    assert (fewshot_start == iterative_start) is bool(margin)
    assert auto.phases[0]["gain"] == (0.0 if margin else 0.125)
    assert result.selected_iteration == (0 if margin else 1)


def test_the_budget_follows_the_measured_gain_after_the_probes(scripted_axes, tmp_path):
    """Probes first (every axis), then successive halving keeps the axis that gained: the reasoning
    model's wish ("iterative") decides nothing."""
    auto = Auto(axes=SCRIPTED, state_facts=False)
    program = run_quiet(auto, axes_in_order("iterative"), run_dir=tmp_path, max_iterations=12,
                           train_ratio=1.0, val_ratio=0.0, score_threshold=0.99)
    kinds = [(p["axis"], p["kind"]) for p in auto.phases]
    assert kinds[:3] == [("iterative", "probe"), ("fewshot", "probe"), ("structural", "probe")]
    assert kinds[3] == ("fewshot", "rung 1")  # the only axis whose probe gained
    assert "measured gains iterative +0.000, fewshot +0.333, structural +0.000" in auto.phases[3]["why"]
    records = program.result.iterations
    rung = next(r for r in records if r.details["auto"]["kind"] == "rung 1")
    assert "rung 1 of successive halving" in rung.reasoning and rung.details["auto"]["evidence"]["fewshot"] > 0
    assert program.result.stop_reason.startswith("strategy finished: auto converged: every axis probed")


def test_auto_never_converges_while_much_of_the_budget_is_left(scripted_axes, tmp_path, monkeypatch):
    tries = itertools.count(1)  # a new instruction every step, so every step pays; no axis ever gains
    for axis in SCRIPTED:
        monkeypatch.setitem(EDITS, axis, lambda c: c.with_instructions(
            "predict", c.predictors["predict"].instructions + f" Try {next(tries)}."))
    auto = Auto(axes=SCRIPTED, state_facts=False)
    program = run_quiet(auto, axes_in_order("fewshot"), examples=routing_examples(2), run_dir=tmp_path,
                           max_iterations=40, max_metric_calls=200, train_ratio=1.0, val_ratio=0.0,
                           score_threshold=0.99)
    result = program.result
    assert {p["axis"] for p in auto.phases} == set(SCRIPTED)
    spent = result.usage["search_calls"]
    converged = (f"strategy finished: auto converged: every axis probed, phase {len(auto.phases)} "
                 f"({auto.phases[-1]['axis']}) brought no gain and at most 20% of the budget is left")
    assert result.stop_reason in ("metric-call budget spent", converged)
    assert spent >= 0.8 * 200, spent


def test_the_allocator_reopens_the_best_arms_when_the_last_one_stops_gaining():
    alloc = Allocator(["iterative", "fewshot", "structural", "pdo"], total_calls=400, total_iterations=40)
    phases = []
    for axis, gain in [("iterative", 0.1), ("fewshot", 0.3), ("structural", 0.0), ("pdo", 0.05)]:
        plan = alloc.next_plan(phases, 400, 40)
        assert (plan.axis, plan.kind, plan.calls, plan.iterations) == (axis, "probe", 40, 4)
        phases.append({"axis": axis, "gain": gain})
    first = alloc.next_plan(phases, 240, 24)
    assert (first.axis, first.kind) == ("fewshot", "rung 1") and alloc.arms == ["fewshot", "iterative"]
    assert first.calls == 240 // 4  # two more rungs: 2 arms now, then 1
    phases.append({"axis": "fewshot", "gain": 0.2})
    assert alloc.next_plan(phases, 180, 18).axis == "iterative"
    phases.append({"axis": "iterative", "gain": 0.0})
    last = alloc.next_plan(phases, 120, 12)
    assert (last.axis, last.kind, last.calls) == ("fewshot", "rung 2", 120)  # the gainer alone, all that is left
    phases.append({"axis": "fewshot", "gain": 0.0})
    reopened = alloc.next_plan(phases, 30, 3)
    assert reopened.kind == "rung 3" and alloc.arms == ["fewshot", "iterative"]


def test_batching_settings_reach_every_phase(scripted_axes, tmp_path, monkeypatch):
    monkeypatch.setitem(EDITS, "fewshot", EDITS["iterative"])  # never reaches the threshold on a batch
    program = run_quiet(Auto(axes=["iterative", "fewshot"], state_facts=False), axes_in_order("iterative"), run_dir=tmp_path,
                           max_iterations=4, batch_size=6, train_ratio=1.0, val_ratio=0.0, score_threshold=0.99)
    records = program.result.iterations
    assert {r.phase for r in records} == {"fewshot", "iterative"}
    assert {r.batch_size for r in records} == {6}


def never_customer_0(system: str, messages: list[dict]) -> str:
    return "unsure" if "Customer 0:" in messages[-1]["content"] else routing_with_demos(system, messages)


@pytest.mark.parametrize(("axes", "split", "n", "at"), [
    (["iterative", "fewshot"], (1.0, 0.0), 4, 2),
    (["fewshot", "joint"], (0.75, 0.25), 6, 2),  # with validation: the demo phases score on it only
])
def test_auto_state_survives_a_resume_mid_phase(tmp_path, axes, split, n, at):
    reference, resumed = interrupted_then_resumed(
        lambda: Auto(axes=axes), reasoner_choosing("fewshot"), tmp_path, at=at, max_iterations=8,
        train_ratio=split[0], val_ratio=split[1], examples=routing_examples(n), respond=never_customer_0)
    assert len(reference.iterations) > at
    if split[1]:
        assert any(r.score is None and r.phase == "fewshot" for r in reference.iterations)
    assert comparable(reference) == comparable(resumed)


def test_invalid_auto_parameters_are_clear_errors():
    with pytest.raises(ValueError, match="min_phases"):
        Auto(min_phases=5, max_phases=4)
    with pytest.raises(ValueError, match="unknown axis 'gepa'"):
        Auto(axes=["gepa"])
    with pytest.raises(ValueError, match="probe_fraction"):
        Auto(probe_fraction=1.5)


def test_early_stopping_patience_counts_within_a_phase(scripted_axes, tmp_path):
    auto = Auto(axes=SCRIPTED, start_structural=True, state_facts=False)
    program = run_quiet(auto, axes_in_order("structural"), run_dir=tmp_path, max_iterations=15,
                           early_stopping_patience=3)
    # Flat or worse iterations across phases would end a single-strategy run; each phase gets its turn.
    result = program.result
    assert [r.phase for r in result.iterations][:5] == ["structural"] * 2 + ["iterative"] * 2 + ["fewshot"]
    assert not result.stop_reason.startswith("early stopping")


def test_a_stalled_phase_ends_and_the_next_axis_gets_its_turn(scripted_axes, tmp_path):
    """Patience spent inside a phase ends that phase, not the run: a flat structural opening used to
    stop auto before any other axis ran (bench: auto gained nothing on all three quality tasks)."""
    auto = Auto(axes=["structural", "fewshot"], start_structural=True, state_facts=False)
    program = run_quiet(auto, axes_in_order("fewshot"), run_dir=tmp_path, max_iterations=20,
                           early_stopping_patience=2, score_threshold=0.99)
    result = program.result
    phases = [r.phase for r in result.iterations]
    assert phases[:2] == ["structural", "structural"]  # 2 flat iterations of a 4-iteration probe
    assert "fewshot" in phases
    assert auto.phases[0]["axis"] == "structural" and auto.phases[0]["iterations"] == 2
    assert result.final.mean > result.baseline.mean


def test_probes_at_a_small_budget_run_on_the_part_of_the_batch_they_afford(scripted_axes, tmp_path):
    """At 64 metric calls one structural round (4 layouts on the whole batch) used to spend 56 of
    them, so auto was structural alone (bench: no gain on any quality task); five full-batch probes
    would spend any small budget before the gains could steer it."""
    auto = Auto(axes=SCRIPTED, start_structural=True, state_facts=False)
    program = run_quiet(auto, axes_in_order("iterative"), examples=routing_examples(8), run_dir=tmp_path,
                        max_iterations=40, max_metric_calls=64, train_ratio=1.0, val_ratio=0.0,
                        score_threshold=0.99)
    records = program.result.iterations
    first = records[0]
    # 64 * 0.4 / 3 = 8 calls per probe: structural scores 5 candidates per example, so the minimum of 4
    assert first.phase == "structural" and first.details["auto"]["probe_batch"] == 4
    assert "this probe runs, and its gain is measured, on 4 of the 24 batch examples" in first.reasoning
    iterative = next(r for r in records if r.phase == "iterative")
    assert iterative.details["auto"]["probe_batch"] == 4  # 8 calls / 2 candidates per example
    assert [p["axis"] for p in auto.phases][:3] == ["structural", "iterative", "fewshot"]
    assert all(p["scored_on"] <= 4 for p in auto.phases[:3])
    assert program.result.usage["search_calls"] <= 64
    # A rung's arm keeps to its share too (a full-batch step would leave the arms after it nothing):
    # a share below a whole batch's step runs on the part of the batch it affords.
    rungs = [r.details["auto"] for r in records if r.phase == "iterative" and r.details["auto"]["kind"] != "probe"]
    assert any(info["probe_batch"] for info in rungs), rungs
    for info in rungs:
        affordable = max(info["share_calls"] // 2, 4)
        assert info["probe_batch"] == (affordable if affordable < 24 else None), info


def test_auto_does_not_converge_before_every_arm_of_the_running_rung_had_its_turn():
    """Measured on the bench (web_of_lies, seed 0): rung 1 held iterative and fewshot (both gained in
    their probes); iterative's turn gained nothing with 19% of the budget left, and auto stopped as
    converged before fewshot's turn. A rung's arms all run before auto may converge."""
    from types import SimpleNamespace

    auto = Auto()
    auto.s.alloc = Allocator(list(auto.probe_order()), total_calls=150, total_iterations=50)
    phases = [{"axis": a, "kind": "probe", "gain": g, "metric_calls": 12}
              for a, g in [("iterative", 0.375), ("fewshot", 0.125), ("joint", 0.0), ("structural", 0.0), ("pdo", 0.0)]]
    auto.s.phases = phases
    plan = auto.s.alloc.next_plan(phases, 62, 40)
    assert (plan.axis, plan.kind, auto.s.alloc.queue) == ("iterative", "rung 1", ["fewshot"])
    auto.s.phases = [*phases, {"axis": "iterative", "kind": "rung 1", "gain": 0.0, "metric_calls": 34}]
    ctx = SimpleNamespace(budget_left=28, config=SimpleNamespace(max_iterations=50))
    assert auto._finish_reason(ctx, iteration=12) is None  # fewshot's turn is still to come
    assert auto.s.alloc.next_plan(auto.s.phases, 28, 38).axis == "fewshot"
    auto.s.phases.append({"axis": "fewshot", "kind": "rung 1", "gain": 0.0, "metric_calls": 14})
    assert "converged" in auto._finish_reason(SimpleNamespace(budget_left=14, config=ctx.config), iteration=14)
