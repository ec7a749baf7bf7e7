"""The one evaluator: runs a candidate on examples and scores it, for every strategy.

Everything that costs LM calls during a run goes through here (or through `reasoned()` for
the proposer), so caching, retries and throttling live in one place; what was paid, the
metric-call budget and the paid-call journal are kept in the run's `Ledger` (ledger.py).

Every paid result is also handed to `on_paid` as a journal entry the moment it exists; a
resumed run `replay()`s that journal, so nothing paid for before a crash is paid again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import dspy

from reflex_dspy.attempts import Attempts
from reflex_dspy.candidate import Candidate
from reflex_dspy.data import example_id
from reflex_dspy.errors import ProviderAuthError, ProviderUnavailable, ReflexError
from reflex_dspy.eval_requests import Group, answers
from reflex_dspy.eval_results import (  # re-exported: callers import results from here
    EvalResult,
    ExampleResult,
    ReplayedFailure,
    Usage,
    plain_output,
)
from reflex_dspy.ledger import CacheKey, Ledger, PaidFn
from reflex_dspy.library_logs import worker_pool
from reflex_dspy.reply_cache import install_empty_reply_guard
from reflex_dspy.retries import NO_ANSWER, RetryPolicy, classify_error, no_answer, short_error
from reflex_dspy.throttle import AdaptiveLimit
from reflex_dspy.trace import PREDICTION_TRACE_ATTR, AgentTrace, holds_tools, tool_recorder

ProgressFn = Callable[[str, int, int], None]
# Examples failed in a row by the provider (transient errors past the retries, never a candidate's
# doing) after which it is taken for down: enough that a passing blip never trips it, few enough
# that an outage costs one evaluation, not the rest of the search (each step "all failed").
OUTAGE_STREAK = 8


def _another_pass(lm: dspy.LM, eval_pass: int, temperature: float) -> dspy.LM:
    """The model for a repeated measurement pass (`eval_runs`): it must ask again, not read pass
    1's replies from DSPy's cache, or "± 0.0000 (3 runs)" would report one run three times. Above
    temperature 0 a rollout id gives the pass its own cache entries (DSPy's convention); at 0
    DSPy says a rollout id "has no effect", so the pass skips DSPy's cache (our run journal keeps
    its results for a resume)."""
    return lm.copy(rollout_id=eval_pass) if temperature else lm.copy(cache=False)


def _add_feedback(result: ExampleResult, text: str, label: str | None) -> None:
    """Append one model's feedback line (prefixed with its label when the run has several)."""
    line = f"[{label}] {text}" if label else text
    result.feedback = "\n".join(filter(None, [result.feedback, line]))


