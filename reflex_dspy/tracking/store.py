"""The reflex run layout on disk (README, "History and resume") and `RunStore`, its reader.

    <root>/runs/NNN_YYYY-MM-DDTHH-MM-SS/
        config.json       written once at the start
        baseline.json     written once, after the baseline
        checkpoint.json   replaced after the start, each iteration and the end of the search
        journal.jsonl     append-only: every paid result, so a resume pays for nothing twice
        iterations/NNN.json  one per iteration, never modified
        best_prompt.md    the best prompt so far, then the selected one
        result.json       written once at the end
        run.pid           present while a process is running it
        running           the same, as aevyra-reflex writes it (the bare PID), for their dashboard
        created.json, failure.json, heartbeat.json, trials.jsonl   see run_status.py

The field names are aevyra-reflex 0.2.0's (tracking/schema.py), so its `RunStore`, its dashboard
and scripts written for it read our runs, and this `RunStore` reads runs aevyra-reflex wrote
(their live-process sentinel is `running`). Runs in the older reflex_dspy layout are read under
the shared names. A run whose files cannot be parsed is listed as `corrupt`, naming the file,
and never hides the other runs.

`LayoutTracker` (tracking/layout.py) writes it; this module only allocates and reads.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:  # POSIX; elsewhere run numbers are allocated without a lock
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

from reflex_dspy.errors import UsageError
from reflex_dspy.run_status import CREATED, FAILURE
from reflex_dspy.tracking.files import read_json, write_json
from reflex_dspy.tracking.schema import (
    STAMP,
    config_document,
    measurement_document,
    upgrade_checkpoint,
    upgrade_result,
)

RUN_NAME = re.compile(r"([0-9]{3,})_([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}-[0-9]{2}-[0-9]{2})\Z")
RUN_ID = re.compile(r"[0-9]{1,9}\Z")  # ASCII digits only: \d and $ accept "２" and "2\n"

CONFIG, BASELINE, CHECKPOINT, RESULT = "config.json", "baseline.json", "checkpoint.json", "result.json"
JOURNAL, BEST_PROMPT, PID, ITERATIONS = "journal.jsonl", "best_prompt.md", "run.pid", "iterations"
FOREIGN_PID = "running"  # aevyra-reflex's sentinel: the PID as text (LayoutTracker writes it too)
DEFAULT_RUN_DIR = ".reflex"


def default_run_dir() -> str:
    """`$REFLEX_RUN_DIR`, else `.reflex` in the working directory: the one default, CLI and Python."""
    return os.environ.get("REFLEX_RUN_DIR") or DEFAULT_RUN_DIR


class CorruptRunError(UsageError):
    """A run file that cannot be read or parsed; the message names the file."""


def iteration_file(iteration: int) -> str:
    return f"{ITERATIONS}/{iteration:03d}.json"


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux), to tell a live run from a reused PID."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(sentinel: Any) -> bool:
    if not isinstance(sentinel, dict):
        return False
    if sentinel.get("host") != socket.gethostname():
        return True  # another machine's run: trust the sentinel
    try:
        pid = int(sentinel.get("pid", 0))
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = sentinel.get("started")
    return started is None or _process_start(pid) in (None, started)


def pid_sentinel() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "started": _process_start(pid)}


@dataclass(frozen=True)
class RunSummary:
    """One line of `reflex-dspy runs`."""

    run_id: str
    path: Path
    created: str
    status: str
    strategy: str | None
    models: dict[str, str]
    iterations: int
    baseline: float | None
    best: float | None
    final: float | None
    target: float | None
    dataset: str | None
    reasoning_model: str | None
    branched_from: dict[str, Any] | None
    duration_seconds: float | None = None
    problem: str | None = None  # why a `corrupt` run could not be read (names the file)


class Run:
    """One run directory. Readers never fail on a run that is still being written."""

    def __init__(self, path: Path) -> None:
        match = RUN_NAME.match(path.name)
        if not match:
            raise ValueError(f"not a run directory: {path}")
        self.path = path
        self.run_id = match.group(1)
        self.created = datetime.strptime(match.group(2), "%Y-%m-%dT%H-%M-%S").replace(tzinfo=UTC).isoformat()

    def __repr__(self) -> str:
        return f"Run({self.run_id!r}, {str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    def _load(self, name: str) -> Any:
        path = self.file(name)
        if not path.exists():
            return None
        try:
            return read_json(path)
        except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
            raise CorruptRunError(f"run {self.run_id}: {path} cannot be read ({exc})") from None

    def _document(self, name: str) -> dict[str, Any] | None:
        data = self._load(name)
        if data is not None and not isinstance(data, dict):
            raise CorruptRunError(f"run {self.run_id}: {self.file(name)} is not a JSON object")
        return data

    def load_config(self) -> dict[str, Any]:
        """config.json under the shared names (`optimizer_config`, `dataset_path`, `timestamp`...)."""
        data = self._document(CONFIG)
        return config_document(data) if data else {}

    def load_baseline(self) -> dict[str, Any] | None:
        return measurement_document(self._document(BASELINE))

    def load_checkpoint(self) -> dict[str, Any] | None:
        data = self._document(CHECKPOINT)
        return None if data is None else upgrade_checkpoint(data, self.run_id)

    def load_result(self) -> dict[str, Any] | None:
        data = self._document(RESULT)
        return None if data is None else upgrade_result(data)

    def load_iterations(self) -> list:
        """The iteration records in order, as `IterationRecord`s (ours or aevyra-reflex's files)."""
        from reflex_dspy.result import IterationRecord

        folder = self.file(ITERATIONS)
        files = sorted(folder.glob("[0-9][0-9][0-9]*.json")) if folder.exists() else []
        records = []
        for f in files:
            data = self._document(f"{ITERATIONS}/{f.name}")
            try:
                records.append(IterationRecord.from_dict(data))
            except (TypeError, AttributeError) as exc:
                raise CorruptRunError(f"run {self.run_id}: {f} is not an iteration record ({exc})") from None
        return records

    def best_prompt(self) -> str | None:
        path = self.file(BEST_PROMPT)
        return path.read_text(encoding="utf-8") if path.exists() else None

    def _alive(self) -> bool:
        """A live process holds this run: our `run.pid`, or aevyra-reflex's `running` (a bare PID)."""
        try:
            sentinel = self._load(PID)
        except CorruptRunError:
            return False  # a torn sentinel: no live writer (ours are written atomically)
        if sentinel is not None:
            return _alive(sentinel)
        foreign = self.file(FOREIGN_PID)
        try:
            pid = int(foreign.read_text().strip()) if foreign.exists() else 0
        except (OSError, ValueError):
            return False
        return pid > 0 and _alive({"pid": pid, "host": socket.gethostname()})

    @property
    def status(self) -> str:
        """completed (result.json exists), running (a live PID sentinel), failed (failure.json: it
        stopped on an error), created (`optimize create`, not started yet) or interrupted."""
        if self.file(RESULT).exists():
            return "completed"
        if self._alive():
            return "running"
        if self.file(FAILURE).exists():
            return "failed"
        if self.file(CREATED).exists() and not self.file(CONFIG).exists():
            return "created"
        return "interrupted"

    def summary(self) -> RunSummary:
        """One line of `reflex-dspy runs`; a run whose files cannot be read is `corrupt`."""
        try:
            return self._summary()
        except CorruptRunError as exc:
            return RunSummary(
                run_id=self.run_id, path=self.path, created=self.created, status="corrupt", strategy=None,
                models={}, iterations=0, baseline=None, best=None, final=None, target=None, dataset=None,
                reasoning_model=None, branched_from=None, problem=str(exc),
            )

    def _summary(self) -> RunSummary:
        """The same values aevyra-reflex's `RunStore.list_runs()` reads from the same files."""
        config = self.load_config()
        checkpoint = self.load_checkpoint() or {}
        result = self.load_result() or {}
        baseline = self.load_baseline() or {}
        settings = config.get("optimizer_config") or {}
        created = {} if config else (self._load(CREATED) or {})  # `optimize create`: not started yet
        if created:
            task = created.get("task") or {}
            settings = {**(created.get("config") or {}), "_cli_models": task.get("task_models") or ["embedded"]}
            config = {"dataset_path": (created.get("sources") or {}).get("dataset")}
        models = {"task": ", ".join(settings.get("_cli_models") or []) or None,
                  "reasoning": settings.get("reasoning_model")}
        folder = self.file(ITERATIONS)
        return RunSummary(
            run_id=self.run_id,
            path=self.path,
            created=created_at(config.get("timestamp")) or self.created,
            status=self.status,
            strategy=settings.get("strategy"),
            models=models,
            iterations=len(list(folder.glob("*.json"))) if folder.exists() else 0,
            baseline=baseline.get("mean_score"),
            best=result["best_score"] if "best_score" in result else checkpoint.get("best_score"),
            final=(result.get("final") or {}).get("mean_score"),
            target=settings.get("score_threshold"),
            dataset=self.dataset_path(config),
            reasoning_model=models["reasoning"],
            branched_from=config.get("branched_from"),
            duration_seconds=result.get("duration_seconds"),
        )

    @property
    def foreign(self) -> bool:
        """Written by aevyra-reflex itself (no per-predictor candidate, no example ids, no journal):
        it can be read and branched from, not resumed or continued with its baseline."""
        return "initial_candidate" not in self.load_config()

    def dataset_path(self, config: dict[str, Any] | None = None) -> str | None:
        """The recorded dataset, absolute; a relative one is relative to the folder holding `.reflex`."""
        raw = (self.load_config() if config is None else config).get("dataset_path")
        if not raw:
            return None
        return str((self.path.parent.parent.parent / raw).resolve())


def created_at(stamp: Any) -> str | None:
    """config.json's `timestamp` (the run directory's `YYYY-MM-DDTHH-MM-SS`, UTC) as ISO 8601."""
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return datetime.strptime(stamp, STAMP).replace(tzinfo=UTC).isoformat()
    except ValueError:
        try:
            return datetime.fromisoformat(stamp).isoformat()
        except ValueError:
            return None


class RunStore:
    """Reads (and allocates) runs under a root directory, `.reflex` by default."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        """`root` is the run directory (`.reflex`) or its `runs` folder; default `default_run_dir()`."""
        root = Path(default_run_dir() if root is None else root)
        self.root = root.parent if root.name == "runs" else root
        self.runs_dir = self.root / "runs"

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    @property
    def tracking_uri(self) -> str:
        """The default MLflow store: one SQLite file beside the runs, no server needed."""
        return f"sqlite:///{self.root.resolve() / 'mlflow.db'}"

    def runs(self) -> list[Run]:
        if not self.runs_dir.exists():
            return []
        found = [Run(p) for p in self.runs_dir.iterdir() if p.is_dir() and RUN_NAME.match(p.name)]
        return sorted(found, key=lambda r: (int(r.run_id), r.path.name))

    def list_runs(self) -> list[RunSummary]:
        return [run.summary() for run in self.runs()]

    def get_run(self, run_id: str | int) -> Run:
        """The run with this id (`3`, `003` or the directory name); a clear error otherwise."""
        text = str(run_id).strip()
        match = RUN_NAME.match(text)
        number = match.group(1) if match else text
        if not RUN_ID.match(number):
            raise UsageError(f"invalid run id {text!r}: expected a number such as 003")
        for run in self.runs():
            if int(run.run_id) == int(number) and (not match or run.path.name == text):
                return run
        raise UsageError(f"no run {text} in {self.runs_dir}")

    def find_incomplete_run(self, dataset_path: str | os.PathLike[str] | None = None) -> Run | None:
        """The latest interrupted or failed run (of this dataset, when given); running ones are skipped."""
        wanted = str(Path(dataset_path).resolve()) if dataset_path else None
        for run in reversed(self.runs()):
            if run.status not in ("interrupted", "failed"):
                continue
            try:
                if run.foreign:
                    continue  # aevyra-reflex's run: branch it (`reflex-dspy branch`), it cannot be resumed here
                dataset = run.dataset_path()
            except CorruptRunError:
                continue  # listed as corrupt by `reflex-dspy runs`; nothing to resume from
            if wanted is None or (dataset and str(Path(dataset).resolve()) == wanted):
                return run
        return None

    def create_run(self, now: datetime | None = None) -> Run:
        """Allocate the next NNN_<utc> directory, under a lock so two processes never share a number."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H-%M-%S")
        with open(self.runs_dir / ".lock", "w") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            existing = [int(m.group(1)) for p in self.runs_dir.iterdir() if (m := RUN_NAME.match(p.name))]
            path = self.runs_dir / f"{max(existing, default=0) + 1:03d}_{stamp}"
            (path / ITERATIONS).mkdir(parents=True)
        write_json(path / PID, pid_sentinel())
        return Run(path)
