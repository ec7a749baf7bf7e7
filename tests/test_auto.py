"""The auto strategy: phases along axes chosen from the phase history, best candidate handed on."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from fakes import routing_examples
from strategy_kit import comparable, interrupted_then_resumed, run_strategy

import reflex_dspy.strategies as strategies
from reflex_dspy.candidate import Candidate
from reflex_dspy.strategies import SearchContext, Step, Strategy
from reflex_dspy.strategies.auto import Auto


def reasoner_choosing(axis: str):
    """A stateless reasoning model: picks `axis`, and answers other meta-prompts sensibly."""

    def respond(system: str, messages: list[dict]) -> str:
        prompt = system + messages[-1]["content"]
        if "available_axes" in prompt:
            return json.dumps({"reason": f"{axis} has not been tried", "axis": axis})
        if "restructured_instructions" in prompt:
            return json.dumps({"change_summary": "no new layout", "restructured_instructions": ""})
        return json.dumps({"failure_patterns": "-", "change_summary": "-", "revised_instructions": ""})

    return respond


def test_auto_opens_structural_then_follows_the_reasoning_models_choice_to_the_better_candidate(tmp_path):
    program = run_strategy(Auto(max_phases=3), reasoner_choosing("fewshot"), run_dir=tmp_path, max_iterations=6,
                           train_ratio=1.0, val_ratio=0.0)
    result = program.result
    phases = [r.phase for r in result.iterations]
    assert phases[0] == "structural" and "fewshot" in phases
    assert {r.strategy for r in result.iterations} == {"auto"} and result.strategy == "auto"
    first_fewshot = next(r for r in result.iterations if r.phase == "fewshot")
    assert "chosen by the reasoning model: fewshot has not been tried" in first_fewshot.reasoning
    assert first_fewshot.reasoning.startswith("[fewshot phase 2] Phase 2: fewshot")
    assert result.final.mean == 1.0
    demos = result.candidate["predictors"]["predict"]["demos"]
    assert {d["output"] for d in demos} >= {"shipping", "technical"}


def test_an_unusable_axis_choice_falls_back_to_the_deterministic_rule(tmp_path):
    program = run_strategy(Auto(start_structural=False, max_phases=2, axes=["iterative", "fewshot"]),
                           reasoner_choosing("banana"), run_dir=tmp_path, max_iterations=4,
                           train_ratio=1.0, val_ratio=0.0)
    records = program.result.iterations
    assert records[0].phase == "iterative"  # the rule's first untried axis
    assert "deterministic rule (the reasoning model's choice was refused: axis 'banana'" in records[0].reasoning


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


def test_a_regressing_phase_hands_on_the_best_candidate_so_far(scripted_axes, tmp_path):
    auto = Auto(start_structural=False, max_phases=3, min_phases=3)
    program = run_strategy(auto, axes_in_order("fewshot", "iterative", "structural"), run_dir=tmp_path,
                           max_iterations=3, train_ratio=1.0, val_ratio=0.0, score_threshold=0.99)
    result = program.result
    assert [r.phase for r in result.iterations] == ["fewshot", "iterative", "structural"]
    assert [round(r.score, 3) for r in result.iterations] == [0.667, 0.0, 0.667]
    (_, first), (_, second), (_, third) = Scripted.starts
    assert second.predictors["predict"].demos and third == second  # not the verbose regression
    gains = [p["gain"] for p in auto.phases]
    assert gains[0] == pytest.approx(1 / 3, abs=1e-3) and gains[1] == pytest.approx(0.0)
    assert result.selected_iteration in (1, 3) and result.final.mean == pytest.approx(2 / 3)


def test_auto_stops_once_min_phases_ran_and_a_phase_brought_no_gain(scripted_axes, tmp_path):
    program = run_strategy(Auto(start_structural=True, max_phases=4, min_phases=1), axes_in_order("fewshot"),
                           run_dir=tmp_path, max_iterations=8, train_ratio=1.0, val_ratio=0.0)
    result = program.result
    assert [r.phase for r in result.iterations] == ["structural", "structural"]  # 8 // 4 = 2 per phase
    assert result.stop_reason == "strategy finished: auto converged: phase 1 (structural) brought no gain"


def test_batching_settings_reach_every_phase(scripted_axes, tmp_path, monkeypatch):
    monkeypatch.setitem(EDITS, "fewshot", EDITS["iterative"])  # never reaches the threshold on a batch
    program = run_strategy(Auto(start_structural=False, max_phases=2, min_phases=2), axes_in_order("fewshot",
                           "iterative"), run_dir=tmp_path, max_iterations=4, batch_size=6, train_ratio=1.0,
                           val_ratio=0.0, score_threshold=0.99)
    records = program.result.iterations
    assert {r.phase for r in records} == {"fewshot", "iterative"}
    assert {r.batch_size for r in records} == {6}


def test_auto_state_survives_a_resume_mid_phase(tmp_path):
    reference, resumed = interrupted_then_resumed(
        lambda: Auto(max_phases=3), reasoner_choosing("fewshot"), tmp_path, at=2, max_iterations=6,
        train_ratio=1.0, val_ratio=0.0,
    )
    assert comparable(reference) == comparable(resumed)


def test_invalid_auto_parameters_are_clear_errors():
    with pytest.raises(ValueError, match="min_phases"):
        Auto(min_phases=5, max_phases=4)
    with pytest.raises(ValueError, match="unknown axis 'gepa'"):
        Auto(axes=["gepa"])


def test_early_stopping_patience_counts_within_a_phase(scripted_axes, tmp_path):
    auto = Auto(start_structural=True, max_phases=3, min_phases=3)
    program = run_strategy(auto, axes_in_order("structural", "iterative", "fewshot"), run_dir=tmp_path, max_iterations=6,
                           early_stopping_patience=3)
    # Four flat or worse iterations would end a single-strategy run at the third; each phase gets its turn.
    result = program.result
    assert [r.phase for r in result.iterations][:5] == ["structural"] * 2 + ["iterative"] * 2 + ["fewshot"]
    assert not result.stop_reason.startswith("early stopping")


def test_a_stalled_phase_ends_and_the_next_axis_gets_its_turn(scripted_axes, tmp_path):
    """Patience spent inside a phase ends that phase, not the run: a flat structural opening used to
    stop auto before any other axis ran (bench: auto gained nothing on all three quality tasks)."""
    auto = Auto(start_structural=True, max_phases=2, min_phases=2)
    program = run_strategy(auto, axes_in_order("fewshot"), run_dir=tmp_path, max_iterations=20,
                           early_stopping_patience=2, score_threshold=0.99)
    result = program.result
    phases = [r.phase for r in result.iterations]
    assert phases[:2] == ["structural", "structural"]  # 2 flat iterations of a 10-iteration share
    assert "fewshot" in phases
    assert [p["axis"] for p in auto.phases][0] == "structural" and auto.phases[0]["iterations"] == 2
    assert result.final.mean > result.baseline.mean


def test_at_a_small_budget_auto_skips_the_structural_opening_and_shares_the_calls(scripted_axes, tmp_path,
                                                                                 monkeypatch):
    """At 64 metric calls the structural opening (4 layouts a round, each on the whole batch) used
    to spend 56 of them, so auto was structural alone (bench: no gain on any quality task)."""
    tries = itertools.count(1)  # a new instruction every step, so every step pays for its batch
    monkeypatch.setitem(EDITS, "iterative", lambda c: c.with_instructions(
        "predict", c.predictors["predict"].instructions + f" Try {next(tries)}."))
    auto = Auto()  # start_structural=True, min_phases=2
    program = run_strategy(auto, axes_in_order("iterative", "fewshot"), examples=routing_examples(2),
                           run_dir=tmp_path, max_iterations=40, max_metric_calls=64, train_ratio=1.0,
                           val_ratio=0.0, score_threshold=0.99)
    result = program.result
    first = result.iterations[0]
    assert first.phase == "iterative"
    assert "structural opening skipped: one round scores 4 layouts, about 24 metric calls" in first.reasoning
    # Half of the 64 calls for the first of the two promised phases (not its 10 iterations):
    # 6 train examples per new instruction, and a sixth step would overrun the share of 32.
    assert auto.phases[0]["axis"] == "iterative"
    assert (auto.phases[0]["iterations"], auto.phases[0]["metric_calls"]) == (5, 30)
    assert "fewshot" in [r.phase for r in result.iterations]
    assert result.usage["search_calls"] <= 64


def test_a_budget_that_covers_structural_rounds_keeps_the_opening(scripted_axes, tmp_path):
    auto = Auto()
    program = run_strategy(auto, axes_in_order("iterative"), examples=routing_examples(2), run_dir=tmp_path,
                           max_iterations=8, max_metric_calls=128, train_ratio=1.0, val_ratio=0.0)
    assert program.result.iterations[0].phase == "structural"
