"""One PDO duel: two prompts answer the same examples, and each example is won, lost or tied.

With reference outputs the metric decides (the higher score wins). Without them the metric is a
judge that grades each answer alone, and absolute grades are noisy; a pairwise judge that sees
both answers side by side is the sharper signal, so it decides, with the two answers in random
order so a position bias cannot favour either prompt. When the judge gives no usable verdict,
the metric's own scores decide that example, and the fallback is counted.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import dspy

from reflex_dspy.candidate import Candidate
from reflex_dspy.data import example_id
from reflex_dspy.library_logs import worker_pool
from reflex_dspy.metrics import as_data, input_fields, render_fields
from reflex_dspy.proposals import ProposalRejected
from reflex_dspy.signatures import CompareResponses
from reflex_dspy.strategies.base import SearchContext
from reflex_dspy.strategies.pdo.ranking import Duel

GENERIC_CRITERIA = (
    "The better response answers the task input correctly and completely, in the format the task asks "
    "for, clearly and without unnecessary content."
)
TIE = 1e-9


@dataclass
class DuelOutcome:
    """Per-example results of `first` against `second`."""

    wins: int = 0
    losses: int = 0
    ties: int = 0
    first_won: list[str] = field(default_factory=list)
    first_lost: list[str] = field(default_factory=list)
    skipped: int = 0  # examples where either prompt failed: not compared
    judged: int = 0
    judge_fallbacks: int = 0

    def as_duel(self, first: str, second: str) -> Duel:
        """The record the rankers and the sampler read (wins, losses and ties only)."""
        return Duel(first, second, self.wins, self.losses, self.ties)

    def to_attrs(self) -> dict[str, Any]:
        return asdict(self)


def judge_criteria(metric: Any) -> str:
    """What a good response does, taken from the metric's judge rubric when it has one."""
    for part in [metric, *getattr(metric, "metrics", [])]:
        criteria = getattr(part, "criteria", None)
        if isinstance(criteria, str) and criteria.strip():
            return criteria.strip()
    return GENERIC_CRITERIA


def _verdict(reply: dspy.Prediction, truncated: bool, attempt: int) -> str:
    winner = str(reply.get("winner") or "").strip()
    if winner.lower() == "tie":
        return "tie"
    if winner.upper() in ("A", "B"):
        return winner.upper()
    raise ProposalRejected(f"winner {winner!r} is not A, B or tie")


def judge_pair(ctx: SearchContext, example: dspy.Example, first: dict[str, Any], second: dict[str, Any],
               criteria: str, swapped: bool) -> int:
    """+1 when the judge prefers `first`, -1 for `second`, 0 for a tie; `swapped` shows `second` as A."""
    a, b = (second, first) if swapped else (first, second)
    verdict = ctx.proposer.ask(
        CompareResponses, _verdict, criteria=criteria,
        task_input=as_data(render_fields(input_fields(example))),
        response_a=as_data(render_fields(a) if a else ""), response_b=as_data(render_fields(b) if b else ""),
    )
    if verdict == "tie":
        return 0
    return (1 if verdict == "A" else -1) * (-1 if swapped else 1)


def run_duels(ctx: SearchContext, duels: Sequence[tuple[Candidate, Candidate, Sequence[dspy.Example]]],
              criteria: str | None, rng: random.Random, label: str) -> list[DuelOutcome]:
    """Score every duel of a round in one evaluation (cached pairs are free), then compare them.

    `criteria=None` means the examples carry gold: the metric decides. Otherwise a pairwise judge
    does; the A/B order of each comparison is drawn from `rng` in duel and example order, and the
    judge's calls run in parallel (up to `max_workers`), so a round costs one call's latency.
    """
    jobs = [(c, samples) for first, second, samples in duels for c in (first, second)]
    results = ctx.evaluate_jobs(jobs, label=label)
    rows: list[list[tuple[str, int | None, int | None]]] = []  # per duel: (example id, metric's sign, judge job)
    asks: list[tuple[dspy.Example, Any, Any, bool]] = []
    for i, (_, _, samples) in enumerate(duels):
        rows.append([])
        for ex in samples:
            eid = example_id(ex)
            x, y = results[2 * i].results.get(eid), results[2 * i + 1].results.get(eid)
            if x is None or y is None or x.score is None or y.score is None:
                rows[-1].append((eid, None, None))  # either prompt failed: not compared
                continue
            job = None
            if criteria is not None:
                job = len(asks)
                asks.append((ex, x.output, y.output, rng.random() < 0.5))
            rows[-1].append((eid, (x.score > y.score + TIE) - (y.score > x.score + TIE), job))
    verdicts = _judge_all(ctx, asks, criteria) if criteria is not None else []
    return [_tally(duel_rows, verdicts) for duel_rows in rows]


def _judge_all(ctx: SearchContext, asks: Sequence[tuple[dspy.Example, Any, Any, bool]],
               criteria: str) -> list[int | None]:
    """Every comparison's verdict (None: no usable verdict), asked in parallel, in order."""
    def one(ask: tuple[dspy.Example, Any, Any, bool]) -> int | None:
        try:
            return judge_pair(ctx, *ask[:3], criteria, ask[3])
        except ProposalRejected:
            return None

    workers = min(ctx.config.max_workers, len(asks))
    if workers <= 1:
        return [one(ask) for ask in asks]
    with worker_pool(workers, "reflex-judge") as pool:
        return list(pool.map(one, asks))


def _tally(rows: Sequence[tuple[str, int | None, int | None]], verdicts: Sequence[int | None]) -> DuelOutcome:
    out = DuelOutcome()
    for eid, by_score, job in rows:
        if by_score is None:
            out.skipped += 1
            continue
        sign = by_score
        if job is not None:
            if verdicts[job] is None:
                out.judge_fallbacks += 1  # no usable verdict: the metric's grades decide this example
            else:
                sign = verdicts[job]
                out.judged += 1
        if sign > 0:
            out.wins += 1
            out.first_won.append(eid)
        elif sign < 0:
            out.losses += 1
            out.first_lost.append(eid)
        else:
            out.ties += 1
    return out
