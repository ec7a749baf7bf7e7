"""The live page's views: what a run is doing now, and whether its runner is still alive.

Built from the files a running process writes (run_status.py): heartbeat.json (phase, calls
against the budget, best so far, wall time of the last beat), trials.jsonl (one line per scored
(candidate, example) pair) and failure.json. Every figure is read, not guessed:

- the trials feed is the newest lines of trials.jsonl, newest first;
- the candidate list ranks every candidate by the mean of its *search* trials (train and val:
  held-out test never ranks anything) and by its best single evaluation, in the order the
  search first scored them, with the running best of those means as the trend line;
- "no word from the runner for N s" is the age of the last heartbeat of a run whose process
  is alive (a SIGSTOPped or hung runner); a dead process reads as interrupted (store.py).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from reflex_dspy.run_status import (
    CREATED,
    FAILURE,
    HEARTBEAT,
    TRIALS,
    load_created,
    load_failure,
    load_heartbeat,
    silence,
)
from reflex_dspy.tracking.files import read_jsonl
from reflex_dspy.tracking.store import Run

FEED_LIMIT = 100  # trials sent to the page (newest first); the rest stay on disk
_SEARCH = "searching"
_cache: dict[str, tuple[tuple[int, int], list[dict[str, Any]]]] = {}
_cache_lock = threading.Lock()


def _safe(run: Run, name: str) -> Path | None:
    """The run's file `name` when it is a plain file inside the run directory (no symlink out)."""
    path = run.file(name)
    if path.is_symlink() or not path.exists():
        return None
    try:
        return path if path.resolve().is_relative_to(run.path.resolve()) else None
    except OSError:
        return None


