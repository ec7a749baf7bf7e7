"""The reflex run layout writer: the run on disk, as it goes (file list in store.py).

Whole files are replaced atomically; iteration files and result.json are written once; the
journal is appended line by line as results are paid for, so `kill -9` at any moment leaves a
directory a resume can continue from.
"""

from __future__ import annotations

import json
import os
import threading
from typing import TYPE_CHECKING, Any

from reflex_dspy.run_status import (
    FAILURE,
    HEARTBEAT,
    TRIALS,
    failure_record,
    heartbeat_seconds,
    is_interruption,
)
from reflex_dspy.tracking.base import Tracker
from reflex_dspy.tracking.files import dumps, repair_jsonl, write_atomic, write_json, write_once
from reflex_dspy.tracking.schema import TARGET_COMPARISON, FileContext, config_document
from reflex_dspy.tracking.store import (
    BASELINE,
    BEST_PROMPT,
    CHECKPOINT,
    CONFIG,
    FOREIGN_PID,
    JOURNAL,
    PID,
    RESULT,
    Run,
    iteration_file,
    pid_sentinel,
)

if TYPE_CHECKING:
    import dspy

    from reflex_dspy.result import IterationRecord, Measurement, RunResult

PROGRAM = "program.json"


class LayoutTracker(Tracker):
    """Writes one run directory allocated by `RunStore.create_run()`."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self._journal = None
        self._trials = None  # trials.jsonl (run_status.py), appended from evaluation workers
        self._beat: dict[str, Any] = {}  # the last heartbeat state (a phase change keeps its numbers)
        self._lock = threading.Lock()
        self._context = FileContext()

    def _open_journal(self) -> None:
        repair_jsonl(self.run.file(JOURNAL))
        self._journal = open(self.run.file(JOURNAL), "a", encoding="utf-8")  # noqa: SIM115 (closed at the end)
        repair_jsonl(self.run.file(TRIALS))
        self._trials = open(self.run.file(TRIALS), "a", encoding="utf-8")  # noqa: SIM115 (closed at the end)

    def _close(self) -> None:
        with self._lock:
            if self._journal is not None:
                self._journal.close()
                self._journal = None
            if self._trials is not None:
                self._trials.close()
                self._trials = None
        self.run.file(PID).unlink(missing_ok=True)
        self.run.file(FOREIGN_PID).unlink(missing_ok=True)

    def _mark_running(self) -> None:
        """aevyra-reflex's live-run marker (`running`, the bare PID) next to our `run.pid`: their
        RunStore and dashboard show a run as running only while it names a live process, and as
        interrupted once a checkpoint exists without it. Removed by `_close` however the run ends."""
        write_atomic(self.run.file(FOREIGN_PID), str(os.getpid()))

    def on_run_start(self, info: dict[str, Any]) -> None:
        comparison = (info.get("metadata") or {}).get("target_comparison")
        if comparison:  # --target benchmarking: reusable later with --verdict-results
            write_json(self.run.file(TARGET_COMPARISON), comparison)
        write_once(self.run.file(CONFIG), dumps(config_document(info)))
        self._context.start(info)
        self._mark_running()
        self._open_journal()

    def on_resume(self, info, baseline, records) -> None:
        write_json(self.run.file(PID), pid_sentinel())
        self._mark_running()
        self._context.start(info, records)
        self.run.file(FAILURE).unlink(missing_ok=True)  # a failed run continues: it is running again
        self._open_journal()

    def on_status(self, phase: str, detail: str = "") -> None:
        self.on_heartbeat({**self._beat, "phase": phase, "detail": detail})

    def on_heartbeat(self, state: dict[str, Any]) -> None:
        """heartbeat.json: the runner's last word, so a reader can tell a silent run from a live one."""
        import time

        self._beat = {"interval": heartbeat_seconds(), **state}
        write_json(self.run.file(HEARTBEAT), {**self._beat, "time": time.time()})

    def on_trial(self, trial: dict[str, Any]) -> None:
        with self._lock:
            if self._trials is not None:
                self._trials.write(dumps_line(trial))
                self._trials.flush()

    def on_baseline(self, baseline: Measurement) -> None:
        write_json(self.run.file(BASELINE), baseline.to_dict())

    def on_iteration(self, record: IterationRecord) -> None:
        self._context.iteration(record)
        path = self.run.file(iteration_file(record.iteration))
        if not path.exists():  # re-run after a crash between this file and the checkpoint
            write_once(path, dumps(record.to_dict()))

    def on_checkpoint(self, state: dict[str, Any]) -> None:
        write_json(self.run.file(CHECKPOINT), self._context.checkpoint(state))
        best = state.get("best") or {}
        if best.get("prompt"):
            write_atomic(self.run.file(BEST_PROMPT), best["prompt"].rstrip("\n") + "\n")

    def on_paid_call(self, entry: dict[str, Any]) -> None:
        with self._lock:
            if self._journal is not None:
                self._journal.write(dumps_line(entry))
                self._journal.flush()  # in the kernel's hands: survives kill -9 of this process

    def on_program(self, program: dspy.Module) -> None:
        target = self.run.file(PROGRAM)
        tmp = target.with_name(f".{PROGRAM}.{os.getpid()}.tmp.json")
        program.save(str(tmp))
        os.replace(tmp, target)

    def on_result(self, result: RunResult) -> None:
        write_atomic(self.run.file(BEST_PROMPT), result.best_prompt.rstrip("\n") + "\n")
        write_once(self.run.file(RESULT), dumps(result.to_dict()))
        self._close()

    def on_error(self, error: BaseException) -> None:
        if self._journal is not None and not is_interruption(error):  # only a run this process opened
            write_json(self.run.file(FAILURE), failure_record(error))
        self._close()


def dumps_line(entry: dict[str, Any]) -> str:
    """One compact journal line."""
    return json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":")) + "\n"
