"""What a run has paid for and may still pay: the metric-call budget, the usage totals, the
paid-call journal (each paid entry handed out, replayed on resume, settled at checkpoints),
calls made by an optimizer we delegate to, and the cache of reasoning-model replies.

Why apart from the `Evaluator`: scheduling work on models (pools, retries, throttling) is one
job, keeping honest accounts of it another. The Evaluator pays for task-model calls and the
Proposer (through `Evaluator.reasoned`) for reasoning calls; both file them in this one ledger,
which a strategy reads only through `SearchContext.budget_left` and `SearchContext.spent`.

Journal entries replayed after the last checkpoint were paid by the interrupted process but are
not in the checkpoint's totals yet: they stay "pending" and are counted as paid when first used
(or at the next checkpoint, `settle()`), so a resumed run ends with the same totals as an
uninterrupted one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from reflex_dspy.errors import BudgetExhausted
from reflex_dspy.eval_results import ExampleResult, Usage
from reflex_dspy.tracking.redact import redact_error

PaidFn = Callable[[dict[str, Any]], None]
CacheKey = tuple[str, str, float, int]  # (fingerprint, example id, temperature, pass)


class Ledger:
    """The run's accounts. Methods named "caller holds the lock" are for the Evaluator, which takes
    `lock` around a whole batch of updates; every other method takes it itself."""

    def __init__(self, budget: int | None = None) -> None:
        self.budget = budget
        self.held = 0  # calls the search may not spend: kept to confirm the pick (confirmation.py)
        self.usage = Usage()
        self.lock = threading.Lock()
        self.on_paid: PaidFn | None = None  # the journal writer
        self.paid_entries = 0  # journal entries so far (replayed ones included)
        self.results: dict[CacheKey, ExampleResult] = {}  # every scored (candidate, example, ...) pair
        self.replies: dict[str, dict[str, Any]] = {}  # reasoning replies by the digest of their request
        self.pending: dict[CacheKey | str, dict[str, Any]] = {}  # replayed, paid but not yet counted

    # -- the budget -----------------------------------------------------------------------
    @property
    def spent(self) -> int:
        """Metric calls of the search so far (what the budget caps)."""
        return self.usage.search_calls

    @property
    def budget_left(self) -> int | None:
        """Calls the search may still spend: the budget less what it spent and what is held back."""
        return None if self.budget is None else max(self.budget - self.held - self.usage.search_calls, 0)

    def check(self, needed: int, label: str) -> None:
        """Raise `BudgetExhausted` before spending `needed` metric calls past the budget."""
        if self.budget is not None and needed > self.budget_left:
            held = f" ({self.held} held back to confirm the pick)" if self.held else ""
            left = self.budget_left  # calls left but too few: the stop says so, not "spent"
            raise BudgetExhausted(
                f"metric-call budget spent: {self.usage.search_calls}/{self.budget} used{held}, "
                f"{needed} more needed for {label}",
                stop_reason=f"metric-call budget: {left} call{'s' * (left != 1)} left, too few for the next evaluation "
                            f"({needed} needed)" if left else None,
            )

    def hold(self, calls: int) -> None:
        """Keep `calls` of the budget from the search (the calls that confirm the pick)."""
        self.held = max(calls, 0)

    @contextmanager
    def spending_held(self) -> Iterator[None]:
        """Within: the held calls may be spent too (the confirmation that they were kept for)."""
        held, self.held = self.held, 0
        try:
            yield
        finally:
            self.held = held

    def reserve(self, needed: int, label: str) -> None:
        """Check and commit `needed` search calls at once, before they are spent: evaluations that
        run side by side (PDO scores its champion beside the last duels) each see the others'
        calls, so together they never spend past the budget."""
        with self.lock:
            self.check(needed, label)
            self.usage.search_calls += needed

    def release(self, reserved: int) -> None:
        """Give back a reservation whose evaluation was interrupted before it was accounted."""
        with self.lock:
            self.usage.search_calls -= reserved

    def count_external(self, *, metric_calls: int = 0, lm_calls: int = 0, eval_tokens: int = 0,
                       reasoning_calls: int = 0, reasoning_tokens: int = 0) -> None:
        """Account for calls made by an optimizer we delegate to (GEPA), which runs the program itself.

        They count against the search budget like our own evaluations, so every total stays true.
        """
        with self.lock:
            self.usage.metric_calls += metric_calls
            self.usage.search_calls += metric_calls
            self.usage.lm_calls += lm_calls
            self.usage.eval_tokens += eval_tokens
            self.usage.reasoning_calls += reasoning_calls
            self.usage.reasoning_tokens += reasoning_tokens

    # -- the journal ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Totals and the journal position they include; the caches themselves live in the journal."""
        with self.lock:
            return {"usage": self.usage.to_dict(), "paid_entries": self.paid_entries}

    def replay(self, entries: Sequence[Mapping[str, Any]], state: Mapping[str, Any] | None = None) -> None:
        """Restore totals from a checkpoint `state` and the caches from journal `entries`.

        Entries past `state["paid_entries"]` were paid after that checkpoint: they become
        pending and are counted when used. With `state=None` (a branch inheriting its parent's
        journal) every entry is a cache hit that this run did not pay for.
        """
        accounted = len(entries) if state is None else state.get("paid_entries", 0)
        with self.lock:
            if state is not None:
                self.usage = Usage(**state.get("usage", {}))
                self.paid_entries += len(entries)
            for index, entry in enumerate(entries):
                if entry.get("kind") == "reasoning":
                    key = entry["key"]
                    self.replies[key] = dict(entry)
                else:
                    key = tuple(entry["key"])
                    self.results[key] = ExampleResult(**entry["result"])
                if index >= accounted:
                    self.pending[key] = dict(entry)

    def settle(self) -> None:
        """Count replayed entries no replayed step used; called before each checkpoint."""
        with self.lock:
            for entry in self.pending.values():
                self.account(entry)
            self.pending.clear()

    def use_replayed(self, key: CacheKey | str) -> None:
        """A replayed entry is used: count it as paid now, once (caller holds the lock)."""
        entry = self.pending.pop(key, None)
        if entry is not None:
            self.account(entry)

    def account(self, entry: Mapping[str, Any]) -> None:
        """Add one paid entry to the totals (caller holds the lock)."""
        if entry.get("kind") == "reasoning":
            self.usage.reasoning_calls += entry["calls"]
            self.usage.reasoning_tokens += entry["tokens"]
            if entry.get("error"):
                self.reasoning_failed(entry["error"])
        else:
            self.usage.metric_calls += entry.get("metric_calls", 1)
            if kind := entry.get("no_answer"):  # "too_long" or "unreadable": a Usage counter each
                setattr(self.usage, kind, getattr(self.usage, kind) + 1)
            self.usage.lm_calls += entry["calls"]
            self.usage.eval_tokens += entry["tokens"]
            self.usage.metric_lm_calls += entry.get("metric_lm_calls", 0)
            self.usage.metric_tokens += entry.get("metric_tokens", 0)

    def reasoning_failed(self, error: str) -> None:
        """Count a reasoning request that got no usable reply (caller holds the lock)."""
        self.usage.reasoning_failed += 1
        if self.usage.reasoning_error is None:
            self.usage.reasoning_error = redact_error(error)

    def emit(self, entry: dict[str, Any]) -> None:
        """Hand a paid entry to the journal (caller holds the lock, so lines never interleave)."""
        self.paid_entries += 1
        if self.on_paid is not None:
            self.on_paid(entry)

    # -- the reasoning-reply cache --------------------------------------------------------
    def reply(self, digest: str) -> dict[str, Any] | None:
        """The journaled reply to a reasoning request, counted as paid if it was replayed unpaid."""
        with self.lock:
            entry = self.replies.get(digest)
            if entry is not None:
                self.use_replayed(digest)
            return entry

    def file_reply(self, digest: str, entry: dict[str, Any]) -> None:
        """A new paid reasoning reply (or paid failure): counted, cached and journaled."""
        with self.lock:
            self.account(entry)
            self.replies[digest] = entry
            self.emit(entry)
