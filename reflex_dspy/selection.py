"""Which candidate wins on validation, and why the user's words win close calls.

Validation is small in prompt optimization (8 to 50 examples) and a run scores dozens of
candidates there, so the best of them is ahead by luck by an example or two. The candidates
whose instructions the reasoning model wrote are the many and varied ones, and a weak model's
rewrite can be wrong in a way a few examples do not show: on the bench, a 0.5B model's rewrites
naming one label ("the team should be assigned to the billing team") won an 8-example
validation by one example, were picked, and then lost to the user's words with the label set and
labeled demos on the 24 test examples. A strategy may therefore set a margin
(`Strategy.rewrite_margin`; auto's default is 1): a candidate whose instructions differ from the
user's words beats the candidates that keep them only by *more* than that many validation
examples. The user's words with the sentences the data states (`TaskFacts.missing_from`: the
label set, the JSON keys) count as the user's words, and demos are never penalised: both are the
data itself, not a model's opinion of it. With no margin this is the plain best score, ties to
the earlier candidate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from reflex_dspy.candidate import Candidate
from reflex_dspy.proposals import TaskFacts, with_fact


def users_instructions(initial: Candidate, facts: Mapping[str, TaskFacts]) -> dict[str, set[str]]:
    """Per predictor, the instructions that are the user's: as given, and with the data-stated sentence."""
    out = {}
    for name, state in initial.predictors.items():
        allowed = {state.instructions}
        if (f := facts.get(name)) is not None and (fix := f.missing_from(state.instructions)):
            allowed.add(with_fact(state.instructions, fix))
        out[name] = allowed
    return out


@dataclass(frozen=True)
class PickRule:
    """The choice among scored candidates: best score, where model-written instructions count
    `margin` examples lower; ties go to the user's words, then to the earlier candidate."""

    initial: Candidate
    facts: Mapping[str, TaskFacts] = field(default_factory=dict)
    margin: float = 0  # examples a rewrite must win by, beyond a tie

    @cached_property
    def _users(self) -> dict[str, set[str]]:
        return users_instructions(self.initial, self.facts)

    def keeps_users_words(self, candidate: Candidate) -> bool:
        return all(state.instructions in self._users.get(name, {state.instructions})
                   for name, state in candidate.predictors.items())

    def best(self, scored: Sequence[tuple[Candidate, float | None]], n: int) -> int | None:
        """Index of the pick among (candidate, mean score over `n` examples); None when none is scored."""
        best_i, best_key = None, None
        for i, (candidate, score) in enumerate(scored):
            if score is None:
                continue
            key = self.key(candidate, score, n)
            if best_key is None or key > best_key:
                best_i, best_key = i, key
        return best_i

    def key(self, candidate: Candidate, score: float, n: int) -> tuple[float, bool]:
        """What the pick maximises: (the score in examples, less the margin for model-written
        instructions; whether the instructions are the user's words)."""
        written = self.margin > 0 and not self.keeps_users_words(candidate)
        # In examples, rounded: 0.8 * 10 - 1 must tie 0.7 * 10 exactly.
        return round(score * max(n, 1) - (self.margin if written else 0), 6), not written
