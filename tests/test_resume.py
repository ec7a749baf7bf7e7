"""Kill a real optimization process with SIGKILL at different points, resume it, and check that
nothing is lost, duplicated or paid for twice (tests/resume_job.py is the process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from reflex_dspy.tracking.store import RunStore

JOB = Path(__file__).resolve().parent / "resume_job.py"


def job(root: Path, log: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([sys.executable, str(JOB), str(root), str(log), *args],
                          capture_output=True, text=True, timeout=300, env=env)


def paid(log: Path) -> dict[str, int]:
    lines = log.read_text().splitlines() if log.exists() else []
    return {kind: lines.count(kind) for kind in ("task", "reason")}


def nth_task_call_after(log: Path, marker: str, offset: int) -> int:
    """The number of the task call `offset` calls after the progress label `marker` first appears."""
    count = 0
    seen = False
    for line in log.read_text().splitlines():
        if line == f"# {marker}":
            seen = True
        elif line == "task":
            count += 1
            if seen:
                offset -= 1
                if offset == 0:
                    return count
    raise AssertionError(f"no task call {offset} after {marker}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    log = root / "reference.log"
    proc = job(root, log)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = RunStore(root).get_run(json.loads(proc.stdout)["run_id"])
    return root, log, run


def comparable(result: dict) -> dict:
    """A result without what differs between any two runs: timings, timestamps, run ids."""
    drop = {"duration_seconds", "run_id"}
    out = {k: v for k, v in result.items() if k not in drop}
    out["iterations"] = [{k: v for k, v in it.items() if k not in ("elapsed_seconds", "timestamp")}
                         for it in result["iterations"]]
    return out


KILLS = {
    "during baseline": lambda log: "task:3",
    "mid-iteration": lambda log: f"task:{nth_task_call_after(log, 'iter 2: proposal', 4)}",
    "at the reasoning call": lambda log: "reason:2",
    "before an iteration file": lambda log: "iteration:2",
    "between iteration file and checkpoint": lambda log: "checkpoint:2",
    "before final eval": lambda log: "final:1",
    "during final eval": lambda log: f"task:{nth_task_call_after(log, 'final on test, pass 1', 2)}",
}


@pytest.mark.parametrize("point", list(KILLS))
def test_sigkill_then_resume_loses_nothing_and_pays_only_for_unpaid_calls(reference, point, tmp_path):
    root, ref_log, ref_run = reference
    kill_at = KILLS[point](ref_log)
    first, second = tmp_path / "first.log", tmp_path / "second.log"

    killed = job(root, first, "--kill-at", kill_at)
    assert killed.returncode == -9, killed.stderr[-2000:]
    store = RunStore(root)
    run = store.find_incomplete_run(dataset_path=None)
    assert run is not None and run.status == "interrupted"
    for path in run.path.rglob("*.json"):
        json.loads(path.read_text())  # every file valid JSON after kill -9

    resumed = job(root, second, "--resume", run.run_id)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert run.status == "completed"

    # Only calls the killed process did not get answered are paid again.
    before, after, total = paid(first), paid(second), paid(ref_log)
    assert {k: before[k] + after[k] for k in total} == total

    # No iteration lost or duplicated; the outcome equals the uninterrupted run's, totals included.
    files = sorted(p.name for p in (run.path / "iterations").iterdir())
    assert files == sorted(p.name for p in (ref_run.path / "iterations").iterdir())
    result, expected = run.load_result(), ref_run.load_result()
    assert comparable(result) == comparable(expected)
    assert result["usage"] == expected["usage"]
    assert [it.fingerprint for it in run.load_iterations()] == [it.fingerprint for it in ref_run.load_iterations()]

    # MLflow holds the same run: finished, one finished child per iteration.
    client = MlflowClient(store.tracking_uri)
    parent = client.search_runs(
        [client.get_experiment_by_name("reflex").experiment_id],
        filter_string=f"tags.`reflex.run_path` = '{run.path.resolve()}'",
    )
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    children = client.search_runs(
        [parent[0].info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent[0].info.run_id}'",
    )
    iterations = sorted(int(c.data.tags["reflex.iteration"]) for c in children if c.info.status == "FINISHED")
    assert iterations == list(range(1, len(files) + 1))


def test_resuming_a_completed_or_missing_run_is_a_clear_error(reference, tmp_path):
    root, _, ref_run = reference
    done = job(root, tmp_path / "log", "--resume", ref_run.run_id)
    assert done.returncode != 0 and f"run {ref_run.run_id} is completed; nothing to resume" in done.stderr
    missing = job(root, tmp_path / "log", "--resume", "999")
    assert missing.returncode != 0 and "no run 999" in missing.stderr
