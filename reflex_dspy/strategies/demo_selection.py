"""Choosing a demo set from a pool of bootstrapped traces: the `diverse`, `top_k` and
`agent_curated` rules, and the similarity measure `diverse` maximises coverage with.

The rules really differ: `top_k` trusts the metric (highest score, then the shortest demo, so
ties never depend on chance); `diverse` trusts coverage (every distinct answer first, then the
inputs least like those already chosen, by word-set Jaccard: no embeddings, no downloads);
`agent_curated` trusts the reasoning model and falls back to `diverse`, saying so, when its
reply is unusable. Each takes a `variant` so successive iterations try different sets.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import dspy

from reflex_dspy.proposals import ProposalRejected, Proposer, clip
from reflex_dspy.signatures import CurateDemos

SELECTION_RULES = ("diverse", "top_k", "agent_curated")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True, eq=False)
class PoolEntry:
    """One successful trace: the demos it gives each predictor, and what the rules rank it by."""

    example_id: str  # the train example it was produced on: never scored with this demo
    score: float
    inputs: Mapping[str, str]  # the program's inputs, for similarity and for the reasoning model
    answer: str  # the program's final output: the "label" that `diverse` covers first
    demos: Mapping[str, Mapping[str, Any]]  # predictor name -> that step's inputs + outputs
    round: int = 0  # the bootstrap round that produced it

    @cached_property
    def key(self) -> str:
        """Identifies the demo content, so a re-bootstrapped trace of the same example is a new set."""
        digest = hashlib.sha256(json.dumps(self.demos, sort_keys=True, default=str).encode()).hexdigest()
        return f"{self.example_id}:{digest[:10]}"

    @cached_property
    def size(self) -> int:
        return len(json.dumps(self.demos, sort_keys=True, default=str))

    @cached_property
    def tokens(self) -> frozenset[str]:
        return frozenset(_WORD.findall(" ".join(self.inputs.values()).lower()))

    def to_dict(self) -> dict[str, Any]:
        return {"example_id": self.example_id, "score": self.score, "inputs": dict(self.inputs),
                "answer": self.answer, "demos": {k: dict(v) for k, v in self.demos.items()}, "round": self.round}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PoolEntry:
        return cls(data["example_id"], data["score"], dict(data["inputs"]), data["answer"],
                   {k: dict(v) for k, v in data["demos"].items()}, data.get("round", 0))


def answer_text(output: Mapping[str, Any]) -> str:
    """The answer a trace ends with, as one string (a free-text `reasoning` field is not the answer)."""
    fields = {k: v for k, v in output.items() if k != "reasoning"} or dict(output)
    if len(fields) == 1:
        return str(next(iter(fields.values()))).strip()
    return json.dumps(fields, sort_keys=True, default=str)


def similarity(a: PoolEntry, b: PoolEntry) -> float:
    """Jaccard overlap of the word sets of two entries' inputs (1.0 = same words)."""
    if not a.tokens and not b.tokens:
        return 1.0
    return len(a.tokens & b.tokens) / len(a.tokens | b.tokens)


def ranked(pool: Sequence[PoolEntry]) -> list[PoolEntry]:
    """Best score first; ties go to the shorter demo, then the example id (never to chance)."""
    return sorted(pool, key=lambda e: (-e.score, e.size, e.example_id))


def top_k(pool: Sequence[PoolEntry], k: int, variant: int = 0) -> list[PoolEntry]:
    """The `k` highest-scoring entries; later variants try fewer (k, k-1, ..., 1): the best few."""
    if not pool or k < 1:
        return []
    return ranked(pool)[: k - variant % k]


def diverse_order(pool: Sequence[PoolEntry], start: int = 0, limit: int | None = None) -> list[PoolEntry]:
    """Greedy max-coverage order, from the `start`-th ranked entry.

    Each next entry is one whose answer is not covered yet, if any; among those, the one least
    similar to its closest already-chosen entry (farthest-point coverage of the inputs); ties
    go to the better-ranked entry.
    """
    rest = ranked(pool)
    if not rest:
        return []
    limit = len(rest) if limit is None else min(limit, len(rest))
    chosen = [rest.pop(start % len(rest))]
    covered = {chosen[0].answer}
    closeness = [similarity(e, chosen[0]) for e in rest]  # similarity to the closest chosen entry
    while len(chosen) < limit:
        best = max(range(len(rest)), key=lambda i: (rest[i].answer not in covered, -closeness[i], -i))
        entry = rest.pop(best)
        closeness.pop(best)
        chosen.append(entry)
        covered.add(entry.answer)
        closeness = [max(c, similarity(e, entry)) for e, c in zip(rest, closeness, strict=True)]
    return chosen


