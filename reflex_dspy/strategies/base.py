"""The contract between a strategy and the run lifecycle.

A strategy proposes candidates and reads scores; it never evaluates, splits or persists by
itself. The lifecycle (`reflex_dspy.lifecycle`) hands it a `SearchContext` (`reflex_dspy.search`)
whose `evaluate` is the one evaluator and whose `proposer` is the one reasoning-model client,
calls `step()` once per iteration, and records what comes back. `state_dict()` must capture
everything needed to resume mid-run, as JSON-serialisable data.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import dspy
from dspy.teleprompt import Teleprompter

from reflex_dspy.candidate import Candidate
from reflex_dspy.search import SearchContext, Step, restore_rng, rng_state

if TYPE_CHECKING:
    from reflex_dspy.result import IterationRecord

__all__ = ["SearchContext", "Step", "Strategy", "restore_rng", "rng_state"]  # the first four re-exported from search


class Strategy(Teleprompter, abc.ABC):
    """Base class of every strategy: a DSPy teleprompter usable alone or inside `Reflex`.

    Subclasses set `name`, accept their parameters as keyword arguments (stored as attributes,
    so `get_params()` reports them), and implement `start`, `step`, `state_dict` and
    `load_state_dict`.
    """

    name: ClassVar[str] = ""
    # Validation examples by which a candidate with model-written instructions must beat the user's
    # words to be picked (selection.PickRule); 0: the plain best score.
    rewrite_margin: int = 0

    def __init__(self, metric: Any = None, **params: Any) -> None:
        super().__init__()
        self.metric = metric
        self._param_names = list(params)
        for key, value in params.items():
            setattr(self, key, value)

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters (not the search state `Teleprompter.get_params` would add)."""
        return {"metric": self.metric, **{k: getattr(self, k) for k in self._param_names}}

    def compile(
        self,
        student: dspy.Module,
        *,
        trainset: list[dspy.Example],
        valset: list[dspy.Example] | None = None,
        teacher: dspy.Module | None = None,
        **kwargs: Any,
    ) -> dspy.Module:
        """Optimize `student` with this strategy alone, through the one run lifecycle.

        Like DSPy's own teleprompters, the trainset is used for the search and `valset` (when
        given) for selection; nothing is held out unless `train_ratio` says so.
        """
        import reflex_dspy  # the public face, resolved lazily: strategies sit below `reflex.py`

        kwargs.setdefault("train_ratio", 1.0)
        kwargs.setdefault("val_ratio", 0.0)
        return reflex_dspy.Reflex(metric=self.metric, strategy=self, **kwargs).compile(
            student, trainset=trainset, valset=valset, teacher=teacher
        )

    # -- the lifecycle's hooks ---------------------------------------------------------
    @abc.abstractmethod
    def start(self, ctx: SearchContext, initial: Candidate) -> None:
        """Called once before the first iteration (not again on resume)."""

    @abc.abstractmethod
    def step(self, ctx: SearchContext, iteration: int, batch: Sequence[dspy.Example]) -> Step:
        """Produce iteration `iteration`'s candidate, scored on `batch` through `ctx.evaluate`."""

    def done(self) -> str | None:
        """Why the strategy has nothing more to propose (the search then stops), or None."""
        return None

    def first_step_calls(self, train_n: int, batch_n: int, val_n: int) -> int | None:
        """Search metric calls per task model the first step cannot do with fewer of (after the
        starting prompt on validation), its candidate on validation included, for a strategy that
        needs a minimum: a smaller budget is refused before any model call (`budget_fit.py`).
        None: any budget does (the strategy adapts to what is left)."""
        return None

    def patience_spent(self, ctx: SearchContext, iteration: int, batch: Sequence[dspy.Example]) -> bool:
        """Val has not improved for `early_stopping_patience` iterations. True: the strategy moves
        on to something else (auto's next phase) and the search continues; False: it stops."""
        return False

    def memory(self) -> dict[str, Any]:
        """What this search tried that a later search of the same kind should not try again, as JSON.

        Why: a strategy that chains others (auto) runs one axis in several phases; each phase's
        search starts afresh from the handed-on candidate, and with a greedy task and reasoning
        model it would propose exactly what the earlier phase did, measure nothing new and count
        that as "no gain". Default: nothing to carry.
        """
        return {}

    def recall(self, memory: dict[str, Any]) -> None:
        """Take up `memory()` of an earlier search of the same kind; called right after `start`."""

    def restarts_patience(self, previous: IterationRecord, record: IterationRecord) -> bool:
        """Whether early-stopping patience counts afresh from `record` (stop_rules.Patience).

        True when `record` begins another phase of a strategy that chains others (a `Step`'s
        `phase`: auto's axes, where a new axis deserves its own chance); one search never restarts.
        """
        return previous.phase != record.phase

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume mid-run, as JSON-serialisable data."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict()` returned."""
