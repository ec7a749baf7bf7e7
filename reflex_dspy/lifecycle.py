"""One compile, from split to held-out test (docs/architecture.md): the state and steps of a run.

    split → baseline on test → strategy iterations on train (val after each) →
    select ONE candidate on val (else train) → evaluate exactly that one on test →
    significance → result

Held-out test is never used to choose: it is measured twice, for the baseline and for the
single selected candidate. Everything that records the run goes through the trackers; a
checkpoint after the start, each iteration and the search lets a new process continue.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import dspy

from reflex_dspy import answer_budget, library_logs
from reflex_dspy.budget_fit import check_first_step
from reflex_dspy.candidate import Candidate
from reflex_dspy.confirmation import held_back
from reflex_dspy.data import assign_ids, example_id
from reflex_dspy.errors import BudgetExhausted, ReflexError, UsageError
from reflex_dspy.eval_requests import Group
from reflex_dspy.evaluation import EvalResult, Evaluator
from reflex_dspy.heartbeat import Heartbeat
from reflex_dspy.marking import select_predictors
from reflex_dspy.measurement import measure
from reflex_dspy.metrics import label_fields
from reflex_dspy.program_inputs import check_inputs, check_labels
from reflex_dspy.proposals import Proposer, TaskFacts
from reflex_dspy.result import IterationRecord, RunResult, promotion_report
from reflex_dspy.run_info import describe_lm, run_info, trial_line
from reflex_dspy.run_pick import RunPick
from reflex_dspy.run_record import Record, open_record
from reflex_dspy.run_status import heartbeat_seconds
from reflex_dspy.search import SearchContext, restore_rng, rng_state
from reflex_dspy.splits import sample_batch, split_dataset
from reflex_dspy.stats import paired_significance
from reflex_dspy.stop_rules import (
    Budget,
    Patience,
    SearchView,
    StopRules,
)
from reflex_dspy.tracking import Trackers
from reflex_dspy.tracking.redact import redact_uri
from reflex_dspy.tracking.schema import Checkpoint

if TYPE_CHECKING:
    from reflex_dspy.run_inputs import RunInputs


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


HEARTBEAT_SECONDS = heartbeat_seconds()  # $REFLEX_HEARTBEAT_SECONDS, else 2 s



class RunLifecycle:
    """The state and steps of one compile. Kept apart from `Reflex` so a Reflex is reusable."""

    def __init__(self, inputs: RunInputs, student: dspy.Module, trainset, valset,
                 splits: Mapping[str, Sequence[str]] | None = None) -> None:
        self.owner = owner = inputs  # resolved once by Reflex.compile (run_inputs.py)
        self.config = cfg = owner.config
        self.student = student
        self.started = time.monotonic()
        self.trackers = Trackers(owner.trackers)
        self.task_lm, self.reasoning_lm = owner.task_lm, owner.reasoning_lm
        self.metric, self.strategy = owner.metric, owner.strategy

        trainset, valset = list(trainset), list(valset) if valset is not None else None
        if not trainset:
            raise UsageError("the trainset is empty")
        for where, examples in (("trainset", trainset), ("valset", valset or [])):  # before any model call
            check_inputs(student, examples, where)  # (program_inputs.py)
            check_labels(student, self.metric, examples, where)
        examples = assign_ids(trainset)
        val_override = assign_ids(valset) if valset is not None else None
        self.splits = split_dataset(
            examples, train_ratio=cfg.train_ratio, val_ratio=cfg.val_ratio, seed=cfg.seed, valset=val_override,
            pinned=splits,
        )
        self.warnings = list(self.splits.warnings)
        names = select_predictors(student, owner.optimize)  # explicit names, else marks, else all
        self.initial = Candidate.from_program(student, names)
        if not self.initial.predictors:
            raise UsageError("the program has no predictors to optimize")
        facts = self._facts(student)
        # The embedded model's answers are capped when they are short labels (answer_budget.py).
        self.task_lm, self.answer_max_tokens = answer_budget.capped(
            self.task_lm, answer_budget.label_answer_budget(student, self.initial.predictors, facts))
        budget = cfg.metric_call_budget(len(self.splits.train) + len(self.splits.val))
        self.config = cfg = cfg.for_budget(budget)  # a budget the user gave is the limit, not 10 iterations
        self.budget_limits_iterations = cfg.budget_binds(budget)  # then progress shows no iteration cap
        self.evaluator = Evaluator(
            student,
            self.metric,
            task_lm=self.task_lm,
            max_workers=cfg.max_workers,
            temperature=cfg.eval_temperature,
            budget=budget,
            seed=cfg.seed,
        )
        self.held_back = held_back(budget, len(self.splits.train), len(self.splits.val))  # confirmation.py
        self.evaluator.ledger.hold(self.held_back)
        self.evaluator.on_progress = self.trackers.on_progress
        self.evaluator.on_notice = self.trackers.on_notice
        self.evaluator.on_scored = self._trial
        self.split_of = {example_id(e): name for name in ("train", "val", "test") for e in getattr(self.splits, name)}
        self.phase = "starting"
        self.ctx = SearchContext(
            student=student,
            trainset=self.splits.train,
            valset=self.splits.val,
            evaluator=self.evaluator,
            proposer=Proposer(self.reasoning_lm, self.evaluator, source_model=cfg.source_model,
                              max_tokens=cfg.reasoning_max_tokens),
            config=cfg,
            predictor_names=sorted(self.initial.predictors),
            facts=facts,
            rng=random.Random(cfg.seed),
        )
        self.records: list[IterationRecord] = []
        self.candidates: dict[int, Candidate] = {0: self.initial}
        self.later: dict[int, IterationRecord] = {}  # iteration files a resume finds past its checkpoint
        self.record: Record | None = None
        self.initial_val: float | None = None
        self.patience = Patience(cfg.early_stopping_patience)  # val's best and iterations since, checkpointed
        self.stop_rules = StopRules.for_run(cfg.max_iterations, cfg.score_threshold, self.patience)

    def _facts(self, student: dspy.Module) -> dict[str, TaskFacts]:
        """Grounding facts for each optimizable predictor that produces a gold field."""
        gold = list(label_fields(self.splits.train[0])) if self.splits.train else []
        facts = {}
        for name, predictor in student.named_predictors():
            if name in self.initial.predictors:
                fields = [f for f in gold if f in predictor.signature.output_fields]
                if fields:
                    facts[name] = TaskFacts.from_examples(self.splits.train, fields[0])
        return facts

    # -- the run ----------------------------------------------------------------------------
    def execute(self, resume: Any = None, branch_from: tuple[str, int] | None = None) -> dspy.Module:
        if resume is None and branch_from is None:  # a branch reuses its parent's scores; a resume was checked
            check_first_step(self.strategy, self.evaluator.budget, len(self.splits.train), len(self.splits.val),
                             self.config.batch_size, self.evaluator.calls_per_example)
        interval = HEARTBEAT_SECONDS
        with Heartbeat(lambda: self.trackers.on_heartbeat({**self.status(), "interval": interval}), interval), \
                library_logs.captured() as self.library_logs:  # DSPy/LiteLLM warnings: counted, not printed
            return self._execute(resume, branch_from)

    def _trial(self, key: tuple, result: Any) -> None:
        """One scored pair for the live trials feed; called from evaluation workers."""
        if not self.trackers.listens("on_trial"):
            return
        iteration = len(self.records) + 1 if self.phase == "searching" else None
        self.trackers.on_trial(trial_line(key, result, self.phase, iteration, self.split_of.get(key[1])))

    def _status(self, phase: str, detail: str = "") -> None:
        self.phase = phase
        self.trackers.on_status(phase, detail)

    def status(self) -> dict[str, Any]:
        """The live status line: phase, iteration, metric calls against the budget, best so far."""
        oldest = self.evaluator.waiting  # (start, "task model" / "reasoning model") of the oldest call
        waiting = oldest[0] if oldest else None
        best = self._pick().best()[1] if self.records else None
        return {
            "phase": self.phase,
            "iteration": len(self.records),
            "max_iterations": None if self.budget_limits_iterations else self.config.max_iterations,
            "search_calls": self.evaluator.usage.search_calls,
            "metric_calls": self.evaluator.usage.metric_calls,
            "budget": self.evaluator.budget,
            "best": best,
            "waiting_seconds": None if waiting is None else round(time.monotonic() - waiting, 1),
            "waiting_on": oldest[1] if oldest else None,
            "concurrency": self.evaluator.limit.limit,
        }

    def _execute(self, resume: Any, branch_from: tuple[str, int] | None) -> dspy.Module:
        cfg, splits = self.config, self.splits
        info = self._info()
        try:
            record = self._open(info, resume, branch_from)
            if record is not None and record.resumed:
                self.trackers.on_resume(info, record.baseline, self.records)
            else:
                self.trackers.on_run_start(info)
            checkpoint = record.checkpoint if record is not None else None
            fresh = not (checkpoint and checkpoint.strategy_state is not None)
            baseline = record.baseline if record is not None else None
            on_val = started = None  # with the baseline, when both are due: the initial val and the start
            if baseline is None:
                self._status("evaluating baseline")
                with_val = (Group([(self.initial, splits.val)]), "val: initial") if fresh and splits.val else None
                started = (lambda: self.strategy.start(self.ctx, self.initial)) if fresh else None
                baseline, on_val = measure(self.evaluator, self.initial, "baseline", "test", splits.test,
                                           cfg.eval_runs, alongside=with_val, beside=started)
                self.trackers.on_baseline(baseline)
            elif not (record and record.resumed):
                self.trackers.on_baseline(baseline)  # a branch records its parent's baseline
            self._status("searching")
            if fresh:
                self._start(on_val[0] if on_val else None, started is not None)
            else:
                self._restore(checkpoint)
            stop_reason = checkpoint.stop_reason if checkpoint else None
            if stop_reason is None:
                stop_reason = self._search(start=len(self.records) + 1)
                self._checkpoint(len(self.records), stop_reason)
            selected, sel_score, selected_by, note, confirmation = self._pick().final()
            self._status("evaluating best", f"iteration {selected}")
            final, _ = measure(self.evaluator, self.candidates[selected], "final", "test", splits.test, cfg.eval_runs)
            self._status("finalizing")
            result = RunResult(
                strategy=self.strategy.name or type(self.strategy).__name__,
                split_sizes={"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
                held_out=splits.held_out,
                baseline=baseline,
                final=final,
                significance=paired_significance(baseline.scores, final.scores),
                selected_iteration=selected,
                selected_by=selected_by,
                selected_score=sel_score,
                selection_note=note,
                confirmation=confirmation,
                best_prompt=self.candidates[selected].render(),
                candidate=self.candidates[selected].to_dict(),
                iterations=self.records,
                initial_val_score=self.initial_val,
                stop_reason=stop_reason,
                usage=self.evaluator.usage.to_dict(),
                duration_seconds=time.monotonic() - self.started,
                score_threshold=cfg.score_threshold,
                models={"task": describe_lm(self.task_lm), "reasoning": describe_lm(self.reasoning_lm)},
                warnings=[*self.warnings, *self.evaluator.usage.warnings(), *self.library_logs.summary()],
                run_id=record.run.run_id if record else None,
                target=({"model": cfg.target_model, "source": cfg.target_source, "threshold": cfg.score_threshold,
                         "metric": cfg.target_metric} if cfg.target_source else None),
                budget=self.evaluator.budget,
                branched_from=record.branched_from if record else None,
            )
            if cfg.min_holdout_improvement is not None:
                result.promotion = promotion_report(result.improvement, result.significance,
                                                    cfg.min_holdout_improvement)
            program = self._program(result, selected)
            self.trackers.on_program(program)
            self.trackers.on_result(result)
        except BaseException as exc:
            self.trackers.on_error(exc)
            raise
        return program

    def _open(self, info: dict[str, Any], resume: Any, branch_from: tuple[str, int] | None) -> Record | None:
        """Open the run record (nothing is written before the inputs were validated)."""
        owner = self.owner
        if not owner.track:
            return None
        record = open_record(
            info, run_dir=owner.run_dir, tracking_uri=owner.tracking_uri, experiment=owner.experiment,
            use_mlflow=owner.mlflow, resume=resume, branch_from=branch_from,
        )
        self.trackers.trackers.extend(record.trackers)
        self.evaluator.on_paid = self.trackers.on_paid_call
        if record.branch_candidate is not None:
            self.initial = self.candidates[0] = record.branch_candidate
        if record.inherited:
            self.evaluator.replay(record.inherited)  # the parent's paid results: free cache hits
        if record.resumed:
            self.evaluator.replay(record.journal, record.checkpoint.evaluator if record.checkpoint else {"paid_entries": 0})
            self.records = list(record.records)
            self.candidates.update({r.iteration: Candidate.from_dict(r.candidate) for r in self.records})
            self.later = record.later
        info.update(
            run_id=record.run.run_id, run_name=record.run.path.name, run_dir=str(record.run.path.resolve()),
            created=record.run.created if record.resumed else _now(),
            branched_from=record.branched_from,
            initial_candidate=self.initial.to_dict(), initial_prompt=self.initial.render(),
            tracking={"uri": redact_uri(record.tracking_uri), "experiment": record.experiment or owner.experiment},
        )
        self.record = record
        self.ctx.workdir = record.run.path / "strategy"
        return record

    def _start(self, on_val: EvalResult | None, started: bool) -> None:
        """The search's start: the initial candidate on val and the strategy's start (unless both
        ran with the baseline: the start while its calls ran, seeing the budget after val's), then
        the first checkpoint."""
        if not started:
            if self.splits.val:
                on_val = self.evaluator.evaluate(self.initial, self.splits.val, label="val: initial")
            self.strategy.start(self.ctx, self.initial)
        self.initial_val = on_val.mean if on_val is not None else None
        self.patience.best_val = self.initial_val
        self._checkpoint(0)

    def _restore(self, checkpoint: Checkpoint) -> None:
        """Continue after the checkpoint's iteration: strategy, early-stopping and RNG state."""
        self.initial_val = checkpoint.initial_val
        self.patience.best_val, self.patience.stale = checkpoint.best_val, checkpoint.stale
        self.started -= checkpoint.elapsed_seconds  # durations count the interrupted process too
        self.strategy.load_state_dict(checkpoint.strategy_state)
        restore_rng(self.ctx.rng, checkpoint.rng_state)

    def _checkpoint(self, iteration: int, stop_reason: str | None = None) -> None:
        """Everything a resume needs, after the start, each iteration and the end of the search."""
        self.evaluator.settle()
        best, score, by = self._pick().best()
        try:  # a copy the strategy cannot change under the trackers, and proof a resume can read it
            strategy_state = json.loads(json.dumps(self.strategy.state_dict()))
        except (TypeError, ValueError) as exc:  # a resume could not restore it: fail now, not then
            raise ReflexError(f"strategy {self.strategy.name!r} returned a state that is not JSON: {exc}") from exc
        self.trackers.on_checkpoint(Checkpoint(
            iteration=iteration,
            stop_reason=stop_reason,
            strategy=self.strategy.name or type(self.strategy).__name__,
            strategy_state=strategy_state,
            initial_val=self.initial_val,
            best_val=self.patience.best_val,
            stale=self.patience.stale,
            best={"iteration": best, "score": score, "by": by, "prompt": self.candidates[best].render()},
            trajectories={
                "train": [r.score for r in self.records],
                "val": [r.val_score for r in self.records],
            },
            evaluator=self.evaluator.state_dict(),
            rng_state=rng_state(self.ctx.rng),
            elapsed_seconds=round(time.monotonic() - self.started, 3),
            updated=_now(),
        ).to_state())

    def _stop_without_reasoning(self) -> None:
        """The strategy asked its reasoning model and never got one reply (each request retried):
        no proposal can ever be made, so the run fails now instead of paying for the rest."""
        usage = self.evaluator.usage
        if usage.reasoning_failed and not usage.reasoning_calls:
            raise ReflexError(f"the reasoning model answered none of its {usage.reasoning_failed} requests "
                              f"(each retried), so no proposal can be made: {usage.reasoning_error}")

    def _search(self, start: int) -> str:
        """Run strategy iterations until a stop rule fires (stop_rules.py); returns why it stopped."""
        cfg, train, val = self.config, self.splits.train, self.splits.val
        if start == 1 and (stop := self._pick().initial_at_threshold()) is not None:
            return stop
        i = start
        while True:
            view = SearchView(i, self.strategy, self.ctx, self.records, has_val=bool(val))
            if (stop := self.stop_rules.before(view)) is not None:
                return stop
            batch = sample_batch(train, cfg.batch_size, cfg.batch_seed + i)
            is_full = len(batch) == len(train)
            if cfg.batch_size and cfg.full_eval_steps and i % cfg.full_eval_steps == 0:
                batch, is_full = list(train), True
            before = self.evaluator.usage.to_dict()
            try:
                step = self.strategy.step(self.ctx, i, batch)
                val_score = self.evaluator.evaluate(step.candidate, val, label=f"iter {i}: val").mean if val else None
            except BudgetExhausted as exc:
                return exc.stop_reason or Budget.reason
            self.candidates[i] = step.candidate
            check = self._pick().threshold_check(i, step.candidate, val_score)
            record = self._record(i, step, val_score, before, is_full, len(batch))
            if check is not None:
                record.details["threshold_check"] = check
            if (earlier := self.later.get(i)) is not None:
                # Written just before a crash, re-derived from the journal: the file is the record.
                if earlier.fingerprint != record.fingerprint:
                    raise ReflexError(f"resumed iteration {i} differs from the one on disk; the run cannot continue")
                record = earlier
            self.records.append(record)
            self.trackers.on_iteration(record)
            self._stop_without_reasoning()
            view.batch = batch
            try:
                stop = self.stop_rules.after(view)
            except BudgetExhausted as exc:  # the strategy's move on after patience ran out of calls
                return exc.stop_reason or Budget.reason
            if stop:
                return stop
            self._checkpoint(i)
            i += 1

    def _pick(self) -> RunPick:
        """The pick over the run's candidates and records as they stand now (run_pick.py)."""
        return RunPick(self.initial, self.initial_val, self.candidates, self.records, self.splits,
                       self.strategy.rewrite_margin, self.ctx.facts, self.evaluator, self.config.seed,
                       self.held_back, self.config.score_threshold, self.trackers.on_notice)

    def _record(self, i: int, step, val_score, before: dict, is_full: bool, batch_size: int) -> IterationRecord:
        after = self.evaluator.usage.to_dict()
        name = self.strategy.name or type(self.strategy).__name__
        return IterationRecord(
            iteration=i,
            phase=step.phase or name,
            strategy=name,
            score=step.score,
            val_score=val_score,
            delta=step.delta,
            scores_by_metric=step.result.by_metric,
            system_prompt={n: s.instructions for n, s in step.candidate.predictors.items()},
            candidate=step.candidate.to_dict(),
            fingerprint=step.candidate.fingerprint,
            reasoning=step.reasoning,
            change_summary=step.change_summary,
            predictor=step.predictor,
            eval_tokens=after["eval_tokens"] - before["eval_tokens"],
            reasoning_tokens=after["reasoning_tokens"] - before["reasoning_tokens"],
            metric_calls=after["metric_calls"] - before["metric_calls"],
            elapsed_seconds=round(time.monotonic() - self.started, 3),
            timestamp=_now(),
            is_full_eval=is_full,
            batch_size=batch_size,
            n_failed=step.result.n_failed,
            # The nodes this iteration changed against the previous iteration's candidate (pipeline mode).
            details={**step.details, "changed_predictors":
                     step.candidate.changed_from(self.candidates.get(i - 1, self.initial))},
        )

    def _info(self) -> dict[str, Any]:
        return run_info(self.config, self.strategy, self.splits, self.initial, self.metric,
                        (self.task_lm, self.reasoning_lm), self.evaluator.budget, self.answer_max_tokens,
                        self.warnings, self.owner.metadata)

    def _program(self, result: RunResult, selected: int) -> dspy.Module:
        program = self.candidates[selected].apply(self.student)
        by = "val_score" if self.splits.val else "score"
        ranked = sorted(self.records, key=lambda r: -(getattr(r, by) or -1.0))
        program.result = result
        program.candidate_programs = [
            {"iteration": r.iteration, "score": r.score, "val_score": r.val_score,
             "program": self.candidates[r.iteration].apply(self.student)}
            for r in ranked
        ]
        program.trial_logs = {r.iteration: r.to_dict() for r in self.records}
        program.run_id = result.run_id
        program.run_dir = str(self.record.run.path) if self.record else None
        return program