def load_trials(run: Run) -> list[dict[str, Any]]:
    """Every line of trials.jsonl, re-read only when the file grew (the page polls every 2 s)."""
    path = _safe(run, TRIALS)
    if path is None:
        return []
    stat = path.stat()
    key, stamp = str(path.resolve()), (stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        hit = _cache.get(key)
        if hit and hit[0] == stamp:
            return hit[1]
    trials = read_jsonl(path)
    with _cache_lock:
        if len(_cache) > 32:
            _cache.clear()
        _cache[key] = (stamp, trials)
    return trials


def _numbers(trials: list[dict[str, Any]]) -> dict[str, int]:
    """Candidate fingerprint → number, in the order the run first scored it (#0: its starting prompt)."""
    numbers: dict[str, int] = {}
    for t in trials:
        numbers.setdefault(str(t.get("candidate")), len(numbers))
    return numbers


def candidates(trials: list[dict[str, Any]], iterations: dict[str, int]) -> list[dict[str, Any]]:
    """Every candidate the search scored, ranked by mean then best, with the trend of the best mean."""
    numbers = _numbers(trials)
    by: dict[str, dict[str, Any]] = {}
    for t in trials:
        fp = str(t.get("candidate"))
        c = by.setdefault(fp, {"number": numbers[fp], "fingerprint": fp[:12], "iteration": iterations.get(fp),
                               "scores": [], "failed": 0, "evaluations": {}, "first_seen": t.get("time")})
        if t.get("phase") != _SEARCH:
            continue  # baseline and final test trials are in the feed, never in the ranking
        if t.get("score") is None:
            c["failed"] += 1
            continue
        c["scores"].append(float(t["score"]))
        evaluation = (t.get("iteration"), t.get("split"), t.get("pass"))
        c["evaluations"].setdefault(evaluation, []).append(float(t["score"]))
    out = []
    for c in by.values():
        scores, evaluations = c.pop("scores"), c.pop("evaluations")
        c["n"] = len(scores)
        c["mean"] = sum(scores) / len(scores) if scores else None
        c["best"] = max((sum(v) / len(v) for v in evaluations.values()), default=None)
        out.append(c)
    return sorted(out, key=lambda c: (c["mean"] is None, -(c["mean"] or 0.0), -(c["best"] or 0.0), c["number"]))


def trend(ranked: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The best candidate mean so far, candidate by candidate in the order the search scored them."""
    best, points = None, []
    for c in sorted(ranked, key=lambda c: c["number"]):
        if c["mean"] is None:
            continue
        best = c["mean"] if best is None else max(best, c["mean"])
        points.append({"number": c["number"], "mean": c["mean"], "best": best})
    return points


def _feed_item(index: int, t: dict[str, Any], numbers: dict[str, int]) -> dict[str, Any]:
    return {
        "index": index, "time": t.get("time"), "phase": t.get("phase"), "iteration": t.get("iteration"),
        "candidate": numbers.get(str(t.get("candidate"))), "example_id": t.get("example_id"),
        "split": t.get("split"), "score": t.get("score"), "feedback": t.get("feedback"),
        "output": t.get("output"), "error": t.get("error"), "has_trace": bool(t.get("trace")),
    }


def hints(run: Run, status: str, root: Path, config: dict[str, Any]) -> dict[str, str | None]:
    """The commands that act on this run: start a created one, resume an interrupted or failed
    one, re-run a finished one as a new attempt (`--run-dir` given when it is not the default)."""
    where = f" --run-dir {root.resolve()}"
    cli = bool(config.get("dataset_path")) or status == "created"  # config.json's shared names (schema.py)
    out: dict[str, str | None] = {"start": None, "resume": None, "rerun": None}
    if status == "created":
        out["start"] = f"reflex-dspy optimize run {run.run_id}{where}"
    if status in ("interrupted", "failed") and cli:
        out["resume"] = f"reflex-dspy optimize --resume-from {run.run_id}{where}"
    if status in ("completed", "failed") and cli:
        out["rerun"] = f"reflex-dspy optimize run {run.run_id}{where}"
    return out


def live_view(run: Run, root: Path) -> dict[str, Any]:
    """The live page of one run: status, heartbeat, staleness, failure, trials feed, candidates."""
    status = run.status
    trials = load_trials(run)
    iterations = {r.fingerprint: r.iteration for r in run.load_iterations() if getattr(r, "fingerprint", None)}
    numbers = _numbers(trials)
    ranked = candidates(trials, iterations)
    beat = (load_heartbeat(run.path) or {}) if _safe(run, HEARTBEAT) else {}
    created = load_created(run.path) if _safe(run, CREATED) else None
    failure = load_failure(run.path) if _safe(run, FAILURE) and status == "failed" else None
    first = len(trials) - FEED_LIMIT
    return {
        "id": run.run_id,
        "status": status,
        "phase": beat.get("phase") if status == "running" else None,
        "progress": {k: beat.get(k) for k in ("iteration", "max_iterations", "metric_calls", "search_calls",
                                              "budget", "best", "waiting_seconds")} if beat else None,
        "silence": silence(run.path) if status == "running" and beat else None,
        "failure": {k: failure.get(k) for k in ("reason", "error_type", "failed_at")} if failure else None,
        "repeats": (created or {}).get("repeats"),
        "hints": hints(run, status, root, run.load_config()),
        "n_trials": len(trials),
        "trials": [_feed_item(i, trials[i], numbers) for i in range(len(trials) - 1, max(first, 0) - 1, -1)],
        "candidates": ranked,
        "trend": trend(ranked),
    }


def trial_view(run: Run, index: int) -> dict[str, Any] | None:
    """One trial with its whole execution trace (pipeline mode), or None when there is no such trial."""
    trials = load_trials(run)
    if not 0 <= index < len(trials):
        return None
    t = trials[index]
    item = _feed_item(index, t, _numbers(trials))
    trace = t.get("trace") or {}
    item["trace"] = {"nodes": trace.get("nodes") or [], "final_answer": trace.get("final_answer")} if trace else None
    item["by_metric"] = t.get("by_metric") or {}
    item["candidate_fingerprint"] = str(t.get("candidate"))[:12]
    return item