def diverse(pool: Sequence[PoolEntry], k: int, variant: int = 0) -> list[PoolEntry]:
    """`k` entries covering the most answers and inputs.

    Variant v starts from the v-th entry of the pool's own coverage order, so successive
    variants start from different answers before they revisit one.
    """
    if not pool or k < 1:
        return []
    order = ranked(pool)
    seed = diverse_order(order)[variant % len(order)]
    return diverse_order(order, start=order.index(seed), limit=k)


def cap_pool(pool: Sequence[PoolEntry], size: int) -> list[PoolEntry]:
    """At most `size` entries: the best scores, and among equal scores the most diverse ones."""
    position = {e.example_id: i for i, e in enumerate(diverse_order(pool))}
    return sorted(pool, key=lambda e: (-e.score, position[e.example_id]))[:size]


# ---------------------------------------------------------------------------------------
# agent_curated
# ---------------------------------------------------------------------------------------
@dataclass
class Selection:
    """A chosen set and how it was chosen (`fallback` says why the rule's own choice was not used)."""

    entries: list[PoolEntry]
    rule: str
    note: str = ""
    fallback: str | None = None
    reasoning: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    drawn_from: int | None = None  # entries the set was chosen from, where not the bootstrapped pool


def _clip(text: Any, limit: int = 300) -> str:
    return clip(" ".join(str(text).split()), limit)  # one line per candidate field


def render_candidates(entries: Sequence[PoolEntry]) -> str:
    """Numbered candidates (1-based) as delimited data for the reasoning model."""
    lines = ["<data>"]
    for n, e in enumerate(entries, 1):
        shown = "; ".join(f"{k}: {_clip(v)}" for k, v in e.inputs.items())
        lines += [f"[{n}] {shown}", f"    answer: {_clip(e.answer)}", f"    score: {e.score:.2f}"]
    lines.append("</data>")
    return "\n".join(lines)


def parse_choice(chosen: Any, n: int, k: int) -> list[int]:
    """The 1-based numbers the model chose, validated; `ProposalRejected` says what is wrong."""
    if not isinstance(chosen, list):
        raise ProposalRejected(f"`chosen` is not a list of numbers: {_clip(repr(chosen), 80)}")
    if any(isinstance(x, bool) or not isinstance(x, int) for x in chosen):
        raise ProposalRejected(f"`chosen` holds something other than whole numbers: {_clip(repr(chosen), 80)}")
    if bad := [x for x in chosen if not 1 <= x <= n]:
        raise ProposalRejected(f"chose numbers outside 1..{n}: {bad}")
    if len(set(chosen)) != len(chosen):
        raise ProposalRejected(f"chose the same candidate twice: {chosen}")
    if len(chosen) != k:
        raise ProposalRejected(f"chose {len(chosen)} candidates, {k} were asked for")
    return list(chosen)


def agent_curated(
    proposer: Proposer, pool: Sequence[PoolEntry], k: int, variant: int, *, instructions: str, facts: str
) -> Selection:
    """The reasoning model picks `k` of the pool (`CurateDemos`); `diverse` when it cannot.

    Each variant shows the candidates in another (rotated) order, so a later iteration asks a
    genuinely different question rather than replaying the journaled answer.
    """
    order = ranked(pool)
    if not order or k < 1:
        return Selection([], "agent_curated")
    if len(order) <= k:
        return Selection(order, "agent_curated", note="the pool is no larger than the set: all taken, model not asked")
    shift = variant % len(order)
    shown = order[shift:] + order[:shift]

    def check(reply: dspy.Prediction, truncated: bool, attempt: int) -> tuple[list[int], str]:
        return parse_choice(reply.get("chosen"), len(shown), k), str(reply.get("reasoning") or "").strip()

    try:
        numbers, why = proposer.ask(CurateDemos, check, step_instructions=instructions, task_facts=facts,
                                    candidates=render_candidates(shown), how_many=k)
    except ProposalRejected as exc:
        return Selection(diverse(pool, k, variant), "agent_curated", note="fell back to the diverse rule",
                         fallback=str(exc))
    return Selection([shown[n - 1] for n in numbers], "agent_curated", note=f"the reasoning model chose {numbers}",
                     reasoning=why or None, details={"chosen": numbers})


def select(rule: str, pool: Sequence[PoolEntry], k: int, variant: int, *, proposer: Proposer | None = None,
           instructions: str = "", facts: str = "") -> Selection:
    """Apply the named rule (see the module docstring)."""
    if rule == "diverse":
        start = variant % max(len(pool), 1) + 1
        return Selection(diverse(pool, k, variant), rule, note=f"greedy coverage from coverage-order entry #{start}")
    if rule == "top_k":
        chosen = top_k(pool, k, variant)
        return Selection(chosen, rule, note=f"the {len(chosen)} best-scored entries")
    if rule == "agent_curated":
        if proposer is None:
            raise ValueError("agent_curated needs the proposer")
        return agent_curated(proposer, pool, k, variant, instructions=instructions, facts=facts)
    raise ValueError(f"unknown selection rule {rule!r} (known: {', '.join(SELECTION_RULES)})")
