"""Delegate the search to `dspy.GEPA`, under the run's splits, accounting and persistence.

GEPA runs once, in the first iteration, on the train split only (the run's val split stays
the lifecycle's, for selection). Its candidates are then emitted one per iteration, each
scored through the one evaluator on the iteration batch like any other strategy's, so GEPA
can be compared with the other strategies under one roof.

dspy.GEPA runs the program itself (it has no hook to route its rollouts through our
`Evaluator`), so its calls are measured here and handed to `Evaluator.count_external`: metric
calls from GEPA's own rollout count, LM calls and tokens from a usage tracker shared by all of
GEPA's threads, with the reflection model's calls kept apart from the task model's. A run with
a metric-call budget caps GEPA so that the emitted candidates can still be scored.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy
from dspy.teleprompt.gepa.instruction_proposal import InstructionProposer
from dspy.utils.usage_tracker import UsageTracker

from reflex_dspy.candidate import Candidate
from reflex_dspy.data import example_id
from reflex_dspy.errors import BudgetExhausted, UsageError
from reflex_dspy.library_logs import quiet_output
from reflex_dspy.metrics import MetricFailure, call_metric
from reflex_dspy.strategies.base import SearchContext, Step, Strategy

AUTO_LEVELS = ("light", "medium", "heavy")
MIN_SPLIT = 8  # below this many train examples GEPA reflects and tracks Pareto scores on the same ones
RESERVED_EMITS = 3  # a capped GEPA leaves budget to score this many of its candidates
MERGE_SUBSAMPLE = 5  # examples GEPA's merge proposer scores a merged candidate on
GEPA_STATE_FILE = "gepa_state.bin"  # what GEPA resumes from in its log dir
USAGE_FILE = "reflex_usage.json"  # LM usage paid so far, next to GEPA's own state in its log dir


class _DefaultAuto(str):
    """The default `auto`, told apart from an explicit "light" so `max_metric_calls=` alone works."""


DEFAULT_AUTO = _DefaultAuto("light")


class _SharedUsage(UsageTracker):
    """A DSPy usage tracker that counts every LM call made under it, from any thread.

    dspy's ParallelExecutor deep-copies the active tracker into each worker thread and never
    merges the copies back, so a plain `dspy.track_usage()` around GEPA would miss every call
    made by its parallel evaluations. Copies of this tracker are the tracker itself.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.calls = self.tokens = 0

    def __deepcopy__(self, memo: dict) -> _SharedUsage:
        return self

    def add_usage(self, lm: str, usage_entry: dict[str, Any]) -> None:
        if not usage_entry:  # DSPy reports nothing for cache hits, like the evaluator's accounting
            return
        total = usage_entry.get("total_tokens")
        if total is None:
            total = (usage_entry.get("prompt_tokens") or 0) + (usage_entry.get("completion_tokens") or 0)
        with self._lock:
            self.calls += 1
            self.tokens += total or 0


class _CountedProposer(InstructionProposer):
    """GEPA's default instruction proposer, with the reflection model's calls counted apart.

    Task and reflection model may be the same model (even the same name), so usage is told
    apart by where the call happens, not by which model made it.
    """

    def __init__(self, usage: _SharedUsage) -> None:
        super().__init__()
        self.usage = usage

    def __call__(self, candidate, reflective_dataset, components_to_update):
        with dspy.context(usage_tracker=self.usage):
            return super().__call__(candidate, reflective_dataset, components_to_update)


class _FeedbackMetric:
    """The run's metric in GEPA's five-argument form, returning its feedback when it has some.

    A metric that cannot score (`MetricFailure`) gets GEPA's failure score with the reason as
    feedback: GEPA has no notion of a failed example, and raising would abort the whole run.
    """

    def __init__(self, metric: Any) -> None:
        self.metric, self.failures, self._lock = metric, 0, threading.Lock()

    def __call__(self, gold, pred, trace=None, pred_name=None, pred_trace=None):
        try:
            scored = call_metric(self.metric, gold, pred, trace)
        except MetricFailure as exc:
            with self._lock:
                self.failures += 1
            return dspy.Prediction(score=0.0, feedback=f"The metric could not score this output: {exc}")
        if scored.feedback:
            return dspy.Prediction(score=scored.score, feedback=scored.feedback)
        return scored.score


