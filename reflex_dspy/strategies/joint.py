"""Joint: instructions and demos searched together, MIPROv2-style, under the one evaluator.

Why: an instruction that helps with no demos can hurt with eight, and the best demo set depends
on the instruction it goes with; searching one axis and then the other misses the pairs.

On its first step the strategy builds the search space once, on the starting candidate:
- instruction candidates per predictor: the current instructions plus `num_instructions - 1`
  grounded proposals (`Proposer.propose_instruction`, each shown a different slice of the
  failures, so they differ);
- candidate demo sets: the current demos, then `num_demo_sets - 1` sets of random size up to
  `max_demos` (16, like BootstrapFewShotWithRandomSearch), alternately labeled (gold train
  examples), bootstrapped (the starting candidate's successful traces on the batch, which the
  first step pays for anyway) and mixed.
Each later step is one trial: Optuna's TPE sampler, told every earlier trial, picks an
instruction per predictor and a demo set; the pair is scored against the best pair so far on
the batch minus the demos' source examples (no demo is scored on its own example) and kept
only when strictly better. A fresh sampler seeded by the run seed and the trial number is built
each step from the recorded trials, so a resumed run makes the same choices.

With `score_on_val` (auto sets it where validation decides what is handed on) each trial is
scored on validation instead, as MIPROv2 scores its trials: validation never lends a demo, so the
sets are not capped to leave part of the batch to score on, and a starting candidate whose demos
came from every batch example (a fewshot set of all of train) can still be searched from.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dspy

from reflex_dspy.candidate import Candidate, content_sources
from reflex_dspy.data import example_id
from reflex_dspy.evaluation import EvalResult
from reflex_dspy.proposals import ProposalRejected, compare_outputs, format_failures
from reflex_dspy.search import fmt_score
from reflex_dspy.strategies.base import SearchContext, Step, Strategy
from reflex_dspy.strategies.demo_selection import PoolEntry
from reflex_dspy.strategies.fewshot import demos_that_fit, labeled_entries, traced_entries

DEMO_SET_KINDS = ("labeled", "bootstrapped", "mixed")


def demo_sets(rng: Any, labeled: list[PoolEntry], traced: list[PoolEntry], n: int, max_demos: int) -> list[dict]:
    """`n` candidate sets (set 0: the current demos, kept as they are): random sizes up to
    `max_demos`, cycling through labeled-only, bootstrapped-first and mixed compositions."""
    sets: list[dict[str, Any]] = [{"kind": "current", "entries": []}]
    for j in range(1, n):
        kind = DEMO_SET_KINDS[(j - 1) % len(DEMO_SET_KINDS)]
        if kind == "labeled" or not traced:
            source = list(labeled)
        elif kind == "bootstrapped":
            traced_ids = {e.example_id for e in traced}
            source = rng.sample(traced, len(traced)) + [e for e in labeled if e.example_id not in traced_ids]
        else:
            by_id = {e.example_id: e for e in [*labeled, *traced]}  # a trace of an example replaces its label
            source = list(by_id.values())
        if kind != "bootstrapped":
            source = rng.sample(source, len(source))
        if not source:
            continue
        size = rng.randint(1, min(max_demos, len(source)))
        sets.append({"kind": kind, "entries": [e.to_dict() for e in source[:size]]})
    return sets


@dataclass
class JointState:
    """What a resume needs: the starting and best candidates, the search space and the trials."""

    start: Candidate | None = None
    best: Candidate | None = None
    instructions: dict[str, list[str]] = field(default_factory=dict)  # candidates per predictor
    sets: list[dict[str, Any]] = field(default_factory=list)  # demo sets
    trials: list[dict[str, Any]] = field(default_factory=list)  # {"params", "value"}
    finished: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start.to_dict() if self.start else None,
                "best": self.best.to_dict() if self.best else None, "instructions": self.instructions,
                "sets": self.sets, "trials": self.trials, "finished": self.finished}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JointState:
        return cls(start=Candidate.from_dict(data["start"]) if data.get("start") else None,
                   best=Candidate.from_dict(data["best"]) if data.get("best") else None,
                   instructions={k: list(v) for k, v in data.get("instructions", {}).items()},
                   sets=list(data.get("sets", [])), trials=list(data.get("trials", [])),
                   finished=data.get("finished"))


class Joint(Strategy):
    """Instruction candidates x demo sets, searched with Optuna's TPE; see the module docstring.

    Parameters: `num_instructions` (4, the current one included) per predictor, `num_demo_sets`
    (8, the current demos included), `max_demos` (16) per set, `startup_trials` (4) random
    trials before TPE models the scores, `score_on_val` (False: each trial on the batch minus its
    demos' sources; True: on validation).
    """

    name = "joint"

    def __init__(self, metric: Any = None, *, num_instructions: int = 4, num_demo_sets: int = 8,
                 max_demos: int = 16, startup_trials: int = 4, score_on_val: bool = False) -> None:
        if num_instructions < 1 or num_demo_sets < 1 or max_demos < 1 or startup_trials < 1:
            raise ValueError("num_instructions, num_demo_sets, max_demos and startup_trials must be at least 1")
        super().__init__(metric, num_instructions=num_instructions, num_demo_sets=num_demo_sets,
                         max_demos=max_demos, startup_trials=startup_trials, score_on_val=score_on_val)
        self.state = JointState()

    def start(self, ctx: SearchContext, initial: Candidate) -> None:
        self.state = JointState(start=initial, best=initial)

    def done(self) -> str | None:
        return self.state.finished

    # -- the search space --------------------------------------------------------------------
    def _build_space(self, ctx: SearchContext, batch: Sequence[dspy.Example]) -> list[str]:
        """Instruction candidates and demo sets, from the starting candidate's results on the batch."""
        start = self.state.start
        parent_eval = ctx.evaluate(start, batch, label="joint: starting candidate")
        notes = []
        for name in ctx.predictor_names:
            texts = [start.predictors[name].instructions]
            failures = ([r for r in parent_eval.worst(len(batch)) if r.score < 1.0]
                        or parent_eval.worst(len(batch)))
            for k in range(self.num_instructions - 1):
                shown = failures[k::max(self.num_instructions - 1, 1)] or failures
                try:
                    texts.append(self._propose(ctx, start, name, shown))
                except ProposalRejected as exc:
                    notes.append(f"instruction proposal {k + 1} for {name} refused ({exc})")
            self.state.instructions[name] = list(dict.fromkeys(texts))
        predictors = list(start.predictors)
        labeled = labeled_entries(ctx, predictors, [ex for ex in ctx.trainset])
        traced = traced_entries(ctx, parent_eval, predictors)
        # At most a third of the batch per set: the best pair's and the trial's demo sources are both
        # left out of the scoring, and a third of the batch must remain.
        size = self.max_demos if self._on_val(ctx) else min(self.max_demos, max(len(batch) // 3, 1))
        size = min(size, demos_that_fit(ctx.context_window, [*labeled, *traced]) or size)  # long inputs: fewer
        self.state.sets = demo_sets(ctx.rng, labeled, traced, self.num_demo_sets, size)
        notes.append(f"search space: {' x '.join(str(len(v)) for v in self.state.instructions.values())} instructions, "
                     f"{len(self.state.sets)} demo sets (labeled pool {len(labeled)}, bootstrapped pool {len(traced)})")
        return notes

    def _propose(self, ctx: SearchContext, start: Candidate, name: str, failures: list) -> str:
        facts = ctx.facts.get(name)
        gold = {r.example_id: ctx.examples_by_id[r.example_id] for r in failures}
        proposal = ctx.proposer.propose_instruction(
            current=start.predictors[name].instructions, facts=facts,
            failures=format_failures(failures, gold, name if len(ctx.predictor_names) > 1 else None),
            differences=compare_outputs(facts, failures, {}) if facts else "", history="", step_name=name)
        return proposal.instructions

    # -- trials --------------------------------------------------------------------------------
    def _distributions(self) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution

        dists = {f"instruction:{n}": CategoricalDistribution(tuple(range(len(v))))
                 for n, v in self.state.instructions.items()}
        dists["demo_set"] = CategoricalDistribution(tuple(range(len(self.state.sets))))
        return dists

    def _suggest(self, ctx: SearchContext) -> tuple[dict[str, int], str] | None:
        """The sampler's next pair, or the first untried pair when it repeats one; None when all were tried."""
        import optuna

        optuna.logging.set_verbosity(logging.WARNING)
        dists = self._distributions()
        sampler = optuna.samplers.TPESampler(seed=ctx.config.seed + len(self.state.trials),
                                             n_startup_trials=self.startup_trials)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        for t in self.state.trials:
            state = optuna.trial.TrialState.COMPLETE if t["value"] is not None else optuna.trial.TrialState.FAIL
            study.add_trial(optuna.trial.create_trial(params=t["params"], distributions=dists, value=t["value"],
                                                      state=state))
        params = dict(study.ask(dists).params)
        tried = {tuple(sorted(t["params"].items())) for t in self.state.trials}
        if tuple(sorted(params.items())) not in tried:
            return params, f"TPE ({len(self.state.trials)} trials seen)"
        keys = list(dists)
        for combo in itertools.product(*(d.choices for d in dists.values())):
            pair = dict(zip(keys, combo, strict=True))
            if tuple(sorted(pair.items())) not in tried:
                return pair, "TPE repeated a tried pair; took the first untried one"
        return None

    def _candidate(self, params: dict[str, int]) -> tuple[Candidate, set[str]]:
        """The starting candidate with the chosen instructions and demo set; and the demos' sources."""
        candidate = self.state.start
        for name, texts in self.state.instructions.items():
            candidate = candidate.with_instructions(name, texts[params[f"instruction:{name}"]])
        chosen = self.state.sets[params["demo_set"]]
        entries = [PoolEntry.from_dict(e) for e in chosen["entries"]]
        for name in candidate.predictors:
            demos = [e.demos[name] for e in entries if name in e.demos]
            if chosen["kind"] != "current":
                candidate = candidate.with_demos(name, demos)
        return candidate, {e.example_id for e in entries}

    def step(self, ctx: SearchContext, iteration: int, batch: Sequence[dspy.Example]) -> Step:
        notes = self._build_space(ctx, batch) if not self.state.sets else []
        suggestion = self._suggest(ctx)
        predictor = ctx.predictor_names[0] if len(ctx.predictor_names) == 1 else None
        if suggestion is None:
            self.state.finished = "every instruction x demo-set pair was tried"
            result = self._score_best(ctx, iteration, batch)
            return Step(self.state.best, result, result.mean, f"{self.state.finished}; the best pair is kept.",
                        "no change (search space exhausted)", predictor, {"no_change": self.state.finished})
        params, how = suggestion
        candidate, sources = self._candidate(params)
        if self._on_val(ctx):
            return self._trial(ctx, iteration, candidate, (params, how), notes, list(ctx.valset), on_val=True)
        left_out = sources | content_sources(self.state.best, batch) | content_sources(candidate, batch)
        scored_on = [ex for ex in batch if example_id(ex) not in left_out]
        if not scored_on:  # never score a demo on its own example: this pair cannot be measured here
            self.state.trials.append({"params": params, "value": None})
            result = self._score_best(ctx, iteration, batch)
            why = "every batch example is a source of the demos"
            return Step(self.state.best, result, result.mean, f"Picked by {how}: {params}; not scored: {why}.",
                        f"no change ({why})", predictor, {"no_change": why, "params": params})
        return self._trial(ctx, iteration, candidate, (params, how), notes, scored_on, on_val=False)

    def _on_val(self, ctx: SearchContext) -> bool:
        return self.score_on_val and bool(ctx.valset)

    def _summary(self, params: dict[str, int]) -> tuple[dict[str, Any], str]:
        """The trial's demo set and a one-line description of the pair."""
        chosen = self.state.sets[params["demo_set"]]
        size = len(chosen["entries"])
        return chosen, (f"joint trial {len(self.state.trials)}: instructions "
                        f"{', '.join(str(params[f'instruction:{n}']) for n in self.state.instructions)}, demo set "
                        f"{params['demo_set']} ({chosen['kind']}, {size} demo{'s' * (size != 1)})")

    def _trial(self, ctx: SearchContext, iteration: int, candidate: Candidate, pick: tuple[dict[str, int], str],
               notes: list[str], scored_on: list[dspy.Example], on_val: bool) -> Step:
        """One trial: the pair against the best so far on `scored_on`, kept only when strictly better.
        On validation that is the lifecycle's own score of the step's candidate (no call more), and
        the step has no batch score."""
        params, how = pick
        label = f"iter {iteration}: {'val' if on_val else 'joint trial'}"
        best_eval, result = ctx.evaluate_many([self.state.best, candidate], scored_on, label=label)
        value = result.mean if result.mean is not None else 0.0
        self.state.trials.append({"params": params, "value": value})
        kept = result.mean is not None and (best_eval.mean is None or result.mean > best_eval.mean)
        if kept:
            self.state.best = candidate
        chosen, summary = self._summary(params)
        where = (f"validation ({len(scored_on)} examples)" if on_val
                 else f"{len(scored_on)} batch examples (demo sources left out)")
        lines = [*notes, f"Picked by {how}: {summary}.",
                 f"Scored on {where}: {fmt_score(value)} vs {fmt_score(best_eval.mean)} for the best pair so far "
                 f"→ {'kept' if kept else 'not kept (not strictly better)'}."]
        details = {"params": params, "demo_set_kind": chosen["kind"], "demos": len(chosen["entries"]),
                   "scored_on": 0 if on_val else len(scored_on), "kept": kept, "sampler": how,
                   **({"trial_on_val": value} if on_val else {})}
        predictor = ctx.predictor_names[0] if len(ctx.predictor_names) == 1 else None
        if on_val:
            return Step(candidate, EvalResult(candidate.fingerprint, {}), None, "\n".join(lines), summary, predictor,
                        details)
        return Step(candidate, result, best_eval.mean, "\n".join(lines), summary, predictor, details)

    def _score_best(self, ctx: SearchContext, iteration: int, batch: Sequence[dspy.Example]) -> EvalResult:
        """The best pair on the batch minus its own demos' sources (an honest no-change score)."""
        left_out = content_sources(self.state.best, batch)
        scored_on = [ex for ex in batch if example_id(ex) not in left_out]
        if not scored_on:
            return EvalResult(self.state.best.fingerprint, {})
        return ctx.evaluate(self.state.best, scored_on, label=f"iter {iteration}: best pair")

    # -- persistence --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return self.state.to_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = JointState.from_dict(state)
