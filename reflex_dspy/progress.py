"""Console progress for long runs: a live status line, a bar per evaluation, a line per iteration.

Output goes to stderr so that stdout carries only the summary (scripts can capture it).
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
        self._budget: int | None = None
        self._calls = 0
        self._best: float | None = None
        self._iteration = 0

    def _status(self) -> str:
        parts = [f"iter {self._iteration}"] if self._iteration else []
        if self._budget:
            parts.append(f"calls {self._calls}/{self._budget}")
        if self._best is not None:
            parts.append(f"best {self._best:.3f}")
        return " · ".join(parts)

    def on_resume(self, info: dict[str, Any], baseline: Measurement | None, records: list[IterationRecord]) -> None:
        done = f"after iteration {records[-1].iteration}" if records else "from the start of the search"
        self.console.print(f"[bold]Resuming run {info['run_id']}[/] {done}; nothing already paid for is paid again")
        if records:
            self._iteration = records[-1].iteration
        self.on_run_start(info)

    def on_run_start(self, info: dict[str, Any]) -> None:
        sizes = info["split_sizes"]
        models = info["models"]
        self._budget = info.get("budget")
        self.console.print(
            f"[bold]reflex[/] {info['config']['strategy']} · task {models['task']} · reasoning {models['reasoning']}"
            f" · train/val/test {sizes['train']}/{sizes['val']}/{sizes['test']}"
            f" · metric {', '.join(info['metrics'])}"
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
        if done == 0:
            if self._task is not None:
                self.progress.remove_task(self._task)
            self._task = self.progress.add_task(label, total=max(total, 1), phase=self._phase, status=self._status())
        elif self._task is not None:
            if label.startswith(("iter", "val")):
                self._calls += 1
            self.progress.update(self._task, completed=done, status=self._status())

    def on_baseline(self, baseline: Measurement) -> None:
        self.console.print(f"Baseline on test: {baseline.describe()}")

    def on_iteration(self, record: IterationRecord) -> None:
        self._iteration = record.iteration
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
