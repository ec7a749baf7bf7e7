"""What a run's status is beyond its files' existence: created, failed (and why), and how long
the runner has been silent.

A run directory is `completed` when result.json exists and `running` while a live process holds
its PID sentinel (tracking/store.py). Everything else used to read as `interrupted`, which told a
user to resume a run that had stopped on an auth error or whose every example failed, and could
not tell a run nobody started yet from one whose process died. The files here separate them:

    created.json    the task and config captured by `optimize create` (status `created` until started)
    failure.json    written once when the run stopped on an error: status `failed`, a one-line reason
    heartbeat.json  replaced every few seconds by the running process: phase, calls, best, wall time
    trials.jsonl    one line per (candidate, example) as it is scored: the dashboard's trials feed

Ctrl-C and kill -9 write no failure.json: those runs stay `interrupted` (resume continues them).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

CREATED, FAILURE, HEARTBEAT, TRIALS = "created.json", "failure.json", "heartbeat.json", "trials.jsonl"
STATUSES = ("created", "running", "interrupted", "failed", "completed")
REASON_CHARS = 300
STALE_INTERVALS = 3  # heartbeats missed (plus a second of slack) before the runner counts as silent


def heartbeat_seconds() -> float:
    """How often a running process beats: `$REFLEX_HEARTBEAT_SECONDS`, else 2 s (tests use less)."""
    try:
        value = float(os.environ.get("REFLEX_HEARTBEAT_SECONDS") or 2.0)
    except ValueError:
        return 2.0
    return value if value > 0 else 2.0


def is_interruption(error: BaseException) -> bool:
    """Ctrl-C and process exits: the run may continue as it was (`interrupted`, not `failed`)."""
    return isinstance(error, KeyboardInterrupt | SystemExit | GeneratorExit)


def failure_reason(error: BaseException) -> str:
    """One line saying why the run failed, secrets redacted, at most `REASON_CHARS` characters."""
    from reflex_dspy.errors import ProviderAuthError, ReflexError
    from reflex_dspy.tracking.redact import redact_text

    text = " ".join(str(error).split())
    if isinstance(error, ProviderAuthError):
        text = f"auth error: {text}"
    elif not isinstance(error, ReflexError):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    text = redact_text(text)
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


def failure_record(error: BaseException) -> dict[str, Any]:
    """The content of failure.json."""
    from datetime import UTC, datetime

    return {"status": "failed", "reason": failure_reason(error), "error_type": type(error).__name__,
            "failed_at": datetime.now(UTC).isoformat(timespec="seconds")}


def _read(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def load_failure(run_path: Path) -> dict[str, Any] | None:
    return _read(Path(run_path) / FAILURE)


def load_created(run_path: Path) -> dict[str, Any] | None:
    return _read(Path(run_path) / CREATED)


def load_heartbeat(run_path: Path) -> dict[str, Any] | None:
    return _read(Path(run_path) / HEARTBEAT)


def silence(run_path: Path, now: float | None = None) -> dict[str, Any] | None:
    """How long the runner of a running run has been quiet: `{seconds, stale, interval}`, or None
    when it never beat. `stale` once `STALE_INTERVALS` beats were missed (SIGSTOP, a hung host)."""
    beat = load_heartbeat(run_path)
    if not beat or not isinstance(beat.get("time"), int | float):
        return None
    interval = float(beat.get("interval") or 2.0)
    seconds = max(0.0, (time.time() if now is None else now) - float(beat["time"]))
    return {"seconds": round(seconds, 1), "stale": seconds > STALE_INTERVALS * interval + 1.0,
            "interval": interval, "phase": beat.get("phase")}


def describe(status: str, run_path: Path) -> str:
    """The status as `runs` prints it: `running (no word for 34 s)`, `failed: <reason>`, ..."""
    if status == "running":
        quiet = silence(run_path)
        if quiet and quiet["stale"]:
            return f"running (no word for {quiet['seconds']:.0f} s)"
    return status