class _OnlyOptimized:
    """GEPA component selector: round-robin over the predictors the run may change, never others."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)

    def __call__(self, state, trajectories, subsample_scores, candidate_idx, candidate) -> list[str]:
        return [self.names[state.i % len(self.names)]]


class _BudgetGuard:
    """GEPA stopper: stop before an iteration that could cost more than `limit` metric calls in all.

    GEPA checks its own `max_metric_calls` only between iterations, so it can overshoot by one
    iteration (two minibatches, or a merge subsample, plus a full Pareto-set evaluation).
    """

    def __init__(self, limit: int, next_cost: int) -> None:
        self.limit, self.next_cost = limit, next_cost

    def __call__(self, state) -> bool:
        return state.total_num_evals + self.next_cost > self.limit


class _Progress:
    """GEPA callback: progress to the run's trackers, and LM usage saved with each GEPA state."""

    def __init__(self, ctx: SearchContext, total: int | None, save) -> None:
        self.ctx, self.total, self.save = ctx, total, save

    def on_budget_updated(self, event) -> None:
        used = event["metric_calls_used"]
        self.ctx.progress("GEPA", used, max(self.total or 0, used))

    def on_state_saved(self, event) -> None:
        self.save()


@dataclass
class GepaState:
    """What a resume needs: the initial candidate, whether GEPA ran, what it found (best by GEPA's
    score first), how many of those were emitted as iterations, and GEPA's run summary."""

    initial: Candidate | None = None
    ran: bool = False
    found: list[dict[str, Any]] = field(default_factory=list)
    emitted: int = 0
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"initial": self.initial.to_dict() if self.initial else None, "ran": self.ran,
                "found": self.found, "emitted": self.emitted, "summary": self.summary}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GepaState:
        return cls(initial=Candidate.from_dict(data["initial"]) if data.get("initial") else None,
                   ran=data.get("ran", False), found=list(data.get("found", [])), emitted=data.get("emitted", 0),
                   summary=dict(data.get("summary", {})))


