"""The contract between a strategy and the run lifecycle.

A strategy proposes candidates and reads scores; it never evaluates, splits or persists by
itself. The lifecycle (`reflex_dspy.reflex`) hands it a `SearchContext` whose `evaluate` is the
one evaluator and whose `proposer` is the one reasoning-model client, calls `step()` once per
iteration, and records what comes back. `state_dict()` must capture everything needed to
resume mid-run, as JSON-serialisable data.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import dspy
from dspy.teleprompt import Teleprompter

from reflex_dspy.candidate import Candidate
from reflex_dspy.evaluation import EvalResult, Evaluator
from reflex_dspy.proposals import Proposer, TaskFacts

if TYPE_CHECKING:
    from reflex_dspy.config import OptimizerConfig


def rng_state(rng: random.Random) -> list[Any]:
    """`rng`'s state as JSON (a checkpoint holds only JSON); `restore_rng` puts it back."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def restore_rng(rng: random.Random, state: Sequence[Any]) -> None:
    version, internal, gauss = state
    rng.setstate((version, tuple(internal), gauss))


@dataclass
class SearchContext:
    """What a strategy may use during a run."""

    student: dspy.Module
    trainset: list[dspy.Example]
    evaluator: Evaluator
    proposer: Proposer
    config: OptimizerConfig
    predictor_names: list[str]
    facts: dict[str, TaskFacts] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)
    workdir: Path | None = None  # a folder inside the run record for a strategy's own files (GEPA's log)

    def evaluate(self, candidate: Candidate, batch: Sequence[dspy.Example], label: str = "train") -> EvalResult:
        return self.evaluator.evaluate(candidate, batch, label=label)

    def evaluate_many(
        self, candidates: Sequence[Candidate], batch: Sequence[dspy.Example], label: str = "train"
    ) -> list[EvalResult]:
        """Score several candidates on the same batch, sharing the evaluator's worker pool."""
        return self.evaluator.evaluate_many(candidates, batch, label=label)

    @cached_property
    def examples_by_id(self) -> dict[str, dspy.Example]:
        from reflex_dspy.data import example_id

        return {example_id(ex): ex for ex in self.trainset}

    @cached_property
    def has_gold(self) -> bool:
        """Whether the examples carry reference outputs; without them the metric is a judge."""
        from reflex_dspy.metrics import label_fields

        return bool(self.trainset) and bool(label_fields(self.trainset[0]))


@dataclass
class Step:
    """One iteration's outcome: the candidate it produced and its score on the iteration batch.

    `parent_score` is the score, on the same batch, of the candidate the change started from,
    so `score - parent_score` is the effect of exactly this change.
    """

    candidate: Candidate
    result: EvalResult
    parent_score: float | None
    reasoning: str
    change_summary: str
    predictor: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    phase: str | None = None  # the sub-strategy that produced it, when a strategy chains others (auto)

    @property
    def score(self) -> float | None:
        return self.result.mean

    @property
    def delta(self) -> float | None:
        if self.score is None or self.parent_score is None:
            return None
        return self.score - self.parent_score


class Strategy(Teleprompter, abc.ABC):
    """Base class of every strategy: a DSPy teleprompter usable alone or inside `Reflex`.

    Subclasses set `name`, accept their parameters as keyword arguments (stored as attributes,
    so `get_params()` reports them), and implement `start`, `step`, `state_dict` and
    `load_state_dict`.
    """

    name: ClassVar[str] = ""

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
        from reflex_dspy.reflex import Reflex

        kwargs.setdefault("train_ratio", 1.0)
        kwargs.setdefault("val_ratio", 0.0)
        return Reflex(metric=self.metric, strategy=self, **kwargs).compile(
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

    def patience_spent(self, ctx: SearchContext, iteration: int, batch: Sequence[dspy.Example]) -> bool:
        """Val has not improved for `early_stopping_patience` iterations. True: the strategy moves
        on to something else (auto's next phase) and the search continues; False: it stops."""
        return False

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume mid-run, as JSON-serialisable data."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict()` returned."""
