"""Stop rules as objects (issue 20, item 4): the lifecycle composes them; each says why it stops
in the exact words a run printed before they were objects.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from conftest import ScriptedReasoner, routing_examples, routing_respond
from fakes import fake_lm

from reflex_dspy import Reflex
from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.errors import BudgetExhausted
from reflex_dspy.stop_rules import (
    Budget,
    MaxIterations,
    Patience,
    ScoreThreshold,
    SearchView,
    StopRules,
    StrategyDone,
)
from reflex_dspy.strategies.iterative import Iterative

PROMPT = "Say which team should handle the message."


class Chained(Iterative):
    """A strategy that chains phases: it moves on once when patience runs out, then it is done."""

    def __init__(self, move_on: int = 1, finished: str | None = None, broke: bool = False) -> None:
        super().__init__()
        self.moves_left, self.finished, self.broke, self.asked = move_on, finished, broke, 0

    def done(self) -> str | None:
        return self.finished

    def patience_spent(self, ctx, iteration, batch) -> bool:
        self.asked += 1
        if self.broke:
            raise BudgetExhausted("spent")
        self.moves_left -= 1
        return self.moves_left >= 0


def record(val: float | None, score: float | None = None, phase: str = "iterative", details=None):
    return SimpleNamespace(val_score=val, score=score, phase=phase, details=details or {})


def view(i: int, strategy, records, has_val: bool = True) -> SearchView:
    return SearchView(i, strategy, ctx=None, records=records, batch=[], has_val=has_val)


def test_before_an_iteration_max_iterations_comes_before_the_strategy_being_done():
    rules = StopRules(MaxIterations(3), StrategyDone())
    assert rules.before(view(3, Chained(), [])) is None
    assert rules.before(view(4, Chained(finished="no layout left"), [])) == "max iterations"
    assert rules.before(view(2, Chained(finished="no layout left"), [])) == "strategy finished: no layout left"


def test_the_threshold_reads_val_when_there_is_val_else_the_batch_score():
    rule = ScoreThreshold(0.9)
    assert rule.after(view(1, Chained(), [record(0.9, 0.1)])) == "score threshold 0.9 reached"
    assert rule.after(view(1, Chained(), [record(0.5, 1.0)])) is None
    assert rule.after(view(1, Chained(), [record(None, 0.95)], has_val=False)) == "score threshold 0.9 reached"
    assert rule.after(view(1, Chained(), [record(None, None)], has_val=False)) is None


def test_a_threshold_checked_on_unused_train_too_stops_only_where_it_holds():
    rule = ScoreThreshold(0.9)
    check = {"holds": False, "train_examples": 12, "val_and_train": 0.8}
    assert rule.after(view(1, Chained(), [record(1.0, details={"threshold_check": check})])) is None
    check = {**check, "holds": True, "val_and_train": 0.95}
    assert rule.after(view(1, Chained(), [record(1.0, details={"threshold_check": check})])) == (
        "score threshold 0.9 reached (on validation, and on validation and 12 train examples together, none scored "
        "with its own demo: 0.950)")


def test_patience_counts_ties_lets_the_strategy_move_on_once_then_stops():
    strategy, patience = Chained(move_on=1), Patience(2, best_val=0.5)
    records = []

    def after(val, phase="iterative"):
        records.append(record(val, phase=phase))
        return patience.after(view(len(records), strategy, records))

    assert after(0.5) is None and patience.stale == 1  # a tie does not reset it
    assert after(0.4) is None and (patience.stale, strategy.asked) == (0, 1)  # spent: the strategy moved on
    assert after(0.6) is None and (patience.best_val, patience.stale) == (0.6, 0)
    assert after(0.6) is None and after(0.6) == "early stopping (no val improvement in 2 iterations)"
    assert strategy.asked == 2
    assert after(None) is None  # no val score: nothing to count


def test_a_new_phase_restarts_patience_through_the_strategy_and_zero_never_stops():
    strategy, patience = Chained(move_on=0), Patience(2, best_val=0.9)
    records = [record(0.5, phase="structural")]
    assert patience.after(view(1, strategy, records)) is None and patience.stale == 1
    records.append(record(0.5, phase="fewshot"))  # another phase: counted afresh, so 1 and not 2
    assert patience.after(view(2, strategy, records)) is None and patience.stale == 1
    never = Patience(0, best_val=0.9)
    for i in range(1, 6):
        assert never.after(view(i, strategy, [record(0.1)] * i)) is None
    assert never.stale == 5  # counted all the same: a checkpoint saves it


def test_a_strategy_out_of_calls_while_moving_on_raises_for_the_budget_rule():
    rules = StopRules(ScoreThreshold(1.0), Patience(1, best_val=0.9), Budget())
    with pytest.raises(BudgetExhausted):
        rules.after(view(1, Chained(broke=True), [record(0.5)]))
    assert Budget.reason == "metric-call budget spent"


def test_threshold_first_then_patience_as_the_search_loop_composes_them():
    patience = Patience(1, best_val=0.5, stale=0)
    rules = StopRules.for_run(10, 0.9, patience)
    assert rules.after(view(1, Chained(move_on=0), [record(0.95)])) == "score threshold 0.9 reached"
    assert (patience.best_val, patience.stale) == (0.5, 0)  # patience not consulted once a rule stopped


def test_a_run_stops_early_with_the_words_it_always_printed(tmp_path):
    """An end-to-end run: val never improves on the initial prompt, so patience 2 stops it after 2."""
    reasoner = ScriptedReasoner(["Be verbose about the team."])
    optimizer = Reflex("exact", strategy="iterative", task_lm=fake_lm(routing_respond), run_dir=tmp_path,
                       reasoning_lm=fake_lm(reasoner, name="fake/reasoner"), mlflow=False, max_iterations=6,
                       early_stopping_patience=2, score_threshold=1.0, max_workers=1)
    result = optimizer.compile(program_from_prompt(PROMPT), trainset=routing_examples()).result
    assert result.stop_reason == "early stopping (no val improvement in 2 iterations)"
    assert [r.iteration for r in result.iterations] == [1, 2] and len(reasoner.seen) == 2
