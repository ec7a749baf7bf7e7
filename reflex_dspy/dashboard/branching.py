"""Starting a branch run from the dashboard, as a background `reflex-dspy branch` process.

A request names only a recorded run, one of its iterations, a built-in strategy and an
iteration budget; everything is validated here and the branch is the CLI's own command run
with an argument list (never a shell), so no request can choose a file to import or a command
to run. The task (dataset, prompt, models, metric) comes from what the CLI recorded in the
parent's config.json, which is why only runs started by the CLI can be branched this way.
The process outlives the dashboard (its own session); its output goes to its own
`<run dir>/dashboard/branch-<run>-<iter>-<time>-job<N>.log` (created exclusively: two requests in
the same second never share a log, so each job reports its own run id), and `Jobs` reports how
it ended. At most `MAX_RUNNING` branches run at once; one more is refused (429) until one ends.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reflex_dspy.dashboard.api import DashboardData, NotFound
from reflex_dspy.tracking.redact import redact_text

FIELDS = {"iteration", "strategy", "max_iterations"}
MAX_ITERATIONS = 100
MAX_RUNNING = 4  # branch processes at once: each is a full optimization run
_RUN_LINE = re.compile(r"^Run (\d+): ", re.M)


class BadRequest(ValueError):
    """The request is refused (the server answers 400 with this message)."""


class Busy(Exception):  # noqa: N818 (the server's word for 429)
    """Too many branches are running already (the server answers 429 with this message)."""


def _int(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{key} must be an integer, got {value!r}")
    return value


def strategies() -> list[str]:
    """The strategies a `reflex-dspy branch` process knows: the built-in ones."""
    from reflex_dspy.strategies import list_strategies

    return list_strategies(builtin_only=True)


def validate(data: DashboardData, run_id: str, body: Any) -> tuple[str, int, str, int]:
    """(run id, iteration, strategy, max_iterations) of a well-formed request on a branchable run."""
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object {iteration, strategy, max_iterations}")
    extra = set(body) - FIELDS
    if extra:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(map(str, extra)))}")
    missing = FIELDS - set(body)
    if missing:
        raise BadRequest(f"missing field(s): {', '.join(sorted(missing))}")
    iteration, max_iterations = _int(body, "iteration"), _int(body, "max_iterations")
    strategy = body["strategy"]
    if strategy not in strategies():
        raise BadRequest(f"strategy must be one of {', '.join(strategies())}, got {strategy!r}")
    if not 1 <= max_iterations <= MAX_ITERATIONS:
        raise BadRequest(f"max_iterations must be between 1 and {MAX_ITERATIONS}, got {max_iterations}")
    try:
        run = data.get(run_id)
    except NotFound as exc:
        raise BadRequest(str(exc)) from None
    recorded = {0, *(r.iteration for r in run.load_iterations())}
    if iteration not in recorded:
        raise BadRequest(f"run {run.run_id} has no iteration {iteration}")
    if not run.dataset_path():
        raise BadRequest(
            f"run {run.run_id} was not started by the CLI; branch it from Python with "
            f"compile(branch_from=({run.run_id!r}, {iteration}))"
        )
    if run.status == "running":
        raise BadRequest(f"run {run.run_id} is still running; branch it once it has stopped")
    return run.run_id, iteration, strategy, max_iterations


class Jobs:
    """Branch processes started by this dashboard, and how each one ended."""

    def __init__(self, data: DashboardData) -> None:
        self.data = data
        self.jobs: list[dict[str, Any]] = []
        self._procs: dict[int, subprocess.Popen] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def start(self, run_id: str, body: Any) -> dict[str, Any]:
        parent, iteration, strategy, max_iterations = validate(self.data, run_id, body)
        root = self.data.store.root.resolve()
        logs = root / "dashboard"
        logs.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "reflex_dspy.cli", "branch", parent, str(iteration),
                "--strategy", strategy, "--max-iterations", str(max_iterations), "--run-dir", str(root)]
        argv += self._tracking_flags(parent)
        self.poll()  # reap finished branches, so the cap counts only live ones
        with self._lock:  # held from the count to the registration: four requests at once see the cap
            if len(self._procs) >= MAX_RUNNING:
                raise Busy(f"{MAX_RUNNING} branches are already running; start another when one has finished")
            number = next(self._ids)
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%S")
            log = logs / f"branch-{parent}-{iteration}-{stamp}-job{number}.log"
            with open(log, "xb") as out:  # exclusive: a log belongs to one job
                proc = subprocess.Popen(  # noqa: S603 (a fixed argument list of validated values)
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, cwd=str(root), env=dict(os.environ),
                )
            job = {"id": number, "parent": parent, "iteration": iteration, "strategy": strategy,
                   "max_iterations": max_iterations, "pid": proc.pid, "state": "running", "exit_code": None,
                   "run_id": None, "message": None, "log": str(log.relative_to(root)),
                   "started": datetime.now(UTC).isoformat(timespec="seconds")}
            self.jobs.append(job)
            self._procs[number] = proc
        return dict(job)

    def _tracking_flags(self, parent: str) -> list[str]:
        """The parent's MLflow store and experiment, when recorded in full (not redacted)."""
        tracking = self.data.get(parent).load_config().get("tracking") or {}
        flags = []
        if tracking.get("uri") and "***" not in tracking["uri"]:
            flags += ["--mlflow-tracking-uri", str(tracking["uri"])]
        if tracking.get("experiment"):
            flags += ["--mlflow-experiment", str(tracking["experiment"])]
        return flags

    def poll(self) -> list[dict[str, Any]]:
        """Every job, newest first; finished processes are reaped (so their PID sentinel goes stale)."""
        root = self.data.store.root.resolve()
        with self._lock:
            for job in self.jobs:
                proc = self._procs.get(job["id"])
                if job["run_id"] is None:
                    job["run_id"] = _new_run(root / job["log"])
                if proc is None or (code := proc.poll()) is None:
                    continue
                del self._procs[job["id"]]
                job.update(state="finished" if code == 0 else "failed", exit_code=code)
                if code != 0:
                    job["message"] = _last_line(root / job["log"])
            return [dict(job) for job in reversed(self.jobs)]


def _new_run(log: Path) -> str | None:
    try:
        found = _RUN_LINE.search(log.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
    return found.group(1) if found else None


def _last_line(log: Path) -> str:
    """The branch process's last words (its one-line error), credentials removed."""
    try:
        lines = [s.strip() for s in log.read_text(encoding="utf-8", errors="replace").splitlines() if s.strip()]
    except OSError:
        return "the branch process failed (its log could not be read)"
    return redact_text(lines[-1])[:300] if lines else "the branch process failed without output"
