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
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import dspy

from reflex_dspy.candidate import Candidate
from reflex_dspy.data import example_id
from reflex_dspy.errors import ProviderAuthError, ReflexError
from reflex_dspy.eval_results import (  # re-exported: callers import results from here
    EvalResult,
    ExampleResult,
    ReplayedFailure,
    Usage,
    _plain_output,
    _usage_totals,
)
from reflex_dspy.ledger import CacheKey, Ledger, PaidFn
from reflex_dspy.metrics import MetricFailure, call_metric
from reflex_dspy.reply_cache import install_empty_reply_guard
from reflex_dspy.retries import EmptyReply, RetryPolicy, classify_error, is_rate_limit, short_error
from reflex_dspy.throttle import AdaptiveLimit
from reflex_dspy.trace import PREDICTION_TRACE_ATTR, AgentTrace, holds_tools, tool_recorder, using_trace

ProgressFn = Callable[[str, int, int], None]


# ---------------------------------------------------------------------------------------
# The evaluator
# ---------------------------------------------------------------------------------------
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
        self.adapter = adapter if adapter is not None else dspy.settings.adapter
        self.max_workers = max_workers
        self.temperature = temperature
        self.ledger = Ledger(budget)
        self.retry = retry or RetryPolicy()
        self.limit = AdaptiveLimit(max_workers, on_change=self._notice)
        self.on_notice: Callable[[str], None] | None = None
        self.on_progress: ProgressFn | None = None
        self.on_scored: Callable[[CacheKey, ExampleResult], None] | None = None  # every scored pair
        self._cache = self.ledger.results  # the same dict: replay fills it
        self._programs: dict[str, dspy.Module] = {}
        self._lock = self.ledger.lock  # one lock: a batch's accounting and its cache entries go together
        self._rng = random.Random(seed)
        self._predictor_names: dict[int, str] = {}
        self._optimized: dict[int, frozenset[str]] = {}  # program id → its optimized predictors
        self._tools: dict[int, bool] = {}  # program id → holds dspy.Tools (record their calls)
        self._in_flight: dict[int, tuple[float, str]] = {}  # model calls now running → (start, which model)
        install_empty_reply_guard()  # an empty reply is a failed attempt: it must not be cached

    # -- the ledger's, for the Evaluator's callers ----------------------------------------
    @property
    def usage(self) -> Usage:
        return self.ledger.usage

    @usage.setter
    def usage(self, value: Usage) -> None:
        self.ledger.usage = value

    @property
    def budget(self) -> int | None:
        return self.ledger.budget

    @budget.setter
    def budget(self, value: int | None) -> None:
        self.ledger.budget = value

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
        requests = [(c, list(examples)) for c, examples in requests]
        union: dict[str, tuple[Candidate, dict[str, dspy.Example]]] = {}
        for c, examples in requests:  # identical variants run once
            by_id = union.setdefault(c.fingerprint, (c, {}))[1]
            for ex in examples:
                by_id.setdefault(example_id(ex), ex)
        candidates = [c for c, _ in union.values()]
        plans = [self._plan(c, list(by_id.values()), eval_pass) for c, by_id in union.values()]
        paid = sum(len(todo) + len(replayed) for _, todo, replayed in plans) * self.calls_per_example
        if budgeted:
            self.ledger.check(paid, label)
        lms = {label: lm if eval_pass == 0 or self.temperature == 0 else lm.copy(rollout_id=eval_pass)
               for label, lm in self.lms.items()}
        jobs = [(results, self._program(c), (c.fingerprint, eid, self.temperature, eval_pass), ex)
                for c, (results, todo, _) in zip(candidates, plans, strict=True) for eid, ex in todo]
        self._run_jobs(label, jobs, lms)
        with self._lock:
            for results, todo, replayed in plans:
                for key in replayed:
                    self.ledger.use_replayed(key)
                n_paid = len(todo) + len(replayed)
                self.usage.cache_hits += (len(results) - n_paid) * self.calls_per_example
                if budgeted:
                    self.usage.search_calls += n_paid * self.calls_per_example
        return _answers(requests, dict(zip(union, plans, strict=True)))

    def _run_jobs(self, label: str, jobs: list, lms: Mapping[str, dspy.LM]) -> None:
        """Run every (results, program, key, example) job, filing each result under its candidate."""
        self._progress(label, 0, len(jobs))
        if min(self.max_workers, len(jobs)) == 1:
            # One at a time runs here: a pool thread would only add a hand-off per example
            # after every blocking call (measured in bench/: overhead).
            self._collect(label, len(jobs), ((results, self._run_one(program, lms, key, ex))
                                             for results, program, key, ex in jobs))
        elif jobs:
            with ThreadPoolExecutor(max_workers=min(self.max_workers, len(jobs)),
                                    thread_name_prefix="reflex-eval") as pool:
                futures = [(results, pool.submit(self._run_one, program, lms, key, ex))
                           for results, program, key, ex in jobs]
                try:
                    self._collect(label, len(jobs), ((results, future.result()) for results, future in futures))
                except ProviderAuthError:
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
            fields, truncated, error, calls, tokens = self._reason_with_retries(call)
            entry = {"kind": "reasoning", "key": digest, "fields": fields, "truncated": truncated,
                     "error": short_error(error, 120) if error else None, "calls": calls, "tokens": tokens}
            self.ledger.file_reply(digest, entry)
            if error is not None:
                raise error
        if entry["error"]:
            raise ReplayedFailure(entry["error"])
        return dict(entry["fields"]), entry["truncated"]

    def _reason_with_retries(self, call: Callable[[], tuple[dict[str, Any], bool]]):
        """`(fields, truncated, error, calls, tokens)` of one reasoning reply, transient errors retried.

        Same policy and counters as task calls (`_attempt`): each retry is one more request,
        counted in `usage.retries`, and each 429 also slows the evaluations down. A transient
        error that outlasts the attempts is raised (nothing paid to journal); any other error is
        returned, to be journaled as a paid failure.
        """
        calls = tokens = 0
        for attempt in range(self.retry.max_attempts):
            with self._waiting("reasoning model"), dspy.track_usage() as tracker:
                try:
                    fields, truncated = call()
                    error = None
                except Exception as exc:  # classified below
                    error, fields, truncated = exc, {}, False
            c, t = _usage_totals(tracker)
            calls, tokens = calls + c, tokens + t
            if error is None:
                break
            kind = classify_error(error)
            if kind == "auth":
                raise ProviderAuthError(f"the provider refused the credentials: {short_error(error)}") from error
            if kind != "transient":
                break
            if attempt == self.retry.max_attempts - 1:
                with self._lock:
                    self.ledger.reasoning_failed(short_error(error, 120))
                raise error  # not a paid reply: the proposer's next attempt must really ask again
            time.sleep(self._count_retry(error, attempt))
        return fields, truncated, error, calls, tokens

    def _count_retry(self, error: BaseException, attempt: int) -> float:
        """Count one retry (and a rate limit, which also lowers the concurrency); the delay to wait."""
        rate_limited = is_rate_limit(error)
        if rate_limited:
            self.limit.rate_limited()
        with self._lock:
            self.usage.retries += 1
            self.usage.rate_limits += int(rate_limited)
            return self.retry.delay(attempt, self._rng, error)

    # -- internals ----------------------------------------------------------------------
    @property
    def waiting_since(self) -> float | None:
        """`time.monotonic()` when the oldest model call still in flight started (for a heartbeat)."""
        oldest = self.waiting
        return None if oldest is None else oldest[0]

    @property
    def waiting(self) -> tuple[float, str] | None:
        """(start, "task model" or "reasoning model") of the oldest model call still in flight."""
        with self._lock:
            return min(self._in_flight.values()) if self._in_flight else None

    @contextmanager
    def _waiting(self, who: str) -> Iterator[None]:
        token = object()
        with self._lock:
            self._in_flight[id(token)] = (time.monotonic(), who)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight.pop(id(token), None)

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
        calls = tokens = 0
        scores: dict[str, float] = {}
        for label, lm in lms.items():
            tools = tool_recorder(program)  # dspy.Tool calls, for the whole execution trace (trace.py)
            callbacks = [tools] if self._tools.get(id(program), True) else []
            with dspy.context(callbacks=[*dspy.settings.get("callbacks", []), *callbacks]):
                prediction, trace, error, c, t = self._attempt(program, lm, example)
            calls, tokens = calls + c, tokens + t
            if error is not None:
                result.error = short_error(error) if len(lms) == 1 else f"{label}: {short_error(error)}"
                break
            agent = self._agent_trace(program, prediction, trace or [], tools.calls, eid)
            if not scores:  # the first model's output and trace are the ones shown to the reasoning model
                result.output = _plain_output(prediction)
                result.trace = self._plain_trace(trace or [])
                result.agent_trace = agent.to_dict()
            scored, error, c, t = self._score(example, prediction, agent)
            calls, tokens = calls + c, tokens + t
            if error is not None:
                result.error = short_error(error)
                break
            scores[label] = scored.score
            for name, value in scored.by_metric.items():  # summed here, averaged below
                result.by_metric[name] = result.by_metric.get(name, 0.0) + value
            if scored.feedback:
                prefix = f"[{label}] " if len(lms) > 1 else ""
                result.feedback = "\n".join(filter(None, [result.feedback, prefix + scored.feedback]))
        if result.error is None:
            result.score = sum(scores.values()) / len(scores)
            result.by_metric = {k: v / len(scores) for k, v in result.by_metric.items()}
            if len(lms) > 1:
                result.by_model = scores
        else:
            result.by_metric, result.feedback = {}, None
        with self._lock:
            if result.failed:
                # Not cached: a failure is retried when the pair is needed again.
                self.usage.metric_calls += len(lms)
                self.usage.lm_calls += calls
                self.usage.eval_tokens += tokens
                self.usage.failed += 1
            else:
                entry = {"kind": "eval", "key": list(key), "result": result.to_dict(), "calls": calls,
                         "tokens": tokens, "metric_calls": len(lms)}
                self.ledger.account(entry)
                self._cache[key] = result
                self.ledger.emit(entry)
        if self.on_scored is not None:  # the run's trials feed (failed pairs included), from this worker
            self.on_scored(key, result)
        return result

    def _score(self, example: dspy.Example, prediction: Any, agent: AgentTrace):
        """`(scored, error, calls, tokens)`: the metric on one prediction, an LLM judge's transient
        provider errors retried and counted like task calls (models carry no DSPy retries of
        their own); a `MetricFailure`, or a transient error past the last attempt, fails the example."""
        calls = tokens = 0
        for attempt in range(self.retry.max_attempts):
            error = None
            with dspy.track_usage() as tracker, using_trace(agent):  # metrics may read current_trace()
                try:
                    scored = call_metric(self.metric, example, prediction, None)
                except MetricFailure as exc:
                    error, scored = exc, None
                except Exception as exc:  # a judge's provider error: retried below if transient
                    kind = classify_error(exc)
                    if kind == "auth":
                        raise ProviderAuthError(f"the provider refused the credentials: {short_error(exc)}") from exc
                    if kind != "transient":
                        raise
                    error, scored = exc, None
            c, t = _usage_totals(tracker)
            calls, tokens = calls + c, tokens + t
            if error is None or isinstance(error, MetricFailure) or attempt == self.retry.max_attempts - 1:
                return scored, error, calls, tokens
            time.sleep(self._count_retry(error, attempt))
        raise AssertionError("unreachable: the last attempt returns")

    def _attempt(self, program: dspy.Module, lm: dspy.LM, example: dspy.Example):
        """`(prediction, trace, error, calls, tokens)` of one example on one model.

        Transient provider errors and empty answers are retried with backoff; a 429 also lowers
        the concurrency (throttle.py), and the backoff sleep happens outside the in-flight slot.
        """
        prediction = trace = error = None
        calls = tokens = 0
        for attempt in range(self.retry.max_attempts):
            with self.limit.slot(), self._waiting("task model"), \
                    dspy.context(lm=lm, adapter=self.adapter, trace=[]), dspy.track_usage() as tracker:
                try:
                    prediction = program(**example.inputs())
                    trace = list(dspy.settings.trace)
                    error = None if _has_answer(prediction) else EmptyReply("the model returned an empty answer")
                except Exception as exc:  # classified below: nothing is swallowed silently
                    error = exc
            c, t = _usage_totals(tracker)
            calls, tokens = calls + c, tokens + t
            if error is None:
                self.limit.succeeded()
                break
            kind = classify_error(error)
            if kind == "auth":
                raise ProviderAuthError(f"the provider refused the credentials: {short_error(error)}") from error
            if is_rate_limit(error) and attempt == self.retry.max_attempts - 1:
                self.limit.rate_limited()  # the last 429 is not retried, but it still slows the run down
                with self._lock:
                    self.usage.rate_limits += 1
            if kind != "transient" or attempt == self.retry.max_attempts - 1:
                break
            time.sleep(self._count_retry(error, attempt))
        return prediction, trace, error, calls, tokens

    def _agent_trace(self, program: dspy.Module, prediction: Any, trace: list, tools: list[dict[str, Any]],
                     eid: str) -> AgentTrace:
        """A pipeline_fn's own trace (adapters/pipeline_fn.py), else DSPy's predictor steps and tool calls."""
        given = getattr(prediction, PREDICTION_TRACE_ATTR, None)
        if isinstance(given, AgentTrace):
            given.input_id = eid
            return given
        output = _plain_output(prediction)
        final = next(iter(output.values())) if len(output) == 1 else output
        optimized = self._optimized.get(id(program), frozenset())
        return AgentTrace.from_steps(self._plain_trace(trace), tools, optimized, final, eid)

    def _plain_trace(self, trace: list) -> list[dict[str, Any]]:
        steps = []
        for predictor, inputs, outputs in trace:
            steps.append(
                {
                    "predictor": self._predictor_names.get(id(predictor), type(predictor).__name__),
                    "inputs": {k: str(v) for k, v in dict(inputs).items()},
                    "outputs": _plain_output(outputs),
                }
            )
        return steps


