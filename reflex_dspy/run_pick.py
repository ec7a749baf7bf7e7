"""Which candidate a run picks, and whether a score threshold really holds.

The best on val (train without val) by `selection.PickRule`, with the strategy's rewrite margin;
a close call on val settled on val and unused train examples together, and a threshold reached on
val checked there too (confirmation.py); and the note that says why the pick is not the highest
score. The lifecycle builds one over its records whenever it asks (`RunLifecycle._pick`): nothing
here is kept between questions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reflex_dspy.candidate import Candidate
from reflex_dspy.confirmation import Confirmation, describe
from reflex_dspy.evaluation import Evaluator
from reflex_dspy.proposals import TaskFacts
from reflex_dspy.result import IterationRecord
from reflex_dspy.selection import PickRule
from reflex_dspy.splits import Splits


@dataclass
class RunPick:
    """The pick over a run's candidates and records as they stand."""

    initial: Candidate
    initial_val: float | None
    candidates: Mapping[int, Candidate]
    records: Sequence[IterationRecord]
    splits: Splits
    margin: int  # the strategy's `rewrite_margin`, in validation examples
    facts: Mapping[str, TaskFacts]
    evaluator: Evaluator
    seed: int
    held: int  # calls held back to confirm the pick (confirmation.held_back)
    threshold: float
    notice: Callable[[str], None]

    def scored(self) -> tuple[list[tuple[int, float | None]], str, int]:
        """(iteration, score) of every candidate where the pick is made, that split, and the margin."""
        if self.splits.val:
            on_val = [(0, self.initial_val)] + [(r.iteration, r.val_score) for r in self.records]
            return on_val, "val", self.margin
        first = self.records[0] if self.records else None
        parent = first.score - first.delta if first and first.delta is not None else None
        return [(0, parent)] + [(r.iteration, r.score) for r in self.records], "train", 0

    def rule(self) -> PickRule:
        """The pick rule: on val with the strategy's `rewrite_margin`, on train without one."""
        return PickRule(self.initial, self.facts, self.scored()[2])

    def confirmation(self) -> Confirmation:
        return Confirmation.for_run(self.evaluator, self.splits.train, self.splits.val, self.rule(), self.seed,
                                    self.held)

    def best(self) -> tuple[int, float | None, str]:
        """Best on val when val exists, else best train score; ties go to the earlier candidate.
        On val, the strategy's `rewrite_margin` applies (selection.PickRule)."""
        scored, by, _ = self.scored()
        pick = self.rule().best([(self.candidates[i], score) for i, score in scored], len(self.splits.val))
        return (0, None, by) if pick is None else (*scored[pick], by)

    def final(self) -> tuple[int, float | None, str, str | None, dict[str, Any] | None]:
        """The run's pick: best on val (`best`), a close call there settled on validation and
        train examples together (confirmation.py); with its score, split, note and record."""
        selected, score, by = self.best()
        scored, _, _ = self.scored()
        settled = (self.confirmation().settle([(i, self.candidates[i], s) for i, s in scored])
                   if by == "val" and self.held else None)
        if settled is None:
            return selected, score, by, self._note(selected), None
        picked, record = settled
        score = next(r["val_and_train"] for r in record["contenders"] if r["iteration"] == picked)
        return picked, score, "val + train", describe(record), record

    def _note(self, selected: int) -> str | None:
        """Why the pick is not the highest score, when the rewrite margin decided it."""
        scored, _, margin = self.scored()
        top = PickRule(self.initial).best([(self.candidates[i], s) for i, s in scored], 1)
        if not margin or top is None or scored[top][0] == selected:
            return None
        return (f"the user's words kept over iteration {scored[top][0]} ({scored[top][1]:.4f}): no rewrite won "
                f"by more than {margin} validation example{'s' * (margin != 1)}")

    def threshold_check(self, i: int, candidate: Candidate, val_score: float | None) -> dict[str, Any] | None:
        """A candidate (iteration `i`, 0: the starting prompt) that reached the score threshold on
        validation, checked on validation and train examples together: the threshold stops the
        run only if it holds there; where it does not, a notice says the search goes on."""
        if not self.held or val_score is None or val_score < self.threshold:
            return None
        check = self.confirmation().threshold_check(candidate, val_score, self.threshold)
        if check is not None and not check["holds"]:
            who = f"iteration {i}" if i else "the starting prompt"
            self.notice(f"{who} reached the score threshold {self.threshold:g} on validation ({val_score:.3f}) but "
                        f"not on validation and {check['train_examples']} train examples together, none scored with "
                        f"its own demo ({check['val_and_train']:.3f}): the search goes on")
        return check

    def initial_at_threshold(self) -> str | None:
        """The starting prompt already reaches the score threshold on validation (and, where calls
        are held back, on validation and train examples together): nothing is left to improve, so
        no step is paid for (as aevyra-reflex stops when its first evaluation meets the target)."""
        if self.initial_val is None or self.initial_val < self.threshold:
            return None
        check = self.threshold_check(0, self.initial, self.initial_val)
        if check is not None and not check["holds"]:
            return None
        return (f"the starting prompt already reaches the score threshold {self.threshold:g} on validation "
                f"({self.initial_val:.3f})")
