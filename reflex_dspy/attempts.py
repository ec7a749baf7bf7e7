"""Each model call of a run, made with the retry policy of retries.py: task-model calls, metric
(judge) calls and reasoning-model calls, each attempt one request, each retry counted.

Why apart from the Evaluator: what to do when a provider fails (retry, slow down, give up, stop
the run) is one job; planning and running evaluations is another. The `Evaluator` owns one
`Attempts`; so does nothing else, so every retry is counted in the run's one ledger and every
429 is seen by the run's one throttle.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dspy

from reflex_dspy.data import example_id
from reflex_dspy.errors import MetricError, ProviderAuthError
from reflex_dspy.eval_results import plain_output, usage_totals
from reflex_dspy.ledger import Ledger
from reflex_dspy.metrics import MetricFailure, call_metric
from reflex_dspy.metrics.base import clip
from reflex_dspy.retries import EmptyReply, RetryPolicy, classify_error, is_rate_limit, short_error
from reflex_dspy.throttle import AdaptiveLimit
from reflex_dspy.trace import AgentTrace, using_trace


class Attempts:
    """The retrying side of one run's model calls, and what is in flight now (for the heartbeat)."""

    def __init__(self, ledger: Ledger, retry: RetryPolicy, limit: AdaptiveLimit, seed: int) -> None:
        self.ledger = ledger
        self.retry = retry
        self.limit = limit
        self._rng = random.Random(seed)
        self._in_flight: dict[int, tuple[float, str]] = {}  # model calls now running → (start, which model)

    @property
    def waiting(self) -> tuple[float, str] | None:
        """(start, "task model" or "reasoning model") of the oldest model call still in flight."""
        calls = list(self._in_flight.values())  # one C-level copy under the GIL: no lock needed
        return min(calls) if calls else None

    @contextmanager
    def waiting_on(self, who: str) -> Iterator[None]:
        # Lock-free: a dict's item assignment and pop are atomic, and every call holding a lock
        # here made 16 workers queue for it twice per model call (profiled, bench/ PDO scaling).
        token = object()
        self._in_flight[id(token)] = (time.monotonic(), who)
        try:
            yield
        finally:
            self._in_flight.pop(id(token), None)

    def task(self, program: dspy.Module, lm: dspy.LM, adapter: Any, example: dspy.Example, callbacks: list):
        """`(prediction, trace, error, calls, tokens)` of one example on one model, with DSPy `callbacks`.

        Transient provider errors and empty answers are retried with backoff; a 429 also lowers
        the concurrency (throttle.py), and the backoff sleep happens outside the in-flight slot.
        """
        prediction = trace = error = None
        calls = tokens = 0
        for attempt in range(self.retry.max_attempts):
            with self.limit.slot(), self.waiting_on("task model"), \
                    dspy.context(lm=lm, adapter=adapter, trace=[], callbacks=callbacks), \
                    dspy.track_usage() as tracker:
                try:
                    prediction = program(**example.inputs())
                    trace = list(dspy.settings.trace)
                    error = None if _has_answer(prediction) else EmptyReply("the model returned an empty answer")
                except Exception as exc:  # classified below: nothing is swallowed silently
                    error = exc
            c, t = usage_totals(tracker)
            calls, tokens = calls + c, tokens + t
            if error is None:
                if self.limit.limit < self.limit.max_workers:  # only a throttled run has a streak to count
                    self.limit.succeeded()
                break
            kind = classify_error(error)
            if kind == "auth":
                raise ProviderAuthError(f"the provider refused the credentials: {short_error(error)}") from error
            if is_rate_limit(error) and attempt == self.retry.max_attempts - 1:
                self.limit.rate_limited()  # the last 429 is not retried, but it still slows the run down
                with self.ledger.lock:
                    self.ledger.usage.rate_limits += 1
            if kind != "transient" or attempt == self.retry.max_attempts - 1:
                break
            time.sleep(self._count_retry(error, attempt))
        return prediction, trace, error, calls, tokens

    def metric(self, metric: Callable, example: dspy.Example, prediction: Any, agent: AgentTrace):
        """`(scored, error, calls, tokens)`: the metric on one prediction, an LLM judge's transient
        provider errors retried and counted like task calls (models carry no DSPy retries of
        their own); a `MetricFailure`, or a transient error past the last attempt, fails the example."""
        calls = tokens = 0
        for attempt in range(self.retry.max_attempts):
            error = None
            with dspy.track_usage() as tracker, using_trace(agent):  # metrics may read current_trace()
                try:
                    scored = call_metric(metric, example, prediction, None)
                except MetricFailure as exc:
                    error, scored = exc, None
                except Exception as exc:  # a judge's provider error: retried below if transient
                    kind = classify_error(exc)
                    if kind == "auth":
                        raise ProviderAuthError(f"the provider refused the credentials: {short_error(exc)}") from exc
                    if kind != "transient":  # the metric's own bug: stop, saying on which example
                        raise MetricError(f"the metric raised {short_error(exc)} on example "
                                          f"{example_id(example)} ({_inputs_text(example)})") from exc
                    error, scored = exc, None
            c, t = usage_totals(tracker)
            calls, tokens = calls + c, tokens + t
            if error is None or isinstance(error, MetricFailure) or attempt == self.retry.max_attempts - 1:
                return scored, error, calls, tokens
            time.sleep(self._count_retry(error, attempt))
        raise AssertionError("unreachable: the last attempt returns")

    def reasoning(self, call: Callable[[], tuple[dict[str, Any], bool]]):
        """`(fields, truncated, error, calls, tokens)` of one reasoning reply, transient errors retried.

        Same policy and counters as task calls: each retry is one more request, counted in
        `usage.retries`, and each 429 also slows the evaluations down. A transient error that
        outlasts the attempts is raised (nothing paid to journal); any other error is returned,
        to be journaled as a paid failure.
        """
        calls = tokens = 0
        for attempt in range(self.retry.max_attempts):
            with self.waiting_on("reasoning model"), dspy.track_usage() as tracker:
                try:
                    fields, truncated = call()
                    error = None
                except Exception as exc:  # classified below
                    error, fields, truncated = exc, {}, False
            c, t = usage_totals(tracker)
            calls, tokens = calls + c, tokens + t
            if error is None:
                break
            kind = classify_error(error)
            if kind == "auth":
                raise ProviderAuthError(f"the provider refused the credentials: {short_error(error)}") from error
            if kind != "transient":
                break
            if attempt == self.retry.max_attempts - 1:
                with self.ledger.lock:
                    self.ledger.reasoning_failed(short_error(error, 120))
                raise error  # not a paid reply: the proposer's next attempt must really ask again
            time.sleep(self._count_retry(error, attempt))
        return fields, truncated, error, calls, tokens

    def _count_retry(self, error: BaseException, attempt: int) -> float:
        """Count one retry (and a rate limit, which also lowers the concurrency); the delay to wait."""
        rate_limited = is_rate_limit(error)
        if rate_limited:
            self.limit.rate_limited()
        with self.ledger.lock:
            self.ledger.usage.retries += 1
            self.ledger.usage.rate_limits += int(rate_limited)
            return self.retry.delay(attempt, self._rng, error)


def _has_answer(prediction: Any) -> bool:
    """Whether any output field holds something: an all-empty prediction is no answer (never a 0)."""
    output = plain_output(prediction)
    if not output:
        return True  # a program without declared outputs: nothing to judge here
    return any(v is not None and (not isinstance(v, str) or v.strip()) for v in output.values())


def _inputs_text(example: dspy.Example) -> str:
    """The example's inputs, short, so a user can find it in the data: `input="Customer 3: …"`."""
    return ", ".join(f"{name}={clip(str(value), 60)}" for name, value in example.inputs().items())
