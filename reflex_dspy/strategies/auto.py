"""Auto: chains the other strategies in phases, each along one axis, chosen from what worked.

A run is a sequence of phases (structural, iterative, fewshot, pdo). Each phase runs one
strategy for its share of `max_iterations`, and of the metric-call budget when there is one,
on the candidate handed on by the previous phases:
the best candidate so far, not the last one, so a phase that regressed costs nothing but its
calls. After each phase the reasoning model picks the next axis from the phase history (JSON,
validated); when it gives no usable answer a deterministic rule picks instead. The run stops
after `max_phases`, or once `min_phases` have run and a phase brought no gain (converged).
Every phase sees the same context (batches, seed, budget), since they are steps of one run.

The call share matters at small budgets: without it the structural opening (each round scores
`variants_per_round` layouts on the batch) spent 56 of 64 metric calls in the quality benchmark,
so auto was structural alone. The budget left is split over the phases auto still promises
(`min_phases`); a phase ends when another step like its last would overrun its share, and the
structural opening is skipped when one round would cost more than half of it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import dspy

from reflex_dspy.candidate import Candidate
from reflex_dspy.proposals import ProposalRejected
from reflex_dspy.signatures import ChooseNextAxis
from reflex_dspy.strategies.base import SearchContext, Step, Strategy

AXES = ("structural", "iterative", "fewshot", "pdo")
FALLBACK_ORDER = ("iterative", "fewshot", "pdo", "structural")  # untried axes, cheapest first
NO_GAIN = 0.005  # a phase that raised the best score by at most this brought no gain


class Auto(Strategy):
    """Phases over the strategy axes; see the module docstring.

    Parameters: `max_phases` (4), `min_phases` (2) before a phase without gain ends the run,
    `start_structural` (True) to open with a structural phase, `phase_iterations` (per-axis
    iteration budgets, default an equal share of `max_iterations`), `axis_params` (per-axis
    strategy parameters, e.g. `{"pdo": {"duels_per_round": 2}}`), `axes` (those allowed).
    """

    name = "auto"

    def __init__(
        self,
        metric: Any = None,
        *,
        max_phases: int = 4,
        min_phases: int = 2,
        start_structural: bool = True,
        phase_iterations: dict[str, int] | None = None,
        axis_params: dict[str, dict[str, Any]] | None = None,
        axes: Sequence[str] = AXES,
    ) -> None:
        if not 1 <= min_phases <= max_phases:
            raise ValueError("need 1 <= min_phases <= max_phases")
        unknown = set(axes) - set(AXES) | set(phase_iterations or {}) - set(AXES) | set(axis_params or {}) - set(AXES)
        if unknown:
            raise ValueError(f"unknown axis {sorted(unknown)[0]!r} (axes: {', '.join(AXES)})")
        if start_structural and "structural" not in axes:
            raise ValueError("start_structural needs the structural axis")
        super().__init__(
            metric, max_phases=max_phases, min_phases=min_phases, start_structural=start_structural,
            phase_iterations=dict(phase_iterations or {}), axis_params=dict(axis_params or {}), axes=list(axes),
        )
        self._reset()

    def _reset(self) -> None:
        self.sub: Strategy | None = None
        self.axis: str | None = None  # the axis of the phase running now
        self.next_axis: tuple[str, str] | None = None  # (axis, why) chosen for the next phase
        self.in_phase = 0
        self.phase_budget = 0
        self.phase_calls: int | None = None  # the phase's share of the metric-call budget
        self.phase_calls_start = 0  # search calls spent when the phase began
        self.step_end = 0  # search calls spent when the previous step ended
        self.phases: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None  # {"candidate", "score", "iteration"} over all phases
        self.phase_best: dict[str, Any] | None = None
        self.phase_start: dict[str, Any] | None = None  # {"iteration", "score"} of the handed-on candidate
        self.finished: str | None = None

    # -- lifecycle hooks --------------------------------------------------------------------
    def start(self, ctx: SearchContext, initial: Candidate) -> None:
        self._reset()
        self.best = {"candidate": initial.to_dict(), "score": None, "iteration": 0}
        self.step_end = ctx.evaluator.usage.search_calls
        skip = self._structural_unaffordable(ctx) if self.start_structural else None
        if self.start_structural and not skip:
            self.next_axis = ("structural", "start_structural=True: the first phase fixes the layout")
        elif skip:
            axis, why = self._choose(ctx, [a for a in self.axes if a != "structural"])
            self.next_axis = (axis, f"{skip}; {why}")
        else:
            self.next_axis = self._choose(ctx)

    def _structural_unaffordable(self, ctx: SearchContext) -> str | None:
        """Why the structural opening is skipped, or None: one round (every layout scored on the
        batch) must fit in half of the first phase's share of the metric-call budget."""
        from reflex_dspy.strategies.structural import Structural

        share = self._call_share(ctx)
        if share is None or len(self.axes) == 1:
            return None
        variants = Structural(**self.axis_params.get("structural", {})).variants_per_round
        round_cost = variants * (ctx.config.batch_size or len(ctx.trainset))
        if 2 * round_cost <= share:
            return None
        return (f"structural opening skipped: one round scores {variants} layouts, about {round_cost} metric calls, "
                f"more than half of the first phase's share ({share} of {ctx.evaluator.budget_left} calls left)")

    def _call_share(self, ctx: SearchContext) -> int | None:
        """The next phase's share of the metric calls left: an equal part per phase still promised."""
        left = ctx.evaluator.budget_left
        return None if left is None else left // max(self.min_phases - len(self.phases), 1)

    def done(self) -> str | None:
        return self.finished

    def step(self, ctx: SearchContext, iteration: int, batch: Sequence[dspy.Example]) -> Step:
        opening = None
        if self.sub is None:
            opening = self._begin_phase(ctx, iteration, batch)
        step = self.sub.step(ctx, iteration, batch)
        step.phase = self.axis
        self.in_phase += 1
        if step.score is not None:
            entry = {"candidate": step.candidate.to_dict(), "score": step.score, "iteration": iteration}
            if self.phase_best is None or step.score > self.phase_best["score"]:
                self.phase_best = entry
        prefix = f"[{self.axis} phase {len(self.phases) + 1}]"
        step.reasoning = f"{prefix} {opening}\n\n{step.reasoning}" if opening else f"{prefix} {step.reasoning}"
        step.details = {**step.details, "phase_number": len(self.phases) + 1}
        # One step's cost: this step's calls plus the validation of the previous one.
        spent_now = ctx.evaluator.usage.search_calls
        step_cost, self.step_end = spent_now - self.step_end, spent_now
        share_spent = self.phase_calls is not None and spent_now - self.phase_calls_start + step_cost > self.phase_calls
        if self.in_phase >= self.phase_budget or share_spent or self.sub.done() is not None:
            self._end_phase(ctx, iteration, batch)
        return step

    def patience_spent(self, ctx: SearchContext, iteration: int, batch: Sequence[dspy.Example]) -> bool:
        """A phase that stalls ends there; the run goes on with the next axis unless auto is done.
        (It used to end the whole run: a flat structural opening stopped auto before any other axis.)"""
        if self.sub is not None:
            self._end_phase(ctx, iteration, batch)
        return self.finished is None

    # -- phases -----------------------------------------------------------------------------
    def _begin_phase(self, ctx: SearchContext, iteration: int, batch: Sequence[dspy.Example]) -> str:
        from reflex_dspy.strategies import get_strategy

        axis, why = self.next_axis
        self.axis, self.next_axis = axis, None
        self.sub = get_strategy(axis, self.metric, **self.axis_params.get(axis, {}))
        left = ctx.config.max_iterations - iteration + 1
        phases_left = max(self.max_phases - len(self.phases), 1)
        share = self.phase_iterations.get(axis) or max(ctx.config.max_iterations // self.max_phases, 1)
        self.phase_budget = left if phases_left == 1 else max(min(share, left), 1)
        self.in_phase = 0
        self.phase_calls = self._call_share(ctx)
        self.phase_calls_start = ctx.evaluator.usage.search_calls
        self.phase_best = None
        handed_on = Candidate.from_dict(self.best["candidate"])
        self.phase_start = {"iteration": iteration, "score": ctx.evaluate(handed_on, batch, label="auto: hand-on").mean}
        self.sub.start(ctx, handed_on)
        calls = "" if self.phase_calls is None else f" and {self.phase_calls} metric calls"
        return (f"Phase {len(self.phases) + 1}: {axis} for up to {self.phase_budget} iterations{calls}, starting "
                f"from iteration {self.best['iteration']}'s candidate ({why}).")

    def _end_phase(self, ctx: SearchContext, iteration: int, batch: Sequence[dspy.Example]) -> None:
        """Record the phase, hand on the best candidate so far, and decide what comes next."""
        start_score = self.phase_start["score"]
        best = Candidate.from_dict(self.best["candidate"])
        contenders = [(best, self.best)]
        if self.phase_best is not None:
            contenders.append((Candidate.from_dict(self.phase_best["candidate"]), self.phase_best))
        # Compare on one batch: with minibatches, scores of different iterations are not comparable.
        results = ctx.evaluate_many([c for c, _ in contenders], batch, label="auto: phase end")
        (winner, entry), score = max(zip(contenders, (r.mean or 0.0 for r in results), strict=True),
                                     key=lambda pair: pair[1])  # ties keep the earlier best
        self.best = {**entry, "score": score}
        self.phases.append({
            "axis": self.axis,
            "iterations": self.in_phase,
            "metric_calls": ctx.evaluator.usage.search_calls - self.phase_calls_start,
            "first_iteration": self.phase_start["iteration"],
            "score_before": start_score,
            "score_after": score,
            "gain": None if start_score is None else round(score - start_score, 4),
            "handed_on_iteration": self.best["iteration"],
        })
        self.sub = None
        self.axis = None
        gain = self.phases[-1]["gain"]
        if len(self.phases) >= self.max_phases:
            self.finished = f"auto ran {len(self.phases)} phases (max_phases)"
        elif len(self.phases) >= self.min_phases and gain is not None and gain <= NO_GAIN:
            self.finished = f"auto converged: phase {len(self.phases)} ({self.phases[-1]['axis']}) brought no gain"
        elif iteration < ctx.config.max_iterations:
            self.next_axis = self._choose(ctx)

    def _choose(self, ctx: SearchContext, axes: Sequence[str] | None = None) -> tuple[str, str]:
        """The next axis (of `axes`, default all allowed) and why: the reasoning model's choice,
        else the deterministic rule."""
        axes = list(axes or self.axes)
        history = json.dumps(self.phases) if self.phases else "[] (no phase has run yet)"

        def check(reply: dspy.Prediction, truncated: bool, attempt: int) -> tuple[str, str]:
            axis = str(reply.get("axis") or "").strip().lower()
            if axis not in axes:
                raise ProposalRejected(f"axis {axis!r} is not one of {', '.join(axes)}")
            return axis, f"chosen by the reasoning model: {' '.join(str(reply.get('reason') or '').split())[:300]}"

        try:
            return ctx.proposer.ask(ChooseNextAxis, check, phase_history=history, available_axes=axes)
        except ProposalRejected as exc:
            return self._fallback(axes), f"deterministic rule (the reasoning model's choice was refused: {exc})"

    def _fallback(self, axes: Sequence[str]) -> str:
        """An untried axis (cheapest first), else the one with the best gain so far."""
        tried = {p["axis"] for p in self.phases}
        for axis in FALLBACK_ORDER:
            if axis in axes and axis not in tried:
                return axis
        gains: dict[str, float] = {}
        for p in self.phases:
            gains[p["axis"]] = max(gains.get(p["axis"], float("-inf")), p["gain"] or 0.0)
        return max(axes, key=lambda a: (gains.get(a, 0.0), -FALLBACK_ORDER.index(a)))

    # -- resume -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "axis": self.axis,
            "sub_state": self.sub.state_dict() if self.sub is not None else None,
            "next_axis": list(self.next_axis) if self.next_axis else None,
            "in_phase": self.in_phase,
            "phase_budget": self.phase_budget,
            "phase_calls": self.phase_calls,
            "phase_calls_start": self.phase_calls_start,
            "step_end": self.step_end,
            "phase_start": self.phase_start,
            "phases": self.phases,
            "best": self.best,
            "phase_best": self.phase_best,
            "finished": self.finished,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from reflex_dspy.strategies import get_strategy

        self._reset()
        self.axis = state["axis"]
        if self.axis is not None:
            self.sub = get_strategy(self.axis, self.metric, **self.axis_params.get(self.axis, {}))
            self.sub.load_state_dict(state["sub_state"])
        self.next_axis = tuple(state["next_axis"]) if state.get("next_axis") else None
        self.in_phase = state["in_phase"]
        self.phase_budget = state["phase_budget"]
        self.phase_calls = state.get("phase_calls")  # absent in checkpoints from before call shares
        self.phase_calls_start = state.get("phase_calls_start", 0)
        self.step_end = state.get("step_end", 0)
        self.phase_start = state.get("phase_start")
        self.phases = state["phases"]
        self.best = state["best"]
        self.phase_best = state["phase_best"]
        self.finished = state["finished"]
