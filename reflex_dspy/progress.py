"""Console progress for long runs: a live status line, a bar per evaluation, a line per iteration.

The status line (phase, iteration, metric calls against the budget, best so far) is fed by the
run's heartbeat, so it keeps moving while the reasoning model thinks; without a terminal (CI
logs) a line is printed every `QUIET_SECONDS` of such silence instead. Output goes to stderr so
that stdout carries only the summary (scripts can capture it).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from reflex_dspy.tracking.base import Tracker

if TYPE_CHECKING:
    from reflex_dspy.result import IterationRecord, Measurement, RunResult


QUIET_SECONDS = 30.0


def status_text(state: dict[str, Any]) -> str:
    """`iter 3/10 · calls 40/100 · best 0.800 · reasoning model thinking 12s`, from a heartbeat
    (`iter 3` alone when the budget, not an iteration count, limits the run)."""
    parts = []
    if state.get("iteration"):
        cap = state.get("max_iterations")
        parts.append(f"iter {state['iteration']}" + (f"/{cap}" if cap else ""))
    if state.get("budget"):
        parts.append(f"calls {state['search_calls']}/{state['budget']}")
    elif state.get("metric_calls"):
        parts.append(f"calls {state['metric_calls']}")
    if state.get("best") is not None:
        parts.append(f"best {state['best']:.3f}")
    if state.get("waiting_seconds") is not None:
        who = state.get("waiting_on") or "reasoning model"
        parts.append(f"{who} {'thinking' if who == 'reasoning model' else 'call waiting'} {state['waiting_seconds']:.0f}s")
    return " · ".join(parts)


class ConsoleTracker(Tracker):
    """Shows what the run is doing; records nothing."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        self.progress = Progress(
            TextColumn("[bold blue]{task.fields[phase]}[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            transient=True,
            disable=not self.console.is_terminal and not sys.stderr.isatty(),
        )
        self._task = None
        self._phase = "starting"
        self._best: float | None = None
        self._state: dict[str, Any] = {}
        self._quiet_reported = 0.0

    def _status(self) -> str:
        return status_text(self._state)

    def on_heartbeat(self, state: dict[str, Any]) -> None:
        self._state = state
        if self.progress.disable or not self.progress.live.is_started:
            waiting = state.get("waiting_seconds") or 0.0
            if waiting < self._quiet_reported:
                self._quiet_reported = 0.0  # a new reasoning call
            if waiting >= self._quiet_reported + QUIET_SECONDS:
                self._quiet_reported = waiting
                self.console.print(f"[dim]… {state['phase']} · {status_text(state)}[/]")
        elif self._task is not None:
            self.progress.update(self._task, status=self._status())

    def on_notice(self, message: str) -> None:
        self.console.print(f"[yellow]{escape(message)}[/]")

    def on_resume(self, info: dict[str, Any], baseline: Measurement | None, records: list[IterationRecord]) -> None:
        done = f"after iteration {records[-1].iteration}" if records else "from the start of the search"
        self.console.print(f"[bold]Resuming run {info['run_id']}[/] {done}; nothing already paid for is paid again")
        self.on_run_start(info)

    def on_run_start(self, info: dict[str, Any]) -> None:
        sizes = info["split_sizes"]
        models = info["models"]
        self.console.print(
            f"[bold]reflex[/] {info['config']['strategy']} · task {models['task']} · reasoning {models['reasoning']}"
            f" · train/val/test {sizes['train']}/{sizes['val']}/{sizes['test']}"
            f" · metric {', '.join(info['metrics'])}"
        )
        if info.get("answer_max_tokens"):
            self.console.print(
                f"[dim]The expected outputs are short labels: the embedded task model's answers are capped at "
                f"{info['answer_max_tokens']} tokens.[/]"
            )
        if info.get("run_dir"):
            branch = info.get("branched_from")
            origin = f" · branched from run {branch['run_id']} iteration {branch['iteration']}" if branch else ""
            self.console.print(f"Run {info['run_id']}: {escape(info['run_dir'])}{origin}")
        for warning in info.get("warnings", []):
            self.console.print(f"[yellow]warning:[/] {warning}")
        self.progress.start()

    def on_status(self, phase: str, detail: str = "") -> None:
        self._phase = phase
        if not self.progress.live.is_started or self.progress.disable:
            self.console.print(f"[dim]… {phase}{' ' + detail if detail else ''}[/]")

    def on_progress(self, label: str, done: int, total: int) -> None:
        if self.progress.disable:  # no terminal: no bar to move (this runs once per metric call)
            return
        if done == 0:
            if self._task is not None:
                self.progress.remove_task(self._task)
            self._task = self.progress.add_task(label, total=max(total, 1), phase=self._phase, status=self._status())
        elif self._task is not None:
            self.progress.update(self._task, completed=done, status=self._status())

    def on_baseline(self, baseline: Measurement) -> None:
        self.console.print(f"Baseline on test: {baseline.describe()}")

    def on_iteration(self, record: IterationRecord) -> None:
        score = "n/a" if record.score is None else f"{record.score:.4f}"
        delta = "" if record.delta is None else f" Δ{record.delta:+.4f}"
        val = "" if record.val_score is None else f" · val {record.val_score:.4f}"
        if record.val_score is not None and (self._best is None or record.val_score > self._best):
            self._best = record.val_score
            val += " ★"
        failed = f" · [red]{record.n_failed} failed[/]" if record.n_failed else ""
        self.console.print(
            f"Iter {record.iteration} {escape(f'[{record.phase}]')} train {score}{delta}{val}{failed}"
            f" — {escape(record.change_summary)}"
        )

    def on_result(self, result: RunResult) -> None:
        self._stop()

    def on_error(self, error: BaseException) -> None:
        self._stop()

    def _stop(self) -> None:
        if self.progress.live.is_started:
            self.progress.stop()
