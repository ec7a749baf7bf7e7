"""The reflex run layout on disk (SPEC §9) and `RunStore`, its reader.

    <root>/runs/NNN_YYYY-MM-DDTHH-MM-SS/
        config.json       written once at the start
        baseline.json     written once, after the baseline
        checkpoint.json   replaced after the start, each iteration and the end of the search
        journal.jsonl     append-only: every paid result, so a resume pays for nothing twice
        iterations/NNN.json  one per iteration, never modified
        best_prompt.md    the best prompt so far, then the selected one
        result.json       written once at the end
        run.pid           present while a process is running it

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
from reflex_dspy.tracking.files import read_json, write_json

RUN_NAME = re.compile(r"^(\d{3,})_(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2})$")
RUN_ID = re.compile(r"^\d{1,9}$")

CONFIG, BASELINE, CHECKPOINT, RESULT = "config.json", "baseline.json", "checkpoint.json", "result.json"
JOURNAL, BEST_PROMPT, PID, ITERATIONS = "journal.jsonl", "best_prompt.md", "run.pid", "iterations"


def iteration_file(iteration: int) -> str:
    return f"{ITERATIONS}/{iteration:03d}.json"


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux), to tell a live run from a reused PID."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(sentinel: dict[str, Any]) -> bool:
    if sentinel.get("host") != socket.gethostname():
        return True  # another machine's run: trust the sentinel
    pid = int(sentinel.get("pid", 0))
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
        return read_json(path) if path.exists() else None

    def load_config(self) -> dict[str, Any]:
        return self._load(CONFIG) or {}

    def load_baseline(self) -> dict[str, Any] | None:
        return self._load(BASELINE)

    def load_checkpoint(self) -> dict[str, Any] | None:
        return self._load(CHECKPOINT)

    def load_result(self) -> dict[str, Any] | None:
        return self._load(RESULT)

    def load_iterations(self) -> list:
        """The iteration records in order, as `IterationRecord`s."""
        from reflex_dspy.result import IterationRecord

        folder = self.file(ITERATIONS)
        files = sorted(folder.glob("[0-9][0-9][0-9]*.json")) if folder.exists() else []
        return [IterationRecord(**read_json(f)) for f in files]

    def best_prompt(self) -> str | None:
        path = self.file(BEST_PROMPT)
        return path.read_text(encoding="utf-8") if path.exists() else None

    @property
    def status(self) -> str:
        """completed (result.json exists), running (a live PID sentinel) or interrupted."""
        if self.file(RESULT).exists():
            return "completed"
        sentinel = self._load(PID)
        if sentinel and _alive(sentinel):
            return "running"
        return "interrupted"

    def summary(self) -> RunSummary:
        config = self.load_config()
        checkpoint = self.load_checkpoint() or {}
        result = self.load_result() or {}
        baseline = self.load_baseline() or {}
        models = config.get("models") or {}
        folder = self.file(ITERATIONS)
        return RunSummary(
            run_id=self.run_id,
            path=self.path,
            created=config.get("created", self.created),
            status=self.status,
            strategy=(config.get("config") or {}).get("strategy"),
            models=models,
            iterations=len(list(folder.glob("*.json"))) if folder.exists() else 0,
            baseline=baseline.get("mean"),
            best=(checkpoint.get("best") or {}).get("score"),
            final=(result.get("final") or {}).get("mean"),
            target=(config.get("config") or {}).get("score_threshold"),
            dataset=(config.get("metadata") or {}).get("dataset_path"),
            reasoning_model=models.get("reasoning"),
            branched_from=config.get("branched_from"),
        )


class RunStore:
    """Reads (and allocates) runs under a root directory, `.reflex` by default."""

    def __init__(self, root: str | os.PathLike[str] = ".reflex") -> None:
        root = Path(root)
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
        """The latest interrupted run (of this dataset, when given); running ones are skipped."""
        wanted = str(Path(dataset_path).resolve()) if dataset_path else None
        for run in reversed(self.runs()):
            if run.status != "interrupted":
                continue
            dataset = (run.load_config().get("metadata") or {}).get("dataset_path")
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
