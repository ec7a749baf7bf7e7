"""Where auto's budget goes: every axis probed, then successive halving on measured gains.

The axes are arms. First every arm gets a cheap *probe*: an equal part of `probe_fraction` of
the budget. Then the budget left is spent in *rungs* of successive halving: each rung keeps the
better half of the previous rung's arms, ranked by the gain each measured in its last phase
(only arms that gained stay when some did), and shares its part of the budget equally between
them; a rung of one arm gets everything left. When a lone arm stops gaining, the two arms with
the best gain so far are reopened, so the budget is never left unspent for lack of a plan; arms
whose last phase measured nothing new (every score from the cache: the strategy had nothing left
to try) are not reopened, and when that is every arm the schedule ends (`next_plan` gives None).

Nothing here asks a model: the choice is a function of the measured gains, so a weak reasoning
model cannot talk the run out of the lever the data shows. Shares are in metric calls when the
run has a call budget, and always in iterations (`max_iterations` caps every run).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

NO_GAIN = 0.005  # a phase that raised the best score by at most this brought no gain
PROBE_FRACTION = 0.4  # the share of the budget all probes together get
CONVERGE_LEFT = 0.2  # auto may stop for lack of gain only when at most this share of the budget is left


@dataclass
class Plan:
    """One phase to run: its axis, its share of calls (None: no call budget) and iterations, and why."""

    axis: str
    calls: int | None
    iterations: int
    kind: str  # "probe" or "rung N"
    why: str
    evidence: dict[str, float | None] = field(default_factory=dict)  # each arm's measured gain behind the choice


def gains_by_axis(phases: Sequence[dict[str, Any]]) -> tuple[dict[str, float | None], dict[str, float]]:
    """(each axis's gain in its latest phase, each axis's best gain in any phase)."""
    latest: dict[str, float | None] = {}
    best: dict[str, float] = {}
    for p in phases:
        latest[p["axis"]] = p["gain"]
        best[p["axis"]] = max(best.get(p["axis"], float("-inf")), p["gain"] if p["gain"] is not None else 0.0)
    return latest, best


def idle_axes(phases: Sequence[dict[str, Any]]) -> set[str]:
    """Axes whose latest phase cost no metric call and gained nothing: nothing left to try there."""
    latest = {p["axis"]: p for p in phases}
    return {a for a, p in latest.items() if p.get("metric_calls") == 0 and (p["gain"] or 0.0) <= NO_GAIN}


def _fmt(gain: float | None) -> str:
    return "n/a" if gain is None else f"{gain:+.3f}"


def converge_calls(budget: int | None, held: int) -> int | None:
    """Search calls auto may leave when it converges: CONVERGE_LEFT of the run's whole budget less
    the calls held back to confirm the pick, which go unspent when no close call needs them.

    Measured on the bench: counted on the search's own budget (135 of 150, less the baseline),
    routing seed 0 converged after 118 of 150 calls, under the 80% a run owes its budget."""
    return None if budget is None else max(int(CONVERGE_LEFT * budget) - held, 0)


@dataclass
class Allocator:
    """The schedule's state (JSON-serialisable for checkpoints); `next_plan` decides each phase."""

    order: list[str]  # the arms, in probe order
    total_calls: int | None  # metric calls left when auto started (None: no call budget)
    total_iterations: int
    probe_fraction: float = PROBE_FRACTION
    rung: int = 0
    arms: list[str] = field(default_factory=list)  # this rung's arms
    queue: list[str] = field(default_factory=list)  # this rung's arms still to run
    share_calls: int | None = None
    share_iterations: int = 1
    # Search calls that may be left when auto converges (None: CONVERGE_LEFT of `total_calls`);
    # `converge_calls` sets it from the run's whole budget.
    converge_left: int | None = None

    def probe_share(self) -> tuple[int | None, int]:
        n = max(len(self.order), 1)
        calls = None if self.total_calls is None else max(int(self.total_calls * self.probe_fraction / n), 1)
        return calls, max(int(self.total_iterations * self.probe_fraction / n), 1)

    def spent_enough(self, calls_left: int | None, iterations_left: int) -> bool:
        """At most `converge_left` calls (else CONVERGE_LEFT of the budget) are left; iterations
        when there is no call budget."""
        if self.total_calls is not None and calls_left is not None:
            limit = CONVERGE_LEFT * self.total_calls if self.converge_left is None else self.converge_left
            return calls_left <= limit
        return iterations_left <= CONVERGE_LEFT * self.total_iterations

    def untried(self, phases: Sequence[dict[str, Any]]) -> list[str]:
        tried = {p["axis"] for p in phases}
        return [a for a in self.order if a not in tried]

    def next_plan(self, phases: Sequence[dict[str, Any]], calls_left: int | None,
                  iterations_left: int) -> Plan | None:
        """The next phase, or None when every arm's last phase measured nothing new."""
        latest, best = gains_by_axis(phases)
        evidence = {a: latest.get(a) for a in self.order if a in latest}
        measured = ", ".join(f"{a} {_fmt(g)}" for a, g in evidence.items()) or "nothing measured yet"
        if untried := self.untried(phases):
            calls, iterations = self.probe_share()
            axis = untried[0]
            budget = f"{calls} metric calls, " if calls is not None else ""
            why = (f"probe {len(self.order) - len(untried) + 1} of {len(self.order)}: {axis} has not been tried, and "
                   f"every axis gets a cheap probe ({budget}{iterations} iterations) before the budget follows the "
                   f"measured gains (so far: {measured})")
            return Plan(axis, calls, iterations, "probe", why, evidence)
        if not self.queue and not self._new_rung(latest, best, idle_axes(phases), calls_left, iterations_left):
            return None
        axis = self.queue.pop(0)
        kept = ", ".join(self.arms)
        budget = f"{self.share_calls} metric calls, " if self.share_calls is not None else ""
        why = (f"rung {self.rung} of successive halving: measured gains {measured}; this rung's arms: {kept}; "
               f"{axis} gets {budget}{self.share_iterations} iterations")
        return Plan(axis, self.share_calls, self.share_iterations, f"rung {self.rung}", why, evidence)

    def _new_rung(self, latest: dict[str, float | None], best: dict[str, float], idle: set[str],
                  calls_left: int | None, iterations_left: int) -> bool:
        """The next rung's arms and their equal shares of what is left; False when no arm has any."""
        previous = self.arms or list(self.order)

        def gain(a: str) -> float:
            return latest.get(a) if latest.get(a) is not None else float("-inf")

        ranking = sorted(previous, key=lambda a: (-gain(a), self.order.index(a)))
        if len(previous) > 1:
            keep = math.ceil(len(previous) / 2)
            gained = [a for a in ranking if gain(a) > NO_GAIN]
            arms = gained[:keep] or ranking[:keep]
        elif gain(previous[0]) > NO_GAIN:
            arms = previous
        else:  # the lone arm stopped gaining: reopen the two best arms of the whole run that can still try
            live = [a for a in self.order if a not in idle]
            arms = sorted(live, key=lambda a: (-best.get(a, float("-inf")), self.order.index(a)))[:2]
            if not arms:
                return False
        rungs_left = math.ceil(math.log2(len(arms))) + 1 if len(arms) > 1 else 1
        parts = rungs_left * len(arms)
        self.rung += 1
        self.arms, self.queue = list(arms), list(arms)
        self.share_calls = None if calls_left is None else max(calls_left // parts, 1)
        self.share_iterations = max(iterations_left // parts, 1)
        return True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Allocator:
        return cls(**data)
