"""Auto: chains the other strategies in phases, and spends its budget where the gain is measured.

A run is a sequence of phases, each one strategy along one axis (structural, iterative,
fewshot, joint, pdo) on the candidate handed on by the previous phases: the best candidate so
far, not the last one, so a phase that regressed costs nothing but its calls. Which axis runs
next, and for how many calls and iterations, is decided by `allocation.Allocator` from the
measured gains, never by the reasoning model (which still writes the instructions inside each
phase): every axis first gets a cheap probe, then the rest of the budget goes to the axes whose
phases gained most, by successive halving.

Why: with a weak reasoning model, the model's own opinion of which axis to try next was often
wrong (on an unseen date task auto stopped after 96 of 150 calls, having never tried demos,
which alone reached 0.71). Measured gains find the lever the data shows. A run ends as
"converged" only when every axis has been probed, the last phase gained nothing and at most
`CONVERGE_LEFT` of the run's whole budget is left, the calls held back to confirm the pick counted
as unspent (`allocation.converge_calls`); otherwise it runs until the budget, `max_iterations` or
the score threshold stops it. Each phase's choice and the gains behind it are in the first
iteration's reasoning of the phase, in every iteration's `details["auto"]`, and in `phases`.
A phase also ends when its last `IDLE_STEPS` steps measured nothing new (every score came from
the cache): its strategy has nothing left to try, and its iterations are better spent elsewhere.
A later phase of an axis takes up what the earlier ones tried (`Strategy.memory`: the demo sets
drawn, the rewrite log, the layouts' records), so it tries something new. Why: started afresh, a
rung's search proposed exactly what the probe had (a greedy model, the same handed-on candidate),
scored nothing new, and its "no gain" counted towards convergence.

Before the probes, when the instructions lack what the data states plainly (the label set, the
JSON keys, the date form: `TaskFacts.missing_from`), auto's opening step adds just those sentences
and keeps them only when they score strictly better where phases are measured. Why: on the bench
that sentence was the whole gain of the first probe in most runs; credited to the probe's axis
(iterative), it won that axis the first rung, where no rewrite ever gained more, while the demo
phases that did gain were left the crumbs. Measured apart, each axis's gain is its own.

What is handed on, like what the run finally picks, follows `selection.PickRule`: instructions the
reasoning model wrote must beat the user's words (with the data's facts) by more than
`rewrite_margin` validation examples. Why: a weak model's rewrite that names one label won an
8-example validation by one example, was handed on, and every later demo phase built on it; the
user's words with the label set and labeled demos, which BootstrapFewShotWithRandomSearch finds,
were never tried, and scored higher on test.

A phase runs on the part of the batch its share affords (a structural round scores every
layout on each example), so the probes stay cheap and leave most of the budget to the axes that
gained, and a rung's arms each get their turn (a full-batch iterative step cost 35 calls where its
rung share was 6 on the bench, and the arms after it got none). Every phase's gain is measured on
validation (the best of the phase's candidates against the one it was handed), where the
lifecycle has scored each candidate already and no example ever lent a demo; only a run without
a validation split of at least `MIN_PROBE_BATCH` examples measures on the batch the phase ran on,
minus its demos' sources. Where validation measures, the opening step and a demo phase's steps
are scored there only, not on the batch too: a batch score would decide nothing (what is handed
on is decided on validation), so a demo set costs one validation pass, as in
BootstrapFewShotWithRandomSearch, and may draw on all of train (a batch score must leave its
demos' sources out, which capped sets at 12 of 16 train examples).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Annotated, Any

import dspy

from reflex_dspy.candidate import Candidate, content_sources
from reflex_dspy.data import example_id
from reflex_dspy.errors import ReflexError
from reflex_dspy.evaluation import EvalResult
from reflex_dspy.proposals import with_fact
from reflex_dspy.search import fmt_score
from reflex_dspy.selection import PickRule
from reflex_dspy.strategies.allocation import (
    CONVERGE_LEFT,
    NO_GAIN,
    PROBE_FRACTION,
    Allocator,
    Plan,
    converge_calls,
)
from reflex_dspy.strategies.base import SearchContext, Step, Strategy
from reflex_dspy.strategies.params import STRATEGY_PARAMS

AXES = ("structural", "iterative", "fewshot", "joint", "pdo")
PROBE_ORDER = ("iterative", "fewshot", "joint", "structural", "pdo")  # cheapest step first
MIN_PROBE_BATCH = 4  # fewer examples than this measure no gain worth acting on
# Candidates one step of an axis scores per batch example (the parent mostly comes from the cache).
STEP_EVALS = {"iterative": 2, "fewshot": 2, "joint": 2, "pdo": 3}
# Axis parameters auto sets unless `axis_params` says otherwise: its rewrites meet the control that
# states only what the data shows, so a weak reasoning model's own words stay only when they score;
# its demo phases draw labeled sets first, which need no bootstrap, so a probe's share buys a set.
AXIS_DEFAULTS: dict[str, dict[str, Any]] = {"iterative": {"grounded_control": True},
                                            "fewshot": {"set_kinds": ["labeled", "rule", "random"]}}
# Where validation measures the phases, the demo axes score their candidates there only: it decides
# what is handed on, so a batch score would decide nothing (and would keep demos' sources out of it).
VAL_PARAMS: dict[str, dict[str, Any]] = {"fewshot": {"score_on_val": True}, "joint": {"score_on_val": True}}
IDLE_STEPS = 2  # a phase whose last this many steps measured nothing new (all cached) has nothing left to try


FACTS = "facts"  # the opening step's phase name: not an axis, it runs once before the probes


def stated_facts(ctx: SearchContext, candidate: Candidate) -> dict[str, str]:
    """Per predictor whose instructions lack what the data states plainly, the sentence stating it."""
    out = {}
    for name, state in candidate.predictors.items():
        facts = ctx.facts.get(name)
        if facts is not None and (fix := facts.missing_from(state.instructions)):
            out[name] = fix
    return out


@dataclass
class AutoState:
    """Auto's search state between steps, all of it JSON in a checkpoint (the running phase's own
    strategy keeps its state apart, under `sub_state`)."""

    alloc: Allocator | None = None
    plan: Plan | None = None  # the phase running now, or the next one
    axis: str | None = None  # the axis of the phase running now
    in_phase: int = 0
    idle: int = 0  # consecutive steps of this phase that cost no metric call
    phase_budget: int = 0
    batch_cap: int | None = None  # a phase's part of the batch, when its share affords no more
    phase_calls_start: int = 0  # search calls spent when the phase began
    step_end: int = 0  # search calls spent when the previous step ended
    phases: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None  # {"candidate", "score", "iteration"} over all phases
    phase_entries: list[dict[str, Any]] = field(default_factory=list)  # this phase's scored candidates
    phase_start: dict[str, Any] | None = None  # {"iteration"} of the phase's first step
    finished: str | None = None
    facts_pending: bool = False  # the opening step (the data's facts) is still to run
    initial: dict[str, Any] | None = None  # the user's candidate: what `rewrite_margin` protects
    on_val: bool = False  # phases are measured on validation (it has MIN_PROBE_BATCH examples or more)
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)  # per axis: what its phases tried

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AutoState:
        if "alloc" not in data:
            raise ReflexError("this checkpoint is from an older auto (axes chosen by the reasoning model); "
                              "it cannot be resumed by this version: start a new run")
        known = {f.name for f in fields(cls)} - {"alloc", "plan", "phase_entries"}
        entries = data.get("phase_entries") or ([data["phase_best"]] if data.get("phase_best") else [])
        return cls(alloc=Allocator.from_dict(data["alloc"]) if data.get("alloc") else None,
                   plan=Plan(**data["plan"]) if data.get("plan") else None, phase_entries=entries,
                   **{k: v for k, v in data.items() if k in known})


class Auto(Strategy):
    """Phases over the strategy axes, budget by measured gain; see the module docstring.

    Parameters: `axes` (those allowed, default all five), `probe_fraction` (0.4 of the budget for
    all probes together), `max_phases` (16), `min_phases` (1) before auto may declare convergence,
    `start_structural` (False: True probes structural first), `phase_iterations` (per-axis caps
    on a phase's iterations), `axis_params` (per-axis strategy parameters), `state_facts` (True:
    the opening step tries the data's facts on their own; False leaves them to the axes),
    `rewrite_margin` (1: validation examples by which model-written instructions must beat the
    user's words to be handed on or picked; selection.PickRule).
    """

    name = "auto"

    def __init__(
        self,
        metric: Any = None,
        *,
        max_phases: int = 16,
        min_phases: int = 1,
        start_structural: bool = False,
        phase_iterations: dict[str, int] | None = None,
        axis_params: Annotated[dict[str, dict[str, Any]] | None, STRATEGY_PARAMS] = None,
        axes: Sequence[str] = AXES,
        probe_fraction: float = PROBE_FRACTION,
        state_facts: bool = True,
        rewrite_margin: int = 1,
    ) -> None:
        if not 1 <= min_phases <= max_phases:
            raise ValueError("need 1 <= min_phases <= max_phases")
        if not 0.0 < probe_fraction < 1.0:
            raise ValueError("probe_fraction must be between 0 and 1")
        unknown = set(axes) - set(AXES) | set(phase_iterations or {}) - set(AXES) | set(axis_params or {}) - set(AXES)
        if unknown:
            raise ValueError(f"unknown axis {sorted(unknown)[0]!r} (axes: {', '.join(AXES)})")
        if not axes:
            raise ValueError("axes must name at least one axis")
        if rewrite_margin < 0:
            raise ValueError("rewrite_margin must be at least 0")
        if start_structural and "structural" not in axes:
            raise ValueError("start_structural needs the structural axis")
        super().__init__(
            metric, max_phases=max_phases, min_phases=min_phases, start_structural=start_structural,
            phase_iterations=dict(phase_iterations or {}), axis_params=dict(axis_params or {}), axes=list(axes),
            probe_fraction=probe_fraction, state_facts=state_facts, rewrite_margin=rewrite_margin,
        )
        self._reset()

    def _reset(self) -> None:
        self.sub: Strategy | None = None  # the phase's own strategy (its state is checkpointed apart)
        self.s = AutoState()

    @property
    def phases(self) -> list[dict[str, Any]]:
        """Every finished phase: axis, kind, why, iterations, calls and measured gain."""
        return self.s.phases

    def probe_order(self) -> list[str]:
        order = [a for a in PROBE_ORDER if a in self.axes]
        if self.start_structural:
            order = ["structural", *(a for a in order if a != "structural")]
        return order

    def _params(self, axis: str) -> dict[str, Any]:
        """An axis's strategy parameters: auto's defaults (`AXIS_DEFAULTS`, and `VAL_PARAMS` where
        validation measures; those the axis's registered strategy takes) under the user's."""
        from reflex_dspy.strategies import strategy_class

        takes = inspect.signature(strategy_class(axis).__init__).parameters
        ours = {**AXIS_DEFAULTS.get(axis, {}), **(VAL_PARAMS.get(axis, {}) if self.s.on_val else {})}
        defaults = {k: v for k, v in ours.items() if k in takes}
        return {**defaults, **self.axis_params.get(axis, {})}

    # -- lifecycle hooks --------------------------------------------------------------------
    def start(self, ctx: SearchContext, initial: Candidate) -> None:
        self._reset()
        self.s.best = {"candidate": initial.to_dict(), "score": None, "iteration": 0}
        self.s.initial = initial.to_dict()
        self.s.on_val = len(ctx.valset) >= MIN_PROBE_BATCH
        self.s.step_end = ctx.spent
        self.s.alloc = Allocator(self.probe_order(), ctx.budget_left, ctx.config.max_iterations,
                                 self.probe_fraction, converge_left=converge_calls(ctx.budget, ctx.held))
        self.s.plan = self.s.alloc.next_plan(self.s.phases, ctx.budget_left, ctx.config.max_iterations)
        self.s.facts_pending = self.state_facts and bool(stated_facts(ctx, initial))

    def done(self) -> str | None:
        return self.s.finished

    def step(self, ctx: SearchContext, iteration: int, batch: Sequence[dspy.Example]) -> Step:
        if self.sub is None and self.s.facts_pending:
            return self._facts_step(ctx, iteration, batch)
        opening = None
        if self.sub is None:
            opening = self._begin_phase(ctx, iteration, batch)
        step = self.sub.step(ctx, iteration, batch if self.s.batch_cap is None else batch[: self.s.batch_cap])
        if (self.s.batch_cap and len(ctx.valset) < MIN_PROBE_BATCH and step.score is not None
                and step.score >= ctx.config.score_threshold):
            self._rescore(ctx, step, batch)
        step.phase = self.s.axis
        self.s.in_phase += 1
        if step.score is not None or self.s.on_val:  # on val the lifecycle scores it
            self.s.phase_entries.append({"candidate": step.candidate.to_dict(), "score": step.score,
                                       "iteration": iteration})
        prefix = f"[{self.s.axis} phase {len(self.s.phases) + 1}]"
        step.reasoning = f"{prefix} {opening}\n\n{step.reasoning}" if opening else f"{prefix} {step.reasoning}"
        step.details = {**step.details, "phase_number": len(self.s.phases) + 1,
                        "auto": {"kind": self.s.plan.kind, "why": self.s.plan.why, "evidence": self.s.plan.evidence,
                                 "share_calls": self.s.plan.calls, "share_iterations": self.s.phase_budget,
                                 "probe_batch": self.s.batch_cap}}
        # One step's cost: this step's calls plus the validation of the previous one.
        spent_now = ctx.spent
        step_cost, self.s.step_end = spent_now - self.s.step_end, spent_now
        share = self.s.plan.calls
        share_spent = share is not None and spent_now - self.s.phase_calls_start + step_cost > share
        self.s.idle = self.s.idle + 1 if step_cost == 0 else 0
        if (self.s.in_phase >= self.s.phase_budget or share_spent or self.sub.done() is not None
                or self.s.idle >= IDLE_STEPS):
            self._end_phase(ctx, iteration, batch)
        return step

    @staticmethod
    def _rescore(ctx: SearchContext, step: Step, batch: Sequence[dspy.Example]) -> None:
        """A probe's score on its few examples must not stop the run at the threshold (without val the
        lifecycle reads the step's score): a candidate that reaches it is scored on the whole batch
        (minus its demos' sources), and its delta is dropped since the parent was scored elsewhere."""
        left_out = content_sources(step.candidate, batch)
        scored_on = [ex for ex in batch if example_id(ex) not in left_out]
        if scored_on:
            step.result = ctx.evaluate(step.candidate, scored_on, label="auto: probe re-scored on the batch")
            step.parent_score = None
            step.details = {**step.details, "probe_rescored_on": len(scored_on)}

    def patience_spent(self, ctx: SearchContext, iteration: int, batch: Sequence[dspy.Example]) -> bool:
        """A phase that stalls ends there; the run goes on with the next axis unless auto is done."""
        if self.sub is not None:
            self._end_phase(ctx, iteration, batch)
        return self.s.finished is None

    def _facts_step(self, ctx: SearchContext, iteration: int, batch: Sequence[dspy.Example]) -> Step:
        """The opening step: the handed-on instructions plus the sentences the data states, kept
        only when strictly better where phases are measured (ties keep the user's words)."""
        self.s.facts_pending = False
        calls_start = ctx.spent
        start = Candidate.from_dict(self.s.best["candidate"])
        fixes = stated_facts(ctx, start)
        candidate = start
        for name, fix in fixes.items():
            candidate = candidate.with_instructions(name, with_fact(start.predictors[name].instructions, fix))
        on_val = self.s.on_val
        screen = [] if on_val else list(batch[:MIN_PROBE_BATCH])
        parent_eval, result = (ctx.evaluate_many([start, candidate], screen, label=f"iter {iteration}: the data's facts")
                               if screen else (EvalResult(start.fingerprint, {}), EvalResult(candidate.fingerprint, {})))
        scored_on = self._measuring_set(ctx, screen, [])
        before, after = (r.mean or 0.0 for r in ctx.evaluate_many([start, candidate], scored_on, label="auto: phase end"))
        adopted = after > before
        if adopted:
            self.s.best = {"candidate": candidate.to_dict(), "score": after, "iteration": iteration}
        where = "validation" if on_val else "the batch"
        why = ("the instructions lack what the data states plainly; that sentence is tried on its own before the "
               "probes, so no axis is credited with its gain")
        self.s.phases.append({
            "axis": FACTS, "kind": "opening", "why": why, "iterations": 1, "metric_calls": ctx.spent - calls_start,
            "first_iteration": iteration, "score_before": before, "score_after": max(before, after),
            "scored_on": len(scored_on), "gain": round(max(after - before, 0.0), 4),
            "handed_on_iteration": self.s.best["iteration"]})
        self.s.step_end = ctx.spent
        verdict = "kept: strictly better" if adopted else "not kept: no better (the user's words stay)"
        step = Step(candidate, result, parent_eval.mean,
                    reasoning=(f"[{FACTS} phase 1] Opening step: {why}. Added: {' '.join(fixes.values())!r}. "
                               f"{fmt_score(after)} against {fmt_score(before)} on {where} ({len(scored_on)} "
                               f"examples): {verdict}."),
                    change_summary=f"stated what the data shows: {' '.join(fixes.values())}",
                    predictor=next(iter(fixes)),
                    details={"phase_number": 1, "facts": {"added": fixes, "adopted": adopted, "before": before,
                                                          "after": after, "decided_on": where},
                             "auto": {"kind": "opening", "why": why, "evidence": {}, "share_calls": None,
                                      "share_iterations": 1, "probe_batch": len(screen)}})
        step.phase = FACTS
        return step

    # -- phases -----------------------------------------------------------------------------
    def _begin_phase(self, ctx: SearchContext, iteration: int, batch: Sequence[dspy.Example]) -> str:
        from reflex_dspy.strategies import get_strategy

        plan = self.s.plan
        self.s.axis = plan.axis
        self.sub = get_strategy(plan.axis, self.metric, **self._params(plan.axis))
        left = ctx.config.max_iterations - iteration + 1
        cap = self.phase_iterations.get(plan.axis) or plan.iterations
        self.s.phase_budget = max(min(plan.iterations, cap, left), 1)
        self.s.batch_cap, cap_note = self._phase_batch(ctx, plan, len(batch))
        self.s.in_phase = self.s.idle = 0
        self.s.phase_calls_start = ctx.spent
        self.s.phase_entries = []
        handed_on = Candidate.from_dict(self.s.best["candidate"])
        self.s.phase_start = {"iteration": iteration}
        self.sub.start(ctx, handed_on)
        self.sub.recall(self.s.memory.get(plan.axis, {}))
        calls = "" if plan.calls is None else f" and {plan.calls} metric calls"
        return (f"Phase {len(self.s.phases) + 1} ({plan.kind}): {plan.axis} for up to {self.s.phase_budget} iterations"
                f"{calls}, starting from iteration {self.s.best['iteration']}'s candidate. Why: {plan.why}.{cap_note}")

    def _phase_batch(self, ctx: SearchContext, plan: Plan, batch_size: int) -> tuple[int | None, str]:
        """How much of the batch a phase's steps run on: what its share affords, unless its
        candidates are scored on validation only (`VAL_PARAMS`)."""
        if self._params(plan.axis).get("score_on_val") and self.s.on_val:
            return None, (" Its candidates are scored on validation only, where every candidate is scored anyway "
                          "and what is handed on is decided: a batch score would decide nothing.")
        return self._share_batch(plan, batch_size)

    def _share_batch(self, plan: Plan, batch_size: int) -> tuple[int | None, str]:
        """How much of the batch a phase's share affords: its share over the candidates one step
        scores per example (a structural round scores every layout). A probe is cheap by
        construction (at 150 calls on a 16-example batch, five full-batch probes would spend the
        whole budget), and a rung's arm keeps to its share so the arms after it get theirs."""
        if plan.calls is None:
            return None, ""
        per_example = STEP_EVALS.get(plan.axis, 2)
        if plan.axis == "structural":
            from reflex_dspy.strategies.structural import Structural

            per_example = Structural(**self._params("structural")).variants_per_round + 1
        affordable = max(plan.calls // per_example, MIN_PROBE_BATCH)
        if affordable >= batch_size:
            return None, ""
        what = "probe" if plan.kind == "probe" else "phase"
        return affordable, (f" A step scores about {per_example} candidates on each batch example, so this {what} "
                            f"runs, and its gain is measured, on {affordable} of the {batch_size} batch examples.")

    def _phase_picks(self, ctx: SearchContext) -> list[dict[str, Any]]:
        """The phase's candidates that meet the handed-on one at the phase end: every one of them when
        the gain is measured on validation (their scores there are already paid for: the lifecycle
        scores each iteration's candidate on val), else the one with the best batch score."""
        if len(ctx.valset) >= MIN_PROBE_BATCH:
            seen = {Candidate.from_dict(self.s.best["candidate"]).fingerprint}
            picks = []
            for entry in self.s.phase_entries:
                if (fp := Candidate.from_dict(entry["candidate"]).fingerprint) not in seen:
                    seen.add(fp)
                    picks.append(entry)
            return picks
        scored = [e for e in self.s.phase_entries if e["score"] is not None]
        best = max(scored, key=lambda e: e["score"], default=None)  # ties: earlier
        return [best] if best is not None else []

    def _measuring_set(self, ctx: SearchContext, batch: Sequence[dspy.Example],
                       contenders: Sequence[Candidate]) -> list[dspy.Example]:
        """Where a phase's gain is measured: validation when it has MIN_PROBE_BATCH examples, else
        the batch the phase ran on minus the examples any contender's demos came from.

        Validation never lends a demo, so a demo phase is measured on as many examples as any other
        (on a probe's few batch examples most had lent demos, and demos measured no gain), and its
        scores cost nothing new: the lifecycle scores every iteration's candidate there anyway.
        """
        if len(ctx.valset) >= MIN_PROBE_BATCH:
            return list(ctx.valset)
        batch = batch if self.s.batch_cap is None else batch[: self.s.batch_cap]  # a probe is measured where it ran
        left_out = set().union(*(content_sources(c, batch) for c in contenders))
        return [ex for ex in batch if example_id(ex) not in left_out]

    def _end_phase(self, ctx: SearchContext, iteration: int, batch: Sequence[dspy.Example]) -> None:
        """Record the phase with its measured gain, hand on the best candidate so far, plan the next."""
        contenders = [(Candidate.from_dict(e["candidate"]), e) for e in [self.s.best, *self._phase_picks(ctx)]]
        scored_on = self._measuring_set(ctx, batch, [c for c, _ in contenders])
        if scored_on:
            results = ctx.evaluate_many([c for c, _ in contenders], scored_on, label="auto: phase end")
            scores = [r.mean or 0.0 for r in results]
            start_score = scores[0]
            pick = self._rule(ctx).best([(c, s) for (c, _), s in zip(contenders, scores, strict=True)], len(scored_on))
            entry, score = contenders[pick][1], scores[pick]
        else:  # every batch example lent a demo: nothing honest to compare on, the best so far stays
            entry, score, start_score = self.s.best, self.s.best["score"], None
        self.s.best = {**entry, "score": score}
        self.s.phases.append({
            "axis": self.s.axis,
            "kind": self.s.plan.kind,
            "why": self.s.plan.why,
            "iterations": self.s.in_phase,
            "metric_calls": ctx.spent - self.s.phase_calls_start,
            "first_iteration": self.s.phase_start["iteration"],
            "score_before": start_score,
            "score_after": score,
            "scored_on": len(scored_on),
            "gain": None if start_score is None else round(score - start_score, 4),
            "handed_on_iteration": self.s.best["iteration"],
        })
        self.s.memory[self.s.axis] = self.sub.memory()
        self.sub, self.s.axis, self.s.plan = None, None, None
        self.s.finished = self._finish_reason(ctx, iteration)
        if self.s.finished is None and iteration < ctx.config.max_iterations:
            self.s.plan = self.s.alloc.next_plan(self.s.phases, ctx.budget_left,
                                             ctx.config.max_iterations - iteration)
            if self.s.plan is None:
                self.s.finished = ("auto converged: every axis probed, and the last phase of each measured nothing "
                                 "new (its strategy had nothing left to try)")

    def _rule(self, ctx: SearchContext) -> PickRule:
        """The lifecycle's pick rule where phases are measured on validation (where it picks too);
        on the batch the plain best score (the lifecycle picks by train score there, with no margin)."""
        on_val = self.s.on_val and self.s.initial is not None
        initial = Candidate.from_dict(self.s.initial or self.s.best["candidate"])
        return PickRule(initial, ctx.facts, self.rewrite_margin if on_val else 0)

    def _finish_reason(self, ctx: SearchContext, iteration: int) -> str | None:
        """Why auto stops now, or None: never for lack of gain while an axis is untried, an arm of
        the running rung has not had its turn, or more than CONVERGE_LEFT of the budget is left."""
        last = self.s.phases[-1]
        if len(self.s.phases) >= self.max_phases:
            return f"auto ran {len(self.s.phases)} phases (max_phases)"
        no_gain = last["gain"] is not None and last["gain"] <= NO_GAIN
        if (no_gain and len(self.s.phases) >= self.min_phases and not self.s.alloc.untried(self.s.phases)
                and not self.s.alloc.queue
                and self.s.alloc.spent_enough(ctx.budget_left, ctx.config.max_iterations - iteration)):
            return (f"auto converged: every axis probed, phase {len(self.s.phases)} ({last['axis']}) brought no gain "
                    f"and at most {CONVERGE_LEFT:.0%} of the budget is left")
        return None

    # -- resume -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**self.s.to_dict(), "sub_state": self.sub.state_dict() if self.sub is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from reflex_dspy.strategies import get_strategy

        self._reset()
        self.s = AutoState.from_dict(state)
        if self.s.axis is not None:
            self.sub = get_strategy(self.s.axis, self.metric, **self._params(self.s.axis))
            self.sub.load_state_dict(state["sub_state"])