class Evaluator:
    """Runs candidates of one student program on examples, in parallel, paying once per pair.

    The cache key is (candidate fingerprint, example id, temperature, pass): within a run the
    same pair is never paid for twice. `budget` caps the metric calls of budgeted evaluations
    (the search); baseline and final test evaluations are reporting and pass `budgeted=False`.

    The accounts (budget, usage, journal, replay, the reasoning-reply cache) are `self.ledger`;
    `usage`, `budget`, `budget_left`, `on_paid`, `state_dict`, `replay`, `settle` and
    `count_external` here are the ledger's, kept on the Evaluator for its callers.
    """

    def __init__(
        self,
        student: dspy.Module,
        metric: Callable,
        *,
        task_lm: dspy.LM | Mapping[str, dspy.LM] | None = None,
        adapter: Any = None,
        max_workers: int = 4,
        temperature: float = 0.0,
        budget: int | None = None,
        retry: RetryPolicy | None = None,
        seed: int = 0,
    ) -> None:
        models = dict(task_lm) if isinstance(task_lm, Mapping) else {"task": task_lm or dspy.settings.lm}
        if not models or any(lm is None for lm in models.values()):
            raise ReflexError("no task model: pass task_lm= or call dspy.configure(lm=...) first")
        self.student = student
        self.metric = metric
        # Several task models: every example runs on each, its score is their mean (per model kept).
        self.lms = {label: lm.copy(temperature=temperature) for label, lm in models.items()}
        self.lm = next(iter(self.lms.values()))
        self.calls_per_example = len(self.lms)
        self._outage = 0  # examples failed in a row by the provider (OUTAGE_STREAK stops the run)
        self.adapter = adapter if adapter is not None else dspy.settings.adapter
        self.max_workers = max_workers
        self.temperature = temperature
        self.ledger = Ledger(budget)
        self.retry = retry or RetryPolicy()
        self.limit = AdaptiveLimit(max_workers, on_change=self._notice)
        self.attempts = Attempts(self.ledger, self.retry, self.limit, seed)  # retries, in-flight calls
        self.on_notice: Callable[[str], None] | None = None
        self.on_progress: ProgressFn | None = None
        self.on_scored: Callable[[CacheKey, ExampleResult], None] | None = None  # every scored pair
        self._cache = self.ledger.results  # the same dict: replay fills it
        self._programs: dict[str, dspy.Module] = {}
        self._lock = self.ledger.lock  # one lock: a batch's accounting and its cache entries go together
        self._predictor_names: dict[int, str] = {}
        self._optimized: dict[int, frozenset[str]] = {}  # program id → its optimized predictors
        self._tools: dict[int, bool] = {}  # program id → holds dspy.Tools (record their calls)
        install_empty_reply_guard()  # an empty reply is a failed attempt: it must not be cached

    # -- the ledger's, for the Evaluator's callers ----------------------------------------
    @property
    def usage(self) -> Usage:
        return self.ledger.usage

    @property
    def budget(self) -> int | None:
        return self.ledger.budget

    @property
    def budget_left(self) -> int | None:
        return self.ledger.budget_left

    @property
    def on_paid(self) -> PaidFn | None:
        return self.ledger.on_paid

    @on_paid.setter
    def on_paid(self, value: PaidFn | None) -> None:
        self.ledger.on_paid = value

    @property
    def paid_entries(self) -> int:
        return self.ledger.paid_entries

    def count_external(self, **counts: int) -> None:
        """Calls made by an optimizer we delegate to (GEPA): `Ledger.count_external`."""
        self.ledger.count_external(**counts)

    def state_dict(self) -> dict[str, Any]:
        return self.ledger.state_dict()

    def replay(self, entries: Sequence[Mapping[str, Any]], state: Mapping[str, Any] | None = None) -> None:
        """Restore totals and caches from a journal: `Ledger.replay`."""
        self.ledger.replay(entries, state)

    def settle(self) -> None:
        self.ledger.settle()

    # -- public -------------------------------------------------------------------------

    def evaluate(
        self,
        candidate: Candidate,
        examples: Sequence[dspy.Example],
        *,
        budgeted: bool = True,
        label: str = "evaluate",
        eval_pass: int = 0,
    ) -> EvalResult:
        """Score `candidate` on `examples`. Raises `BudgetExhausted` before spending past the budget."""
        return self.evaluate_many([candidate], examples, budgeted=budgeted, label=label, eval_pass=eval_pass)[0]

    def evaluate_many(
        self,
        candidates: Sequence[Candidate],
        examples: Sequence[dspy.Example],
        *,
        budgeted: bool = True,
        label: str = "evaluate",
        eval_pass: int = 0,
    ) -> list[EvalResult]:
        """Score several candidates on the same examples through one worker pool.

        Strategies that compare variants (structural, auto's phase ends) use this so `max_workers`
        is shared by all pairs instead of each candidate waiting for the previous one. The budget
        is checked for the whole set before anything is spent.
        """
        return self.evaluate_jobs([(c, examples) for c in candidates], budgeted=budgeted, label=label,
                                  eval_pass=eval_pass)

    def evaluate_jobs(
        self,
        requests: Sequence[tuple[Candidate, Sequence[dspy.Example]]],
        *,
        budgeted: bool = True,
        label: str = "evaluate",
        eval_pass: int = 0,
    ) -> list[EvalResult]:
        """Score each candidate on its own examples, all through one worker pool.

        PDO scores a whole round of duels (each pair on its own sample) this way, so the round
        fills every worker instead of one duel waiting for the previous one. A candidate asked
        for several times is planned once over the union of its examples (a pair is never run
        twice); each request gets back exactly its examples' results. The budget is checked
        for the whole set before anything is spent.
        """
        return self.evaluate_groups([Group(requests, budgeted, eval_pass)], label=label)[0]

    def evaluate_groups(self, groups: Sequence[Group], *, label: str = "evaluate",
                        beside: Callable[[], Any] | None = None) -> list[list[EvalResult]]:
        """Several evaluations (each budgeted or not, each its own pass) through one worker pool.

        The lifecycle measures the baseline on test and the initial candidate on val this way: two
        small evaluations that would each leave workers idle in their last wave share their waves.
        The budgeted groups' calls are committed before anything runs (`Ledger.reserve`), so
        evaluations running side by side can never together spend past the budget. `beside` runs
        in this thread while the jobs run (the strategy's start, which sees the budget as it will
        be); its error is raised once the evaluation is accounted.
        """
        planned = [self._plan_group(g) for g in groups]
        needed = sum(paid for g, (_, _, paid) in zip(groups, planned, strict=True) if g.budgeted)
        self.ledger.reserve(needed, label)
        jobs = []
        for g, (_, plans, _) in zip(groups, planned, strict=True):
            lms = {name: lm if g.eval_pass == 0 else _another_pass(lm, g.eval_pass, self.temperature)
                   for name, lm in self.lms.items()}
            jobs += [(results, self._program(c), lms, (c.fingerprint, eid, self.temperature, g.eval_pass), ex)
                     for c, (results, todo, _) in plans.values() for eid, ex in todo]
        beside_error = None
        try:
            if beside is None:
                self._run_jobs(label, jobs)
            else:
                beside_error = self._run_beside(label, jobs, beside)
        except BaseException:
            self.ledger.release(needed)  # nothing of an interrupted evaluation counts, as before
            raise
        with self._lock:
            for _, plans, _ in planned:
                for _, (results, todo, replayed) in plans.values():
                    for key in replayed:
                        self.ledger.use_replayed(key)
                    self.usage.cache_hits += (len(results) - len(todo) - len(replayed)) * self.calls_per_example
        if beside_error is not None:
            raise beside_error
        return [answers(requests, {fp: plan for fp, (_, plan) in plans.items()})
                for requests, plans, _ in planned]

    def cost(self, requests: Sequence[tuple[Candidate, Sequence[dspy.Example]]]) -> int:
        """Metric calls these (candidate, examples) requests would pay: the pairs not scored yet."""
        return self._plan_group(Group(requests))[2]

    def _run_beside(self, label: str, jobs: list, beside: Callable[[], Any]) -> BaseException | None:
        """Run the jobs in a thread while `beside()` runs here; raise the jobs' error, return beside's."""
        with worker_pool(1, "reflex-eval") as side:
            running = side.submit(self._run_jobs, label, jobs)
            try:
                beside()
                error = None
            except BaseException as exc:  # raised by the caller once the evaluation is accounted
                error = exc
            running.result()
        return error

    def _plan_group(self, group: Group):
        """`(requests, {fingerprint: (candidate, plan)}, metric calls to pay)` of one group."""
        requests = [(c, list(examples)) for c, examples in group.requests]
        union: dict[str, tuple[Candidate, dict[str, dspy.Example]]] = {}
        for c, examples in requests:  # identical variants run once
            by_id = union.setdefault(c.fingerprint, (c, {}))[1]
            for ex in examples:
                by_id.setdefault(example_id(ex), ex)
        plans = {fp: (c, self._plan(c, list(by_id.values()), group.eval_pass)) for fp, (c, by_id) in union.items()}
        paid = sum(len(todo) + len(replayed) for _, (_, todo, replayed) in plans.values()) * self.calls_per_example
        return requests, plans, paid

    def _run_jobs(self, label: str, jobs: list) -> None:
        """Run every (results, program, lms, key, example) job, filing each result under its candidate."""
        self._progress(label, 0, len(jobs))
        if min(self.max_workers, len(jobs)) == 1:
            # One at a time runs here: a pool thread would only add a hand-off per example
            # after every blocking call (measured in bench/: overhead).
            self._collect(label, len(jobs), ((job[0], self._run_one(*job[1:])) for job in jobs))
        elif jobs:
            with worker_pool(min(self.max_workers, len(jobs)), "reflex-eval") as pool:
                futures = [(job[0], pool.submit(self._run_one, *job[1:])) for job in jobs]
                try:
                    self._collect(label, len(jobs), ((results, future.result()) for results, future in futures))
                except (ProviderAuthError, ProviderUnavailable):
                    for _, f in futures:
                        f.cancel()
                    raise

    def _collect(self, label: str, total: int,
                 finished: Iterable[tuple[dict[str, ExampleResult], ExampleResult]]) -> None:
        """File each finished example under its candidate's results, in job order, with progress."""
        for done, (results, result) in enumerate(finished, 1):
            results[result.example_id] = result
            self._progress(label, done, total)

    def _plan(self, candidate: Candidate, examples: Sequence[dspy.Example], eval_pass: int):
        """Split `examples` into cached results, pairs to run, and replayed pairs still unpaid here."""
        fp = candidate.fingerprint
        results: dict[str, ExampleResult | None] = {}
        todo: list[tuple[str, dspy.Example]] = []
        replayed: list[CacheKey] = []
        for ex in examples:
            eid = example_id(ex)
            key = (fp, eid, self.temperature, eval_pass)
            hit = self._cache.get(key)
            if hit is not None:
                results[eid] = hit
                if key in self.ledger.pending:
                    replayed.append(key)
            elif eid not in results:
                results[eid] = None  # reserves the slot so results keep example order
                todo.append((eid, ex))
        return results, todo, replayed

    def reasoned(self, key: Mapping[str, Any], call: Callable[[], tuple[dict[str, Any], bool]]):
        """One reasoning-model reply `(fields, truncated)`, paid once per run and journaled.

        `key` is everything the reply depends on (signature, inputs, attempt, model). A reply
        that failed (unparseable, provider error) was paid too: its error is journaled and
        raised again as `ReplayedFailure` on replay.
        """
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        entry = self.ledger.reply(digest)
        if entry is None:
            fields, truncated, error, calls, tokens = self.attempts.reasoning(call)
            entry = {"kind": "reasoning", "key": digest, "fields": fields, "truncated": truncated,
                     "error": short_error(error, 120) if error else None, "calls": calls, "tokens": tokens}
            self.ledger.file_reply(digest, entry)
            if error is not None:
                raise error
        if entry["error"]:
            raise ReplayedFailure(entry["error"])
        return dict(entry["fields"]), entry["truncated"]

    # -- internals ----------------------------------------------------------------------
    @property
    def waiting_since(self) -> float | None:
        """`time.monotonic()` when the oldest model call still in flight started (for a heartbeat)."""
        oldest = self.waiting
        return None if oldest is None else oldest[0]

    @property
    def waiting(self) -> tuple[float, str] | None:
        """(start, "task model" or "reasoning model") of the oldest model call still in flight."""
        return self.attempts.waiting

    def _notice(self, message: str) -> None:
        if self.on_notice is not None:
            self.on_notice(message)

    def _progress(self, label: str, done: int, total: int) -> None:
        if self.on_progress is not None:
            self.on_progress(label, done, total)

    def _program(self, candidate: Candidate) -> dspy.Module:
        program = self._programs.get(candidate.fingerprint)
        if program is None:
            program = candidate.apply(self.student)
            with self._lock:
                if len(self._programs) > 64:
                    self._programs.clear()
                self._programs[candidate.fingerprint] = program
                for name, predictor in program.named_predictors():
                    self._predictor_names[id(predictor)] = name
                self._optimized[id(program)] = frozenset(candidate.predictors)  # trace flags
                self._tools[id(program)] = holds_tools(program)
        return program

    def _run_one(self, program: dspy.Module, lms: Mapping[str, dspy.LM], key: CacheKey,
                 example: dspy.Example) -> ExampleResult:
        """Run and score one example on every task model; one failure fails the example."""
        eid = key[1]
        result = ExampleResult(eid, None)
        calls = tokens = judged = judge_tokens = 0  # judged: the metric's own LM calls (an LLM judge)
        scores: dict[str, float] = {}
        failure: str | None = None
        provider_failed = False  # the failure is the provider's (transient errors past the retries)
        for label, lm in lms.items():
            tools = tool_recorder(program)  # dspy.Tool calls, for the whole execution trace (trace.py)
            callbacks = [*dspy.settings.get("callbacks", []), *([tools] if self._tools.get(id(program), True) else [])]
            prediction, trace, error, c, t = self.attempts.task(program, lm, self.adapter, example, callbacks)
            calls, tokens = calls + c, tokens + t
            if error is not None:
                text = short_error(error) if len(lms) == 1 else f"{label}: {short_error(error)}"
                if (kind := no_answer(error)) is None:
                    failure, provider_failed = text, classify_error(error) == "transient"
                    break
                # Not a provider failure: with this prompt the model has no usable answer for this
                # input (and would have none if asked again), so the candidate scores 0 here.
                result.no_answer, result.error, scores[label] = kind, text, 0.0
                _add_feedback(result, f"no answer: {NO_ANSWER[kind].reason}", label if len(lms) > 1 else None)
                continue
            output, steps = plain_output(prediction), self._plain_trace(trace or [])
            agent = self._agent_trace(program, prediction, output, steps, tools.calls, eid)
            if not scores:  # the first model's output and trace are the ones shown to the reasoning model
                result.output, result.trace, result.agent_trace = output, steps, agent.to_dict()
            scored, error, c, t = self.attempts.metric(self.metric, example, prediction, agent)
            calls, tokens, judged, judge_tokens = calls + c, tokens + t, judged + c, judge_tokens + t
            if error is not None:
                failure, provider_failed = short_error(error), classify_error(error) == "transient"
                break
            scores[label] = scored.score
            for name, value in scored.by_metric.items():  # summed here, averaged below
                result.by_metric[name] = result.by_metric.get(name, 0.0) + value
            if scored.feedback:
                _add_feedback(result, scored.feedback, label if len(lms) > 1 else None)
        if failure is None:
            result.score = sum(scores.values()) / len(scores)
            result.by_metric = {k: v / len(scores) for k, v in result.by_metric.items()}
            if len(lms) > 1:
                result.by_model = scores
        else:
            result.error, result.no_answer, result.by_metric, result.feedback = failure, None, {}, None
        with self._lock:
            if result.failed:  # not cached: a failure is retried when the pair is needed again
                for name, n in (("metric_calls", len(lms)), ("lm_calls", calls), ("eval_tokens", tokens),
                                ("metric_lm_calls", judged), ("metric_tokens", judge_tokens), ("failed", 1)):
                    setattr(self.usage, name, getattr(self.usage, name) + n)
                self._outage = self._outage + 1 if provider_failed else 0
                if self._outage >= OUTAGE_STREAK:
                    raise ProviderUnavailable(
                        f"{self._outage} examples in a row failed after retries ({failure}): the provider looks "
                        "down, so the run stops rather than decide its search on failures; resume it when the "
                        "provider answers again (reflex-dspy optimize --resume, or compile(resume=run_id))")
            else:
                self._outage = 0
                entry = {"kind": "eval", "key": list(key), "calls": calls, "tokens": tokens, "metric_calls": len(lms),
                         **({"metric_lm_calls": judged, "metric_tokens": judge_tokens} if judged else {}),
                         **({"no_answer": result.no_answer} if result.no_answer else {})}
                self.ledger.account(entry)
                self._cache[key] = result
                if self.ledger.on_paid is not None:  # a journal line only where a journal is kept
                    entry["result"] = result.to_dict()
                self.ledger.emit(entry)
        if self.on_scored is not None:  # the run's trials feed (failed pairs included), from this worker
            self.on_scored(key, result)
        return result

    def _agent_trace(self, program: dspy.Module, prediction: Any, output: dict[str, Any],
                     steps: list[dict[str, Any]], tools: list[dict[str, Any]], eid: str) -> AgentTrace:
        """A pipeline_fn's own trace (adapters/pipeline_fn.py), else DSPy's predictor steps and tool
        calls; `output` and `steps` are the prediction and DSPy's trace as plain data."""
        given = getattr(prediction, PREDICTION_TRACE_ATTR, None)
        if isinstance(given, AgentTrace):
            given.input_id = eid
            return given
        final = next(iter(output.values())) if len(output) == 1 else output
        optimized = self._optimized.get(id(program), frozenset())
        return AgentTrace.from_steps(steps, tools, optimized, final, eid)

    def _plain_trace(self, trace: list) -> list[dict[str, Any]]:
        steps = []
        for predictor, inputs, outputs in trace:
            steps.append(
                {
                    "predictor": self._predictor_names.get(id(predictor), type(predictor).__name__),
                    "inputs": {k: str(v) for k, v in dict(inputs).items()},
                    "outputs": plain_output(outputs),
                }
            )
        return steps

