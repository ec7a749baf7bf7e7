"""A candidate: the instructions and demos of each optimizable predictor.

A candidate is plain data (JSON-serialisable, hashable by fingerprint), never a live program:
strategies create candidates, the evaluator applies them to a deep copy of the student. That
keeps the student untouched and lets the evaluation cache key on the fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dspy

from reflex_dspy.data import example_id, input_text
from reflex_dspy.errors import UsageError
from reflex_dspy.plain import plain


@dataclass(frozen=True)
class PredictorState:
    """What we optimize in one predictor."""

    instructions: str
    demos: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"instructions": self.instructions, "demos": [dict(d) for d in self.demos]}

    def render(self) -> str:
        if not self.demos:
            return self.instructions
        shown = "\n\n".join("\n".join(f"{k}: {v}" for k, v in demo.items()) for demo in self.demos)
        return f"{self.instructions}\n\nExamples:\n\n{shown}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PredictorState:
        return cls(data["instructions"], tuple(dict(d) for d in data.get("demos", ())))


@dataclass(frozen=True)
class Candidate:
    """Instructions + demos per optimizable predictor, keyed by `named_predictors()` name."""

    predictors: Mapping[str, PredictorState]
    fingerprint: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        canonical = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)
        object.__setattr__(self, "fingerprint", hashlib.sha256(canonical.encode()).hexdigest()[:16])

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_program(cls, program: dspy.Module, names: Iterable[str] | None = None) -> Candidate:
        """Read the current state of `program`'s predictors (all, or only `names`)."""
        wanted = set(names) if names is not None else None
        states = {}
        for name, predictor in program.named_predictors():
            if wanted is None or name in wanted:
                demos = tuple(plain(d) for d in (predictor.demos or []))
                states[name] = PredictorState(predictor.signature.instructions, demos)
        if wanted is not None and (missing := wanted - states.keys()):
            known = ", ".join(n for n, _ in program.named_predictors())
            raise UsageError(f"no predictor named {sorted(missing)[0]!r} in the program (known: {known})")
        return cls(states)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Candidate:
        return cls({name: PredictorState.from_dict(s) for name, s in data["predictors"].items()})

    def to_dict(self) -> dict[str, Any]:
        """`{"predictors": {name: {"instructions": ..., "demos": [...]}}}`, sorted by name."""
        return {"predictors": {name: state.to_dict() for name, state in sorted(self.predictors.items())}}

    # -- edits (each returns a new candidate) ---------------------------------------
    def with_instructions(self, name: str, instructions: str) -> Candidate:
        state = self.predictors[name]
        return Candidate({**self.predictors, name: PredictorState(instructions, state.demos)})

    def with_demos(self, name: str, demos: Iterable[Mapping[str, Any]]) -> Candidate:
        state = self.predictors[name]
        shown = tuple(plain(d) for d in demos)
        return Candidate({**self.predictors, name: PredictorState(state.instructions, shown)})

    def changed_from(self, other: Candidate) -> list[str]:
        """Names of the predictors whose instructions or demos differ from `other`'s, sorted."""
        names = set(self.predictors) | set(other.predictors)
        return sorted(n for n in names if self.predictors.get(n) != other.predictors.get(n))

    # -- use ------------------------------------------------------------------------
    def apply(self, student: dspy.Module) -> dspy.Module:
        """A deep copy of `student` with this candidate's instructions and demos."""
        program = student.deepcopy()
        for name, predictor in program.named_predictors():
            state = self.predictors.get(name)
            if state is None:
                continue
            predictor.signature = predictor.signature.with_instructions(state.instructions)
            predictor.demos = [dspy.Example(**dict(d)) for d in state.demos]
        return program

    def render(self) -> str:
        """The prompt text a person reads: one predictor's instructions, or each under a heading,
        with its demos after them (so a prompt file written from a fewshot result keeps them)."""
        if len(self.predictors) == 1:
            return next(iter(self.predictors.values())).render()
        return "\n\n".join(f"## {name}\n\n{s.render()}" for name, s in sorted(self.predictors.items()))


def content_sources(candidate: Candidate, examples: Sequence[dspy.Example]) -> set[str]:
    """Ids of `examples` whose inputs appear verbatim in one of the candidate's demos: the examples
    a score of the candidate must leave out. This catches demos a user brought (their source is
    unknown) as well as our own."""
    demos = [d for state in candidate.predictors.values() for d in state.demos]
    found = set()
    for ex in examples:
        inputs = input_text(ex)
        if inputs and any(_shows(d, inputs) for d in demos):
            found.add(example_id(ex))
    return found


def leaving_out(candidate: Candidate, example: dspy.Example) -> Candidate:
    """`candidate` without the demos that show `example`'s inputs: the program that scores it
    honestly on `example` (leave-one-out), where the candidate itself would answer from its demo."""
    inputs = input_text(example)
    out = candidate
    for name, state in candidate.predictors.items():
        kept = [d for d in state.demos if not (inputs and _shows(d, inputs))]
        if len(kept) < len(state.demos):
            out = out.with_demos(name, kept)
    return out


def _shows(demo: Mapping[str, Any], inputs: Mapping[str, str]) -> bool:
    """Whether a demo holds these inputs verbatim."""
    return all(k in demo and str(demo[k]) == v for k, v in inputs.items())
