"""Few-shot demos bootstrapped from the program's own successful traces (DSPy-style).

Every `bootstrap_rounds` iterations a teacher (the current best candidate; when the examples
carry gold outputs, plus labeled demos for the predictors whose fields the examples fill, as
DSPy's BootstrapFewShot does) runs on a fresh train sample through the one evaluator. A trace
is successful when its metric score clears the bar (a perfect score, or for a graded metric
such as a judge where nothing is perfect, the top quarter): that is what lets it work without
gold. Each successful trace gives every optimizable predictor its own demo (that step's inputs
and outputs), so multi-step programs get demos from full traces.

Each iteration tries one demo set, cycling through three kinds (the set sizes searched too,
not fixed): the selection rule's pick from the bootstrapped pool; labeled demos (gold train
examples, DSPy's LabeledFewShot, which a weak task model's few successful traces cannot
match); and a random restart (a random draw from both pools, as BootstrapFewShotWithRandomSearch
does), so the search does not only refine the rule's own order. `set_kinds` sets the cycle's
order; a bootstrap runs only when a set needs the pool, so a run that starts with labeled demos
(auto's probe: the cheapest informative draw, DSPy's own second candidate) pays for none first.
The set size is searched from measurements (`set_sizes`): the largest that fits, then 4, then the
sizes nearest the best-scoring one so far. Demos come from train examples outside the batch when
they make at least half a set, so every batch example is scored;
otherwise from the batch too, and the set is capped so that half of the batch is left to score on.
The candidate with the set is scored against the current one on the batch minus the source
examples of either candidate's demos, so no demo is ever scored on its own example. It is kept
only when strictly better. With `score_on_val` (auto sets it where validation decides what is
handed on) a set is not scored on the batch at all: it is scored on validation, which never
lends a demo, inside the step (the run's own validation score, so the lifecycle's is then free,
and the step's cost shows it, as auto's phase shares need), so a set may use every train example
and costs one validation pass, as in BootstrapFewShotWithRandomSearch.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import dspy
from pydantic import Field

from reflex_dspy.candidate import Candidate, content_sources
from reflex_dspy.data import ID_FIELD, example_id, input_text
from reflex_dspy.evaluation import EvalResult
from reflex_dspy.metrics import label_fields
from reflex_dspy.search import fmt_score
from reflex_dspy.strategies.base import SearchContext, Step, Strategy
from reflex_dspy.strategies.demo_selection import (
    SELECTION_RULES,
    PoolEntry,
    Selection,
    answer_text,
    cap_pool,
    diverse,
    select,
)
from reflex_dspy.strategies.set_sizes import best_scores, size_order, sizes_within

AGENT_TRIES = 2  # reasoning-model selections per iteration before giving up on finding an untried set
# Labeled demos the teacher gets (at least max_examples). Like DSPy's labeled teacher (16 by default),
# it must show most of a label set to produce successful traces on every label; the cost is
# prompt tokens in bootstrap evaluations only.
TEACHER_DEMOS = 8
SET_KINDS = ("rule", "labeled", "random")  # the kinds of demo set successive iterations try (default order)
# Demos may fill this share of a task model's stated context (the instructions, the input and the
# answer need the rest); a token is taken as 3 characters of the demo's JSON (English runs about 4).
CONTEXT_SHARE, CHARS_PER_TOKEN = 0.6, 3


def demos_that_fit(context_window: int | None, entries: Sequence[PoolEntry]) -> int | None:
    """How many demos of these entries' upper-quartile length fit the task model's context, or None
    when it states none. On the bench, facility_urgency's e-mails run ~210 words: a set of 12 would
    take about 3,600 of the embedded model's 4096 tokens (this estimate) before the input itself."""
    if context_window is None or not entries:
        return None
    lengths = sorted(max(len(json.dumps(d, default=str)) for d in e.demos.values()) for e in entries if e.demos)
    if not lengths:
        return None
    per_demo = lengths[len(lengths) * 3 // 4] / CHARS_PER_TOKEN
    return max(int(context_window * CONTEXT_SHARE / per_demo), 1)


def outside_first(entries: Sequence[PoolEntry], k: int, in_batch: set[str]) -> list[PoolEntry]:
    """The entries whose example is not in the batch, when they make at least half a set of `k`; else all.

    A demo's source example is left out of the batch's scoring, so demos taken from outside the
    batch keep every batch example scored (a probe on a few examples would otherwise lose most);
    a somewhat smaller set is the better trade, as sizes are searched anyway.
    """
    outside = [e for e in entries if e.example_id not in in_batch]
    return outside if 2 * len(outside) >= k else list(entries)


def success_bar(scores: Sequence[float]) -> float | None:
    """The score a trace needs to count as successful, or None when no trace stands out.

    A perfect score when any trace reached it (0/1 metrics); otherwise the top quarter of the
    sample, and never the sample's floor (a trace no better than the worst teaches nothing).
    """
    if not scores:
        return None
    top, floor = max(scores), min(scores)
    if top >= 1.0:
        return 1.0
    quartile = sorted(scores, reverse=True)[max(len(scores) // 4 - 1, 0)]
    bar = quartile if quartile > floor else top
    return bar if bar > floor or (bar > 0 and len(scores) == 1) else None


def fitting_fields(ctx: SearchContext, predictors: Sequence[str], example: dspy.Example) -> dict[str, list[str]]:
    """Each of `predictors` whose input and output fields the (gold) example fills: those can take it
    as a labeled demo (DSPy's LabeledFewShot), the others cannot."""
    if not ctx.has_gold:
        return {}
    keys = set(example.keys()) - {ID_FIELD}
    fits = {name: [*p.signature.input_fields, *p.signature.output_fields]
            for name, p in ctx.student.named_predictors() if name in predictors}
    return {name: fields for name, fields in fits.items() if set(fields) <= keys}


def labeled_entries(ctx: SearchContext, predictors: Sequence[str], examples: Sequence[dspy.Example],
                    round_: int = 0) -> list[PoolEntry]:
    """Gold examples as pool entries (score 1.0), for the predictors whose fields they fill."""
    if not examples:
        return []
    fits = fitting_fields(ctx, predictors, examples[0])
    if not fits:
        return []
    return [PoolEntry(example_id(ex), 1.0, input_text(ex), answer_text(label_fields(ex)),
                      {name: {k: ex[k] for k in fields} for name, fields in fits.items()}, round_) for ex in examples]


def traced_entries(ctx: SearchContext, result: EvalResult, predictors: Sequence[str],
                   round_: int = 0) -> list[PoolEntry]:
    """Successful traces in `result` as pool entries: each gives every predictor it ran its own demo."""
    bar = success_bar(list(result.scores.values()))
    fresh = []
    for r in result.results.values():
        if bar is None or r.score is None or r.score < bar:
            continue
        demos: dict[str, dict[str, Any]] = {}
        for step in r.trace:
            if step["predictor"] in predictors and step["predictor"] not in demos:
                demos[step["predictor"]] = {**step["inputs"], **step["outputs"]}
        if demos:
            ex = ctx.examples_by_id[r.example_id]
            fresh.append(PoolEntry(r.example_id, r.score, input_text(ex), answer_text(r.output), demos, round_))
    return fresh


@dataclass
class FewShotState:
    """What a resume needs: the candidate so far, the bootstrapped pool and which sets were tried."""

    current: Candidate | None = None
    current_sources: list[str] = field(default_factory=list)  # example ids the current demos came from
    pool: list[PoolEntry] = field(default_factory=list)
    rounds_left: int = 0  # iterations until the next bootstrap
    round: int = 0  # bootstraps so far
    variant: int = 0  # selections since the last bootstrap: each tries another set
    tried: list[str] = field(default_factory=list)  # demo sets already scored (entry keys, sorted and joined)
    sized: list[list[float]] = field(default_factory=list)  # [set size, score] of each set scored
    finished: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"current": self.current.to_dict() if self.current else None,
                "current_sources": list(self.current_sources), "pool": [e.to_dict() for e in self.pool],
                "rounds_left": self.rounds_left, "round": self.round, "variant": self.variant,
                "tried": list(self.tried), "sized": [list(p) for p in self.sized], "finished": self.finished}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FewShotState:
        return cls(current=Candidate.from_dict(data["current"]) if data.get("current") else None,
                   current_sources=list(data.get("current_sources", [])),
                   pool=[PoolEntry.from_dict(e) for e in data.get("pool", [])],
                   rounds_left=data.get("rounds_left", 0), round=data.get("round", 0),
                   variant=data.get("variant", 0), tried=list(data.get("tried", [])),
                   sized=[list(p) for p in data.get("sized", [])], finished=data.get("finished"))


class FewShot(Strategy):
    """Bootstrapped few-shot demos; see the module docstring.

    Parameters: `max_examples` (16) demos per predictor at most (the set size is searched up to
    it); `candidate_pool_size` (20) successful traces kept; `bootstrap_rounds` (3) iterations between re-bootstraps; `selection_strategy`
    ("diverse", "top_k" or "agent_curated"); `set_kinds` (rule, labeled, random) the order of the kinds of set tried;
    `score_on_val` (False) sets scored on validation only, with no batch score.
    """

    name = "fewshot"

    def __init__(self, metric: Any = None, *, max_examples: int = 16, candidate_pool_size: int = 20,
                 bootstrap_rounds: int = 3, selection_strategy: str = "diverse",
                 set_kinds: Annotated[list[Literal["rule", "labeled", "random"]], Field(min_length=1)] = SET_KINDS,
                 score_on_val: bool = False):
        if selection_strategy not in SELECTION_RULES:
            raise ValueError(f"selection_strategy must be one of {', '.join(SELECTION_RULES)}")
        if max_examples < 1 or bootstrap_rounds < 1:
            raise ValueError("max_examples and bootstrap_rounds must be at least 1")
        if candidate_pool_size < max_examples:
            raise ValueError("candidate_pool_size must be at least max_examples")
        if not set_kinds or len(set(set_kinds)) != len(set_kinds) or set(set_kinds) - set(SET_KINDS):
            raise ValueError(f"set_kinds must name each of {', '.join(SET_KINDS)} at most once")
        super().__init__(metric, max_examples=max_examples, candidate_pool_size=candidate_pool_size,
                         bootstrap_rounds=bootstrap_rounds, selection_strategy=selection_strategy,
                         set_kinds=list(set_kinds), score_on_val=score_on_val)
        self.state = FewShotState()

    # -- lifecycle hooks ------------------------------------------------------------------
    def start(self, ctx: SearchContext, initial: Candidate) -> None:
        self.state = FewShotState(current=initial, current_sources=sorted(content_sources(initial, ctx.trainset)))

    def done(self) -> str | None:
        return self.state.finished

    def step(self, ctx: SearchContext, iteration: int, batch: Sequence[dspy.Example]) -> Step:
        if self.score_on_val and ctx.valset:
            batch = []  # nothing is scored on the batch, so nothing there is kept from being a demo
        boot = None
        if (self.state.rounds_left <= 0 or not self.state.pool) and self._next_needs_pool(ctx):
            kind_at = self.state.variant % len(self.set_kinds)
            boot = self._bootstrap(ctx, iteration)
            self.state.variant = kind_at  # the fresh pool's first draw, of the kind that asked for it
        selection = self._untried(ctx, batch)
        if selection is None and boot is None:  # every set this pool can form was tried: refresh it now
            boot = self._bootstrap(ctx, iteration)
            selection = self._untried(ctx, batch)
        self.state.rounds_left -= 1
        if selection is None:
            why = "the pool is empty" if not self.state.pool else "every demo set the rule forms from the pool was tried"
            if boot is not None and boot["added"] == 0 and boot["exhaustive"]:
                self.state.finished = f"no new successful trace on all of train and {why}"
            self.state.rounds_left = 0
            return self._no_change(ctx, iteration, batch, why, boot)
        return self._try(ctx, iteration, batch, selection, boot)

    def _next_needs_pool(self, ctx: SearchContext) -> bool:
        """Whether the next set drawn needs bootstrapped traces: all but labeled sets (gold given)."""
        kind = self.set_kinds[self.state.variant % len(self.set_kinds)]
        return kind != "labeled" or not ctx.has_gold

    # -- bootstrapping ----------------------------------------------------------------------
    def _teacher(self, ctx: SearchContext, eligible: list[dspy.Example],
                 rng: random.Random) -> tuple[Candidate, list[str]]:
        """The current candidate, plus labeled demos where gold outputs fill a predictor's fields."""
        predictors = list(self.state.current.predictors)
        if not eligible or not fitting_fields(ctx, predictors, eligible[0]):
            return self.state.current, []
        sample = rng.sample(eligible, min(len(eligible), self.candidate_pool_size * 2))
        gold = labeled_entries(ctx, predictors, sample)
        # At most half of what is eligible: the rest is what the teacher's traces are bootstrapped on.
        k = min(max(self.max_examples, TEACHER_DEMOS), len(eligible) // 2, demos_that_fit(ctx.context_window, gold) or len(gold))
        chosen = diverse(gold, k, variant=self.state.round)
        teacher = self.state.current
        for name in gold[0].demos:
            teacher = teacher.with_demos(name, [*teacher.predictors[name].demos, *(e.demos[name] for e in chosen)])
        return teacher, [e.example_id for e in chosen]

    def _bootstrap(self, ctx: SearchContext, iteration: int) -> dict[str, Any]:
        """Run the teacher on a fresh train sample and pool its successful traces."""
        rng = ctx.rng  # seeded by the run and restored on resume
        seen = set(self.state.current_sources)
        teacher, labeled = self._teacher(ctx, [ex for ex in ctx.trainset if example_id(ex) not in seen], rng)
        seen |= set(labeled)  # the teacher saw these answers: their traces prove nothing
        eligible = [ex for ex in ctx.trainset if example_id(ex) not in seen]
        size = min(len(eligible), max(2 * self.candidate_pool_size, self.max_examples))
        sample = rng.sample(eligible, size)
        result = ctx.evaluate(teacher, sample, label=f"iter {iteration}: bootstrap")
        bar = success_bar(list(result.scores.values()))
        self.state.round += 1
        fresh = traced_entries(ctx, result, list(self.state.current.predictors), self.state.round)
        before = {e.key for e in self.state.pool}
        by_id = {e.example_id: e for e in self.state.pool}
        for entry in fresh:  # a newer trace of the same example replaces the old one unless it scored lower
            if entry.example_id not in by_id or entry.score >= by_id[entry.example_id].score:
                by_id[entry.example_id] = entry
        self.state.pool = cap_pool(list(by_id.values()), self.candidate_pool_size)
        added = sum(e.key not in before for e in self.state.pool)
        self.state.rounds_left, self.state.variant = self.bootstrap_rounds, 0
        return {"round": self.state.round, "sampled": size, "successful": len(fresh), "bar": bar, "added": added,
                "pool": len(self.state.pool), "teacher_labeled_demos": labeled, "exhaustive": size == len(eligible)}

    # -- selection ----------------------------------------------------------------------------
    def _untried(self, ctx: SearchContext, batch: Sequence[dspy.Example]) -> Selection | None:
        """The next selection whose demo set has not been scored yet, or None. Sizes are tried in
        `set_sizes.size_order`: the first with every kind and variant, the rest once per kind."""
        in_batch = {example_id(ex) for ex in batch}
        taken = in_batch | self._reserved(ctx)
        outside = sum(example_id(ex) not in taken for ex in ctx.trainset)
        per_kind = AGENT_TRIES if self.selection_strategy == "agent_curated" else max(len(self.state.pool), 1)
        fit = ctx.context_window and demos_that_fit(ctx.context_window, [*self.state.pool, *labeled_entries(
            ctx, list(self.state.current.predictors), ctx.trainset)])
        kinds = self.set_kinds
        sizes = size_order(self._sizes(len(batch), outside, fit), best_scores(self.state.sized))
        for n, k in enumerate(sizes):
            for _ in range(per_kind * len(kinds) if n == 0 else len(kinds)):
                variant = self.state.variant
                self.state.variant += 1
                kind = kinds[variant % len(kinds)]
                selection = self._select(ctx, kind, k, variant // len(kinds), in_batch)
                selection.details.update(variant=variant, set_kind=kind, set_size=k)
                key = "|".join(sorted(e.key for e in selection.entries))
                if selection.entries and key not in self.state.tried:
                    self.state.tried.append(key)
                    return selection
        return None

    def _sizes(self, batch_size: int, outside: int, fit: int | None = None) -> list[int]:
        """The sizes a set may have (`set_sizes.sizes_within`), capped by `max_examples` and by the
        `outside` train examples not in the batch: plus half the batch when outside is fewer than
        the batch (demos taken from the batch are left out of its scoring, so half of it stays
        scored); a small batch (auto's screen) stays wholly scored; and by the demos that `fit`
        the task model's context (`demos_that_fit`)."""
        cap = min(self.max_examples, outside if outside >= batch_size else max(outside + batch_size // 2, 1))
        return sizes_within(self.max_examples, min(cap, fit) if fit else cap)

    def _select(self, ctx: SearchContext, kind: str, k: int, variant: int, in_batch: set[str]) -> Selection:
        """A set of `kind`: the rule's pick from the bootstrapped pool, labeled demos, or a random
        restart; drawn from examples outside the batch when they are enough (`outside_first`)."""
        if kind == "rule":
            return select(self.selection_strategy, outside_first(self.state.pool, k, in_batch), k, variant,
                          proposer=ctx.proposer,
                          instructions=self.state.current.render(), facts=self._facts(ctx))
        seen = self._reserved(ctx)
        labeled = labeled_entries(ctx, list(self.state.current.predictors),
                                  [ex for ex in ctx.trainset if example_id(ex) not in seen])
        if kind == "labeled":
            return Selection(diverse(outside_first(labeled, k, in_batch), k, variant), "labeled",
                             note="labeled demos: gold train examples, greedy coverage", drawn_from=len(labeled))
        pooled = {e.example_id for e in self.state.pool}
        union = [*self.state.pool, *(e for e in labeled if e.example_id not in pooled)]
        union = outside_first(union, k, in_batch)
        chosen = ctx.rng.sample(union, min(k, len(union)))
        return Selection(chosen, "random", note=f"random restart: {len(chosen)} of {len(union)} bootstrapped and "
                                                "labeled demos", drawn_from=len(union))

    def _reserved(self, ctx: SearchContext) -> set[str]:
        """Train examples a new set may not draw on: the current demos' sources, which a batch score
        leaves out; none with `score_on_val`, where a set replaces the current demos and validation
        never lends one. Why: started from a set of all of train (auto's rung after a 16-demo probe),
        fewshot had nothing left to draw and tried no set at all."""
        return set() if self.score_on_val and ctx.valset else set(self.state.current_sources)

    @staticmethod
    def _facts(ctx: SearchContext) -> str:
        described = [ctx.facts[n].describe() for n in ctx.predictor_names if n in ctx.facts]
        return "\n".join(described) or "(none computed)"

    # -- scoring ------------------------------------------------------------------------------
    def _build(self, selection: Selection) -> tuple[Candidate, set[str]]:
        """The current candidate with the selected demos; and the source ids of all its demos."""
        candidate, sources = self.state.current, {e.example_id for e in selection.entries}
        for name in self.state.current.predictors:
            demos = [e.demos[name] for e in selection.entries if name in e.demos]
            if demos:
                candidate = candidate.with_demos(name, demos)
            elif self.state.current.predictors[name].demos:
                sources |= set(self.state.current_sources)  # this predictor keeps the current demos
        return candidate, sources

    def _try(self, ctx: SearchContext, iteration: int, batch: Sequence[dspy.Example], selection: Selection,
             boot: dict[str, Any] | None) -> Step:
        """The set against the current one on the batch minus both sets' sources; with no batch
        (`score_on_val`) not scored here: validation, where the run scores every candidate, decides."""
        candidate, sources = self._build(selection)
        parent = self.state.current
        left_out = (set(self.state.current_sources) | sources | content_sources(parent, batch)
                    | content_sources(candidate, batch))
        scored_on = [ex for ex in batch if example_id(ex) not in left_out]
        excluded = sorted({example_id(ex) for ex in batch} & left_out)
        details = {"selection_strategy": selection.rule, "selected": [e.example_id for e in selection.entries],
                   "answers": [e.answer for e in selection.entries], "selection_note": selection.note,
                   "fallback": selection.fallback, "left_out_of_batch": excluded, "scored_on": len(scored_on),
                   "pool_size": len(self.state.pool), "bootstrap": boot, "kept": False, **selection.details}
        n, demos = len(selection.entries), "demo" + "s" * (len(selection.entries) != 1)
        drawn = {"labeled": f"labeled {demos} from {selection.drawn_from} train examples",
                 "random": f"{demos} at random from {selection.drawn_from} bootstrapped and labeled"}
        summary = (f"{n} {drawn.get(selection.rule, f'{demos} by {selection.rule} from a pool of {len(self.state.pool)}')}"
                   f" (answers: {', '.join(sorted(set(details['answers'])))[:120]})")
        lines = [self._boot_line(boot)] if boot else []
        lines.append(f"Selected {n} {demos} by {selection.rule} ({selection.note}): {', '.join(details['selected'])}.")
        if selection.fallback:
            lines.append(f"The reasoning model's choice was refused ({selection.fallback}); used the diverse rule.")
        if selection.reasoning:
            lines.append(f"Model's reasoning: {selection.reasoning}")
        predictor = ctx.predictor_names[0] if len(ctx.predictor_names) == 1 else None
        if not batch:  # validation decides; its score (the run's own, no call more) also guides the size
            on_val = ctx.evaluate(candidate, ctx.valset, label=f"iter {iteration}: val") if ctx.valset else None
            self._measured(n, on_val.mean if on_val else None)
            lines.append("Not scored on the batch: validation, where every candidate is scored, decides"
                         + (f" ({fmt_score(on_val.mean)} there)." if on_val else "."))
            return Step(candidate, EvalResult(candidate.fingerprint, {}), None, "\n".join(lines), summary, predictor,
                        details)
        if not scored_on:
            return self._no_change(ctx, iteration, batch, "every batch example is a source of the demos", boot)
        parent_eval, result = ctx.evaluate_many([parent, candidate], scored_on, label=f"iter {iteration}: demos")
        self._measured(n, result.mean)
        kept = result.mean is not None and (parent_eval.mean is None or result.mean > parent_eval.mean)
        if kept:
            self.state.current, self.state.current_sources = candidate, sorted(sources)
        details["kept"] = kept
        verdict = "kept" if kept else "not kept (not strictly better)"
        lines.append(f"Scored on {len(scored_on)} batch examples ({len(excluded)} demo sources left out): "
                     f"{fmt_score(result.mean)} vs {fmt_score(parent_eval.mean)} for the current demos → {verdict}.")
        return Step(candidate, result, parent_eval.mean, "\n".join(lines), summary, predictor, details)

    def _measured(self, size: int, score: float | None) -> None:
        """Record a scored set's size and score, which choose the next sets' sizes."""
        if score is not None:
            self.state.sized.append([size, score])

    def _no_change(self, ctx: SearchContext, iteration: int, batch: Sequence[dspy.Example], why: str,
                   boot: dict[str, Any] | None) -> Step:
        """An honest iteration that changes nothing: the current candidate, scored as the parent."""
        left_out = set(self.state.current_sources) | content_sources(self.state.current, batch)
        scored_on = [ex for ex in batch if example_id(ex) not in left_out]
        if scored_on:
            result = ctx.evaluate(self.state.current, scored_on, label=f"iter {iteration}: current")
        else:
            result = EvalResult(self.state.current.fingerprint, {})
        lines = [self._boot_line(boot)] if boot else []
        lines.append(f"No demo set tried: {why}; the current candidate is kept.")
        if self.state.finished:
            lines.append(f"Stopping: {self.state.finished}.")
        predictor = ctx.predictor_names[0] if len(ctx.predictor_names) == 1 else None
        return Step(self.state.current, result, result.mean, "\n".join(lines), f"no change ({why})", predictor,
                    {"no_change": why, "selected": [], "kept": False, "pool_size": len(self.state.pool), "bootstrap": boot, "scored_on": len(scored_on),
                     "selection_strategy": self.selection_strategy})

    @staticmethod
    def _boot_line(boot: dict[str, Any]) -> str:
        teacher = (f"the current candidate + {len(boot['teacher_labeled_demos'])} labeled demos"
                   if boot["teacher_labeled_demos"] else "the current candidate")
        bar = "none stood out" if boot["bar"] is None else f"score ≥ {boot['bar']:.2f}"
        return (f"Bootstrap round {boot['round']} with {teacher} as teacher: {boot['sampled']} train examples, "
                f"{boot['successful']} successful traces ({bar}), {boot['added']} new; pool {boot['pool']}.")

    # -- persistence --------------------------------------------------------------------------
    def memory(self) -> dict[str, Any]:
        """The whole state: a later search takes the pool (its traces are sound demos whatever the
        instructions) and, on the same instructions, the sets tried, so it draws the sets after them."""
        return self.state.to_dict()

    def recall(self, memory: dict[str, Any]) -> None:
        if not memory:
            return
        past = FewShotState.from_dict(memory)
        self.state.pool, self.state.round, self.state.rounds_left = past.pool, past.round, past.rounds_left
        if past.current is not None and self._instructions(past.current) == self._instructions(self.state.current):
            # on other instructions the sets are new, and their sizes' scores are not these instructions'
            self.state.tried, self.state.variant, self.state.sized = past.tried, past.variant, past.sized

    @staticmethod
    def _instructions(candidate: Candidate) -> dict[str, str]:
        return {name: p.instructions for name, p in candidate.predictors.items()}

    def state_dict(self) -> dict[str, Any]:
        return self.state.to_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = FewShotState.from_dict(state)
