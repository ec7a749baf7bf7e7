"""The tracker interface the run lifecycle reports to.

The lifecycle never writes files or prints by itself: it calls these hooks, and each writer
(console progress today; MLflow and the reflex run layout) implements the ones it needs.
Every hook has a do-nothing default so a writer overrides only what it records.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import dspy

    from reflex_dspy.result import IterationRecord, Measurement, RunResult


class Tracker:
    """Receives the events of one run, in order: start (or resume), baseline, iterations, result."""

    def on_run_start(self, info: dict[str, Any]) -> None:
        """A new run: run id and directory, config (no secrets), split sizes, models, initial prompt."""

    def on_resume(
        self, info: dict[str, Any], baseline: Measurement | None, records: list[IterationRecord]
    ) -> None:
        """Instead of `on_run_start` when an interrupted run continues: what was already recorded."""

    def on_status(self, phase: str, detail: str = "") -> None:
        """Lifecycle phase changes: evaluating baseline, searching, evaluating best, finalizing."""

    def on_progress(self, label: str, done: int, total: int) -> None:
        """Examples done within one evaluation."""

    def on_heartbeat(self, state: dict[str, Any]) -> None:
        """Every few seconds from a background thread: phase, iteration, metric calls against the
        budget, best score so far, and how long a reasoning call has been running (`waiting_seconds`)."""

    def on_notice(self, message: str) -> None:
        """Something the user should know mid-run, e.g. the provider rate-limited and the run slowed down."""

    def on_baseline(self, baseline: Measurement) -> None:
        """The baseline measured on test."""

    def on_iteration(self, record: IterationRecord) -> None:
        """One finished iteration, with its val score when val exists."""

    def on_checkpoint(self, state: dict[str, Any]) -> None:
        """Resumable state (JSON data) after the start, after each iteration and when the search ends."""

    def on_paid_call(self, entry: dict[str, Any]) -> None:
        """One paid result (an evaluated example or a reasoning reply), so a resume need not pay again.

        Called from evaluation worker threads, serialised by the evaluator's lock.
        """

    def on_trial(self, trial: dict[str, Any]) -> None:
        """One (candidate, example) pair just scored, failed ones included: the live trials feed.

        Called from evaluation worker threads, several at once: a writer serialises its own writes.
        """

    def on_program(self, program: dspy.Module) -> None:
        """The optimized program (the selected candidate applied to the student), just before `on_result`."""

    def on_result(self, result: RunResult) -> None:
        """The final outcome, once."""

    def on_error(self, error: BaseException) -> None:
        """The run stopped on an error (Ctrl-C included)."""


class Trackers(Tracker):
    """Fans each event out to several trackers, in order."""

    def __init__(self, trackers: Iterable[Tracker] = ()) -> None:
        self.trackers = list(trackers)

    def listens(self, hook: str) -> bool:
        """Whether any tracker does something on `hook` (else its argument need not be built)."""
        return any(getattr(type(t), hook, None) is not getattr(Tracker, hook) for t in self.trackers)

    def _each(self, hook: str, *args: Any) -> None:
        for tracker in self.trackers:
            getattr(tracker, hook)(*args)

    def on_run_start(self, info):
        self._each("on_run_start", info)

    def on_resume(self, info, baseline, records):
        self._each("on_resume", info, baseline, records)

    def on_status(self, phase, detail=""):
        self._each("on_status", phase, detail)

    def on_progress(self, label, done, total):
        self._each("on_progress", label, done, total)

    def on_heartbeat(self, state):
        self._each("on_heartbeat", state)

    def on_notice(self, message):
        self._each("on_notice", message)

    def on_baseline(self, baseline):
        self._each("on_baseline", baseline)

    def on_iteration(self, record):
        self._each("on_iteration", record)

    def on_checkpoint(self, state):
        self._each("on_checkpoint", state)

    def on_paid_call(self, entry):
        self._each("on_paid_call", entry)

    def on_trial(self, trial):
        self._each("on_trial", trial)

    def on_program(self, program):
        self._each("on_program", program)

    def on_result(self, result):
        self._each("on_result", result)

    def on_error(self, error):
        self._each("on_error", error)
