"""The tracker interface the run lifecycle reports to.

The lifecycle never writes files or prints by itself: it calls these hooks, and each writer
(console progress today; MLflow and the reflex run layout) implements the ones it needs.
Every hook has a do-nothing default so a writer overrides only what it records.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reflex_dspy.result import IterationRecord, Measurement, RunResult


class Tracker:
    """Receives the events of one run, in order: start, baseline, iterations, result."""

    def on_run_start(self, info: dict[str, Any]) -> None:
        """Config (no secrets), split sizes, models, initial prompt."""

    def on_status(self, phase: str, detail: str = "") -> None:
        """Lifecycle phase changes: evaluating baseline, searching, evaluating best, finalizing."""

    def on_progress(self, label: str, done: int, total: int) -> None:
        """Examples done within one evaluation."""

    def on_baseline(self, baseline: Measurement) -> None:
        """The baseline measured on test."""

    def on_iteration(self, record: IterationRecord) -> None:
        """One finished iteration, with its val score when val exists."""

    def on_checkpoint(self, state: dict[str, Any]) -> None:
        """Resumable state after an iteration."""

    def on_result(self, result: RunResult) -> None:
        """The final outcome, once."""

    def on_error(self, error: BaseException) -> None:
        """The run stopped on an error (Ctrl-C included)."""


class Trackers(Tracker):
    """Fans each event out to several trackers, in order."""

    def __init__(self, trackers: Iterable[Tracker] = ()) -> None:
        self.trackers = list(trackers)

    def _each(self, hook: str, *args: Any) -> None:
        for tracker in self.trackers:
            getattr(tracker, hook)(*args)

    def on_run_start(self, info):
        self._each("on_run_start", info)

    def on_status(self, phase, detail=""):
        self._each("on_status", phase, detail)

    def on_progress(self, label, done, total):
        self._each("on_progress", label, done, total)

    def on_baseline(self, baseline):
        self._each("on_baseline", baseline)

    def on_iteration(self, record):
        self._each("on_iteration", record)

    def on_checkpoint(self, state):
        self._each("on_checkpoint", state)

    def on_result(self, result):
        self._each("on_result", result)

    def on_error(self, error):
        self._each("on_error", error)
