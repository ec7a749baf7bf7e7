"""Adaptive concurrency: slow down when the provider rate-limits, speed up again when it stops.

Over-threading a rate-limited provider must never corrupt scores: a 429 is retried with
backoff (retries.py), and every 429 also halves how many calls may be in flight at once, so a
storm of them turns into a slower run instead of a run of failures. After `recover_after`
successes in a row the limit grows by one again, up to `max_workers`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class AdaptiveLimit:
    """A semaphore whose size follows the provider: halved on each rate limit, +1 on recovery."""

    def __init__(self, max_workers: int, *, recover_after: int = 20,
                 on_change: Callable[[str], None] | None = None) -> None:
        self.max_workers = max_workers
        self.limit = max_workers
        self.lowest = max_workers
        self.recover_after = recover_after
        self.on_change = on_change
        self.rate_limits = 0
        self._active = 0
        self._streak = 0
        self._cond = threading.Condition()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the `limit` in-flight slots for the duration of one provider call."""
        with self._cond:
            while self._active >= self.limit:
                self._cond.wait()
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def rate_limited(self) -> None:
        """The provider answered 429: halve the concurrency (never below one call at a time)."""
        with self._cond:
            self.rate_limits += 1
            self._streak = 0
            before, self.limit = self.limit, max(1, self.limit // 2)
            self.lowest = min(self.lowest, self.limit)
        if self.limit != before:
            self._say(f"provider rate-limited (429): concurrency {before} → {self.limit}, retrying with backoff")

    def succeeded(self) -> None:
        """A call went through; enough of them in a row let one more call run in parallel."""
        with self._cond:
            if self.limit >= self.max_workers:
                return
            self._streak += 1
            if self._streak < self.recover_after:
                return
            self._streak = 0
            before, self.limit = self.limit, self.limit + 1
            self._cond.notify_all()
        self._say(f"provider recovered: concurrency {before} → {self.limit}")

    def _say(self, message: str) -> None:
        if self.on_change is not None:
            self.on_change(message)
