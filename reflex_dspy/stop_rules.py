"""Why a search stops: small rules the lifecycle composes, one condition each.

Like GEPA's stop conditions (`gepa.utils.stop_condition`: callables on the optimizer's state,
combined by a composite), each rule looks at the search and answers; ours answer with the stop
reason the run prints and records (`None`: go on), and look at two moments: `before` an
iteration runs (iterations, strategy done) and `after` it is recorded (threshold, patience).
The metric-call budget is found spent inside a step (the evaluator raises `BudgetExhausted`), so
its rule names that stop instead of polling: a step the cache serves entirely still runs.

`Patience` keeps the early-stopping counters a checkpoint saves (`best_val`, `stale`); when val
has not improved for `early_stopping_patience` iterations it first asks the strategy whether it
moves on to something else (`Strategy.patience_spent`), and whether patience counts afresh
(`Strategy.restarts_patience`), so the lifecycle knows nothing of auto's phases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reflex_dspy.result import IterationRecord
    from reflex_dspy.search import SearchContext
    from reflex_dspy.strategies.base import Strategy

__all__ = ["Budget", "MaxIterations", "Patience", "ScoreThreshold", "SearchView", "StopRule", "StopRules",
           "StrategyDone"]


@dataclass
class SearchView:
    """What a rule may look at: the iteration about to run (`before`) or just recorded (`after`)."""

    iteration: int
    strategy: Strategy
    ctx: SearchContext
    records: Sequence[IterationRecord]
    batch: Sequence[Any] = ()
    has_val: bool = False


class StopRule:
    """One stop condition. Each hook returns the stop reason, or None to go on."""

    def before(self, view: SearchView) -> str | None:
        return None

    def after(self, view: SearchView) -> str | None:
        return None


class MaxIterations(StopRule):
    """Stop once `max_iterations` iterations ran (the loop's bound)."""

    def __init__(self, max_iterations: int) -> None:
        self.max_iterations = max_iterations

    def before(self, view: SearchView) -> str | None:
        return "max iterations" if view.iteration > self.max_iterations else None


class StrategyDone(StopRule):
    """Stop when the strategy has nothing more to propose (`Strategy.done`)."""

    def before(self, view: SearchView) -> str | None:
        finished = view.strategy.done()
        return None if finished is None else f"strategy finished: {finished}"


class ScoreThreshold(StopRule):
    """Stop when the iteration reached `score_threshold`: on val when val exists, else on its batch;
    where the lifecycle checked it on train examples too (`details["threshold_check"]`),
    only when it holds there as well."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def after(self, view: SearchView) -> str | None:
        record = view.records[-1]
        reached = record.val_score if view.has_val else record.score
        if reached is None or reached < self.threshold:
            return None
        check = record.details.get("threshold_check")  # on val and train together (confirmation.py)
        if check is None:
            return f"score threshold {self.threshold} reached"
        if not check["holds"]:
            return None
        return (f"score threshold {self.threshold} reached (on validation, and on validation and "
                f"{check['train_examples']} train examples together, none scored with its own demo: "
                f"{check['val_and_train']:.3f})")


class Budget(StopRule):
    """The metric-call budget (`metric_call_budget`): spent when the evaluator raises `BudgetExhausted`."""

    reason = "metric-call budget spent"


class Patience(StopRule):
    """Early stopping on val: `stale` counts iterations since val last improved (ties do not reset
    it); at `patience` (0: never) the strategy may move on, which restarts the count, or the search stops.

    The counters are kept whatever `patience` is, since a checkpoint saves them.
    """

    def __init__(self, patience: int, best_val: float | None = None, stale: int = 0) -> None:
        self.patience, self.best_val, self.stale = patience, best_val, stale

    def after(self, view: SearchView) -> str | None:
        records = view.records
        val_score = records[-1].val_score
        if val_score is None:
            return None
        if len(records) > 1 and view.strategy.restarts_patience(records[-2], records[-1]):
            self.stale = 0
        if self.best_val is None or val_score > self.best_val:
            self.best_val, self.stale = val_score, 0
        else:
            self.stale += 1
        if not self.patience or self.stale < self.patience:
            return None
        if view.strategy.patience_spent(view.ctx, view.iteration, view.batch):  # may raise BudgetExhausted
            self.stale = 0
            return None
        return f"early stopping (no val improvement in {self.stale} iterations)"


class StopRules:
    """Rules in order; the first that names a reason stops the search (GEPA's composite, mode "any")."""

    def __init__(self, *rules: StopRule) -> None:
        self.rules = rules

    @classmethod
    def for_run(cls, max_iterations: int, score_threshold: float, patience: Patience) -> StopRules:
        """The search loop's rules, in the order a run consults them: iterations and a finished
        strategy before a step; the threshold, then patience (which may move the strategy on),
        then the budget after it."""
        return cls(MaxIterations(max_iterations), StrategyDone(), ScoreThreshold(score_threshold), patience, Budget())

    def before(self, view: SearchView) -> str | None:
        return next((reason for rule in self.rules if (reason := rule.before(view)) is not None), None)

    def after(self, view: SearchView) -> str | None:
        return next((reason for rule in self.rules if (reason := rule.after(view)) is not None), None)