class GEPA(Strategy):
    """Delegates the search to `dspy.GEPA`; see the module docstring.

    Parameters: `auto` ("light"; "medium", "heavy") or `max_metric_calls` (GEPA's budget in
    metric calls, exclusive with an explicit `auto`); `reflection_minibatch_size` (3);
    `candidate_selection_strategy` ("pareto" or "current_best"); `use_merge` (True);
    `pareto_fraction` (0.5): the share of the train split GEPA tracks its Pareto scores on (the
    rest feeds its reflection minibatches); None tracks them on the whole train split, as
    dspy.GEPA does when given no valset.
    """

    name = "gepa"

    def __init__(
        self,
        metric: Any = None,
        *,
        auto: str | None = DEFAULT_AUTO,
        max_metric_calls: int | None = None,
        reflection_minibatch_size: int = 3,
        candidate_selection_strategy: str = "pareto",
        use_merge: bool = True,
        pareto_fraction: float | None = 0.5,
    ):
        if max_metric_calls is not None:
            if auto is not None and auto is not DEFAULT_AUTO:
                raise UsageError(f"set auto or max_metric_calls, not both (got auto={auto!r}, "
                                 f"max_metric_calls={max_metric_calls})")
            if max_metric_calls < 1:
                raise UsageError(f"max_metric_calls must be at least 1, got {max_metric_calls}")
            auto = None
        elif auto is None:
            raise UsageError("GEPA needs a budget: auto ('light', 'medium', 'heavy') or max_metric_calls")
        if auto is not None and auto not in AUTO_LEVELS:
            raise UsageError(f"auto must be one of {', '.join(AUTO_LEVELS)}, got {auto!r}")
        if candidate_selection_strategy not in ("pareto", "current_best"):
            raise UsageError("candidate_selection_strategy must be 'pareto' or 'current_best'")
        if reflection_minibatch_size < 1:
            raise UsageError("reflection_minibatch_size must be at least 1")
        if pareto_fraction is not None and not 0.0 < pareto_fraction < 1.0:
            raise UsageError(f"pareto_fraction must be in (0, 1) or None, got {pareto_fraction}")
        super().__init__(
            metric, auto=None if auto is None else str(auto), max_metric_calls=max_metric_calls,
            reflection_minibatch_size=reflection_minibatch_size,
            candidate_selection_strategy=candidate_selection_strategy, use_merge=use_merge,
            pareto_fraction=pareto_fraction,
        )
        self.state = GepaState()

    # -- the lifecycle's hooks ---------------------------------------------------------
    def start(self, ctx: SearchContext, initial: Candidate) -> None:
        self.state = GepaState(initial=initial)

    def done(self) -> str | None:
        if not self.state.ran or self.state.emitted < max(len(self.state.found), 1):
            return None
        if not self.state.found:
            return "GEPA found no candidate different from the initial one"
        return f"all {len(self.state.found)} GEPA candidates emitted"

    def step(self, ctx: SearchContext, iteration: int, batch: Sequence[dspy.Example]) -> Step:
        # Scored first: it is every emitted candidate's parent score, and a provider that refuses
        # our credentials fails here, loudly, instead of inside GEPA (which scores errors as 0).
        seed_eval = ctx.evaluate(self.state.initial, batch, label=f"iter {iteration}: initial")
        if not self.state.ran:
            self._run_gepa(ctx, iteration, len(batch))
        first = self.state.emitted == 0
        if not self.state.found:
            self.state.emitted += 1
            return Step(self.state.initial, seed_eval, seed_eval.mean,
                        "GEPA proposed no candidate whose instructions differ from the initial ones "
                        f"({self.state.summary.get('candidates', 0)} candidates in all, the initial one included).",
                        "GEPA found nothing new (initial kept)", details={"gepa": self.state.summary})
        entry = self.state.found[self.state.emitted]
        candidate = Candidate.from_dict(entry["candidate"])
        result = ctx.evaluate(candidate, batch, label=f"iter {iteration}: GEPA candidate {entry['index']}")
        self.state.emitted += 1
        changed = [n for n, s in candidate.predictors.items() if s != self.state.initial.predictors[n]]
        details = {"gepa_index": entry["index"], "gepa_parents": entry["parents"],
                   "gepa_score": entry["gepa_score"], "rank": self.state.emitted, "changed_predictors": changed}
        if first:
            details["gepa"] = self.state.summary
        return Step(candidate, result, seed_eval.mean, self._reasoning(entry), self._summary_line(entry),
                    predictor=changed[0] if len(changed) == 1 else None, details=details)

    def state_dict(self) -> dict[str, Any]:
        return self.state.to_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = GepaState.from_dict(state)

    # -- running GEPA --------------------------------------------------------------------
    def _split(self, ctx: SearchContext) -> tuple[list[dspy.Example], list[dspy.Example]]:
        """(reflection examples, Pareto examples), both from train, seeded and order-independent."""
        train = sorted(ctx.trainset, key=example_id)
        k = self._pareto_n(len(train))
        if k == len(train):
            return train, train
        random.Random(ctx.config.seed).shuffle(train)
        return train[k:], train[:k]

    def _pareto_n(self, train_n: int) -> int:
        """How many train examples GEPA tracks its Pareto scores on (all of them when few)."""
        if self.pareto_fraction is None or train_n < MIN_SPLIT:
            return train_n
        return min(max(round(train_n * self.pareto_fraction), 1), train_n - 1)

    def _minimum(self, pareto_n: int) -> int:
        """GEPA's calls for one step: the seed on the Pareto set, a reflective minibatch (or a
        merge's subsample), and the new candidate on the Pareto set."""
        return 2 * pareto_n + max(2 * self.reflection_minibatch_size, MERGE_SUBSAMPLE)

    def first_step_calls(self, train_n: int, batch_n: int, val_n: int) -> int | None:
        """The seed on the batch, one GEPA step, and its candidate scored on a batch and on val
        (val taken no larger than a batch), as `_limit` reserves them; GEPA's own
        `max_metric_calls` below one step is refused here too, before any model call."""
        pareto_n = self._pareto_n(train_n)
        self._check_own_budget(pareto_n)
        return batch_n + self._minimum(pareto_n) + 2 * batch_n

    def _check_own_budget(self, pareto_n: int) -> None:
        minimum = self._minimum(pareto_n)
        if self.max_metric_calls is not None and self.max_metric_calls < minimum:
            raise UsageError(f"max_metric_calls={self.max_metric_calls} is too small for one GEPA step here: "
                             f"it needs at least {minimum} (the seed on {pareto_n} Pareto examples, then a step)")

    def _limit(self, ctx: SearchContext, iteration: int, batch_n: int, pareto_n: int) -> int | None:
        """GEPA's metric-call limit: its own budget, capped by what the run can spare, or None.

        The run's share leaves room to score up to `RESERVED_EMITS` candidates (each on a batch,
        and on val, assumed no larger than a batch). Raises when not even one GEPA step fits.
        """
        minimum = self._minimum(pareto_n)
        self._check_own_budget(pareto_n)
        left = ctx.budget_left
        if left is None:
            return self.max_metric_calls
        # Reserve room to score up to RESERVED_EMITS candidates, fewer when that would leave GEPA
        # nothing (a small budget), but always one: a candidate nobody scores is wasted.
        emits = min(ctx.config.max_iterations - iteration + 1, RESERVED_EMITS)
        while emits > 1 and left - emits * 2 * batch_n < minimum:
            emits -= 1
        spare = left - emits * 2 * batch_n
        if spare < minimum:
            why = (f"{left} metric calls left: too few for one GEPA step ({minimum}) while keeping "
                   f"{emits * 2 * batch_n} to score its candidate")
            raise BudgetExhausted(why, stop_reason=f"metric-call budget too small for GEPA: {why}")
        return spare if self.max_metric_calls is None else min(spare, self.max_metric_calls)

    def _run_gepa(self, ctx: SearchContext, iteration: int, batch_n: int) -> None:
        train, pareto = self._split(ctx)
        limit = self._limit(ctx, iteration, batch_n, len(pareto))
        log_dir = ctx.workdir / "gepa" if ctx.workdir is not None else None
        # GEPA resuming from its log still scores the seed on its Pareto set first, then discards
        # that (uncounted by GEPA): paid again, so counted here and kept out of GEPA's share.
        rescored = len(pareto) if log_dir is not None and (log_dir / GEPA_STATE_FILE).exists() else 0
        if limit is not None:
            limit -= rescored
        task, reflection = _SharedUsage(), _SharedUsage()
        base = _load_usage(log_dir)  # paid by an interrupted process whose GEPA state we resume

        def usage() -> dict[str, int]:
            now = {"task_calls": task.calls, "task_tokens": task.tokens,
                   "reflection_calls": reflection.calls, "reflection_tokens": reflection.tokens}
            return {k: base.get(k, 0) + v for k, v in now.items()}

        def save() -> None:
            if log_dir is not None:
                _save_usage(log_dir, usage())

        metric = _FeedbackMetric(ctx.metric)
        next_cost = max(2 * self.reflection_minibatch_size, MERGE_SUBSAMPLE) + len(pareto)
        names = ctx.predictor_names
        all_names = [n for n, _ in ctx.student.named_predictors()]
        optimizer = dspy.GEPA(
            metric,
            auto=self.auto,
            max_metric_calls=self.max_metric_calls,
            reflection_minibatch_size=self.reflection_minibatch_size,
            candidate_selection_strategy=self.candidate_selection_strategy,
            reflection_lm=ctx.proposer.lm,
            instruction_proposer=_CountedProposer(reflection),
            component_selector=_OnlyOptimized(names) if set(names) != set(all_names) else "round_robin",
            use_merge=self.use_merge,
            num_threads=ctx.config.max_workers,
            log_dir=str(log_dir) if log_dir is not None else None,
            track_stats=True,
            seed=ctx.config.seed,
            gepa_kwargs={"stop_callbacks": [_BudgetGuard(limit, next_cost)] if limit is not None else [],
                         "callbacks": [_Progress(ctx, limit or self.max_metric_calls, save)]},
        )
        student = self.state.initial.apply(ctx.student)
        with dspy.context(lm=ctx.task_lm, adapter=ctx.adapter, usage_tracker=task), quiet_output():
            program = optimizer.compile(student, trainset=train, valset=pareto)
        save()
        results = program.detailed_results
        paid = usage()
        ctx.count_external(
            metric_calls=(results.total_metric_calls or 0) + rescored, lm_calls=paid["task_calls"],
            eval_tokens=paid["task_tokens"], reasoning_calls=paid["reflection_calls"],
            reasoning_tokens=paid["reflection_tokens"],
        )
        self.state.found = self._candidates(ctx, results)
        self.state.ran = True
        self.state.summary = {
            "candidates": len(results.candidates), "new_candidates": len(self.state.found),
            "metric_calls": results.total_metric_calls, "resumed_rescoring": rescored,
            "full_pareto_evals": results.num_full_val_evals,
            "limit": limit, "budget": "auto=" + self.auto if self.auto else self.max_metric_calls,
            "reflection_examples": len(train), "pareto_examples": len(pareto),
            "seed_score": float(results.val_aggregate_scores[0]), "metric_failures": metric.failures,
            "usage": paid, "log_dir": str(log_dir) if log_dir is not None else None,
        }

    def _candidates(self, ctx: SearchContext, results: Any) -> list[dict[str, Any]]:
        """GEPA's distinct new candidates, best by GEPA's own score first (ties: discovery order).

        Best first, so a run cut short (max_iterations, early stopping, budget) loses GEPA's
        least promising candidates, not its best.
        """
        seen = {self.state.initial.fingerprint}
        found = []
        for index, program in enumerate(results.candidates):
            candidate = Candidate.from_program(program, ctx.predictor_names)
            if candidate.fingerprint in seen:
                continue
            seen.add(candidate.fingerprint)
            found.append({
                "index": index, "candidate": candidate.to_dict(),
                "parents": [p for p in (results.parents[index] or []) if p is not None],
                "gepa_score": float(results.val_aggregate_scores[index]),
                "discovery_calls": int(results.discovery_eval_counts[index]),
            })
        return sorted(found, key=lambda e: (-e["gepa_score"], e["index"]))

    def _reasoning(self, entry: dict[str, Any]) -> str:
        s, parents = self.state.summary, entry["parents"]
        if len(parents) > 1:
            origin = "a merge of candidates " + " and ".join(map(str, parents))
        else:
            origin = f"a reflective rewrite of candidate {parents[0]}" if parents else "with no recorded parent"
        return (
            f"GEPA candidate {entry['index']}, {origin}. GEPA's mean score on its "
            f"{s.get('pareto_examples')} Pareto examples: {entry['gepa_score']:.4f} (initial: "
            f"{s.get('seed_score', float('nan')):.4f}); found after {entry['discovery_calls']} of GEPA's "
            f"{s.get('metric_calls')} metric calls; rank {self.state.emitted} of {len(self.state.found)} by GEPA's score."
        )

    @staticmethod
    def _summary_line(entry: dict[str, Any]) -> str:
        parents = entry["parents"]
        if len(parents) > 1:
            return f"GEPA candidate {entry['index']} (merge of {' and '.join(map(str, parents))})"
        return f"GEPA candidate {entry['index']} (parent {parents[0] if parents else 'none'})"


def _load_usage(log_dir: Path | None) -> dict[str, int]:
    path = log_dir / USAGE_FILE if log_dir is not None else None
    if path is None or not path.exists():
        return {}
    return {k: int(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}


def _save_usage(log_dir: Path, usage: dict[str, int]) -> None:
    """Written atomically beside GEPA's state, so a resumed GEPA knows what it already paid."""
    log_dir.mkdir(parents=True, exist_ok=True)
    tmp = log_dir / (USAGE_FILE + ".tmp")
    tmp.write_text(json.dumps(usage), encoding="utf-8")
    tmp.replace(log_dir / USAGE_FILE)
