"""What a strategy works with during a run, below both the lifecycle and the strategies.

The lifecycle (`reflex_dspy.lifecycle`) builds one `SearchContext` per run and hands it to the
strategy's every step; the strategy returns a `Step`. Both live here, with the RNG helpers a
checkpoint needs, so that the lifecycle never imports a strategy module and a strategy never
imports the lifecycle (docs/architecture.md shows the floors).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dspy

from reflex_dspy.candidate import Candidate
from reflex_dspy.evaluation import EvalResult, Evaluator
from reflex_dspy.proposals import Proposer, TaskFacts

if TYPE_CHECKING:
    from reflex_dspy.config import OptimizerConfig

__all__ = ["SearchContext", "Step", "restore_rng", "rng_state"]


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
    # Validation, for measuring only (auto compares its phases there, as selection does); no strategy
    # proposes from it: no demo, feedback or failure analysis ever comes from a val example.
    valset: list[dspy.Example] = field(default_factory=list)

    def evaluate(self, candidate: Candidate, batch: Sequence[dspy.Example], label: str = "train") -> EvalResult:
        return self.evaluator.evaluate(candidate, batch, label=label)

    def evaluate_many(
        self, candidates: Sequence[Candidate], batch: Sequence[dspy.Example], label: str = "train"
    ) -> list[EvalResult]:
        """Score several candidates on the same batch, sharing the evaluator's worker pool."""
        return self.evaluator.evaluate_many(candidates, batch, label=label)

    def evaluate_jobs(
        self, requests: Sequence[tuple[Candidate, Sequence[dspy.Example]]], label: str = "train"
    ) -> list[EvalResult]:
        """Score each candidate on its own examples in one worker pool (PDO's duels of a round)."""
        return self.evaluator.evaluate_jobs(requests, label=label)

    # What a strategy reads of the run besides scores; never `evaluator.*` directly (one source each).
    @property
    def metric(self) -> Callable[..., Any]:
        """The run's resolved metric (a judge's criteria are read from it)."""
        return self.evaluator.metric

    @property
    def budget_left(self) -> int | None:
        """Search metric calls left under the budget; None when there is no budget."""
        return self.evaluator.ledger.budget_left

    @property
    def budget(self) -> int | None:
        """The run's whole metric-call budget (the search's and the held-back calls); None: no budget."""
        return self.evaluator.ledger.budget

    @property
    def held(self) -> int:
        """Calls of the budget held back from the search to confirm the pick (`confirmation.py`)."""
        return self.evaluator.ledger.held

    @property
    def spent(self) -> int:
        """Search metric calls spent so far (replayed ones included once counted)."""
        return self.evaluator.ledger.spent

    @property
    def task_lm(self) -> dspy.LM:
        """The task model (the first, with several) at the evaluation temperature."""
        return self.evaluator.lm

    @property
    def context_window(self) -> int | None:
        """The task model's context in tokens when its engine states one (`n_ctx`: the embedded
        model's 4096), else None (an API model's is large enough for any demo set we build)."""
        n_ctx = getattr(getattr(self.task_lm, "engine", None), "n_ctx", None)
        return n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None

    @property
    def adapter(self) -> Any:
        return self.evaluator.adapter

    def count_external(self, **counts: int) -> None:
        """Calls made by an optimizer we delegate to (GEPA) count like our own (`Ledger.count_external`)."""
        self.evaluator.ledger.count_external(**counts)

    def progress(self, label: str, done: int, total: int) -> None:
        """Report progress of work done outside the evaluator (GEPA's own loop)."""
        if self.evaluator.on_progress is not None:
            self.evaluator.on_progress(label, done, total)

    @cached_property
    def examples_by_id(self) -> dict[str, dspy.Example]:
        from reflex_dspy.data import example_id

        return {example_id(ex): ex for ex in self.trainset}

    @cached_property
    def has_gold(self) -> bool:
        """Whether the examples carry reference outputs; without them the metric is a judge."""
        from reflex_dspy.metrics import label_fields

        return bool(self.trainset) and bool(label_fields(self.trainset[0]))


def fmt_score(score: float | None, digits: int = 3) -> str:
    """A score for a strategy's reasoning text: "n/a" for a failed or missing one."""
    return "n/a" if score is None else f"{score:.{digits}f}"


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
