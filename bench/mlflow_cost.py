"""The time MLflow adds to a run: the same fixed optimization without MLflow, with a new SQLite
store, with an existing one, and against a local `mlflow server` (SQLite backend, --serve-artifacts).

    .venv/bin/python bench/mlflow_cost.py [--repeats 3] [--latency 0.05] [--out bench/results/mlflow_cost.json]

The workload is the engine benchmarks' (bench/workloads.py: iterative, 3 iterations, 24 examples,
one worker, fake models sleeping `latency` per call). Reported per mode: median wall time of
`compile`, MLflow's share (wall minus the no-MLflow median), and the time from `compile` to the
baseline's first evaluation, which must not grow with MLflow: the store opens in the background.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from workloads import ROOT, examples, models, program

sys.path.insert(0, str(ROOT / "tests"))

from reflex_dspy.tracking.base import Tracker  # noqa: E402


class _Clock(Tracker):
    """When the baseline began (seconds after `start`)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.baseline_at: float | None = None

    def on_status(self, phase: str, detail: str = "") -> None:
        if phase == "evaluating baseline" and self.baseline_at is None:
            self.baseline_at = time.perf_counter() - self.start


def one_run(latency: float, run_dir: Path, uri: str | None) -> tuple[float, float]:
    """(wall seconds, seconds to the baseline) of one fixed optimization recorded to `uri` (None: no MLflow)."""
    from reflex_dspy import Reflex

    task, reasoner = models(latency)
    clock = _Clock()
    opt = Reflex("exact", strategy="iterative", task_lm=task, reasoning_lm=reasoner, max_workers=1,
                 max_iterations=3, early_stopping_patience=0, score_threshold=1.0, run_dir=run_dir,
                 trackers=[clock], tracking_uri=uri, mlflow=uri is not None, experiment="bench")
    clock.start = time.perf_counter()
    opt.compile(program(), trainset=examples(8))
    return time.perf_counter() - clock.start, clock.baseline_at or 0.0


def measure(latency: float, repeats: int, server_url: str) -> list[dict[str, Any]]:
    modes = {"no MLflow (--no-mlflow)": "none", "SQLite, new store": "new", "SQLite, existing store": "existing",
             "mlflow server (HTTP, --serve-artifacts)": "server"}
    rows = []
    for label, mode in modes.items():
        walls, to_baseline = [], []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                uri = {"none": None, "server": server_url}.get(mode, f"sqlite:///{tmp}/mlflow.db")
                if mode == "existing":
                    one_run(0.0, Path(tmp) / "warm", uri)  # creates the store; not timed
                wall, base = one_run(latency, Path(tmp) / "runs", uri)
                walls.append(wall)
                to_baseline.append(base)
        rows.append({"mode": label, "wall_s": statistics.median(walls), "to_baseline_s": statistics.median(to_baseline),
                     "repeats": repeats})
    none = rows[0]["wall_s"]
    for row in rows:
        row["mlflow_s"] = row["wall_s"] - none
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "mlflow_cost.json"))
    args = parser.parse_args()
    from mlflow_server import start_server, stop_server

    with tempfile.TemporaryDirectory() as root:
        proc, url = start_server(Path(root))
        try:
            rows = measure(args.latency, args.repeats, url)
        finally:
            stop_server(proc)
    Path(args.out).write_text(json.dumps({"latency_s": args.latency, "rows": rows}, indent=2) + "\n")
    for r in rows:
        print(f"{r['mode']:<42} wall {r['wall_s']:6.2f} s  MLflow {r['mlflow_s']:+6.2f} s  "
              f"to baseline {r['to_baseline_s']:.2f} s")


if __name__ == "__main__":
    main()