def _answers(requests: Sequence[tuple[Candidate, list[dspy.Example]]], plans: Mapping[str, tuple]) -> list[EvalResult]:
    """Each request's results on exactly its examples; a pair asked for twice counts once (first request).

    Identical requests get the same `EvalResult` object, as if the duplicate had not been asked.
    """
    out: dict[tuple[str, tuple[str, ...]], EvalResult] = {}
    counted: set[tuple[str, str]] = set()
    for c, examples in requests:
        ids = tuple(dict.fromkeys(map(example_id, examples)))
        if (c.fingerprint, ids) in out:
            continue
        results, todo, replayed = plans[c.fingerprint]
        new = {eid for eid, _ in todo}
        paid = new | {key[1] for key in replayed}
        fresh = [eid for eid in ids if (c.fingerprint, eid) not in counted]
        counted.update((c.fingerprint, eid) for eid in fresh)
        out[c.fingerprint, ids] = EvalResult(c.fingerprint, {eid: results[eid] for eid in ids},
                                             new_calls=sum(e in new for e in fresh),
                                             cache_hits=sum(e not in paid for e in fresh))
    return [out[c.fingerprint, tuple(dict.fromkeys(map(example_id, examples)))] for c, examples in requests]


def _has_answer(prediction: Any) -> bool:
    """Whether any output field holds something: an all-empty prediction is no answer (never a 0)."""
    output = _plain_output(prediction)
    if not output:
        return True  # a program without declared outputs: nothing to judge here
    return any(v is not None and (not isinstance(v, str) or v.strip()) for v in output.values())
