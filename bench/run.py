"""Run the benchmarks and write docs/benchmarks.md (see that file for what each one measures).

    python bench/run.py --quick    # minutes
    python bench/run.py --full     # longer: more repeats, more workers, bigger evaluations
    python bench/run.py --smoke --out /tmp/b.md   # seconds: checks the benchmarks still run
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import engine  # noqa: E402
import report  # noqa: E402
from workloads import ROOT  # noqa: E402

MODES = {
    # repeats, latencies (s), workers, latency for scaling, examples per label, PDO iterations
    "smoke": {"repeats": 1, "latencies": [0.0, 0.005], "workers": [1, 2], "scale_latency": 0.01, "per_label": 2,
              "pdo_iterations": 1, "startup": 1},
    "quick": {"repeats": 3, "latencies": [0.0, 0.01, 0.05], "workers": [1, 2, 4, 8, 16], "scale_latency": 0.05,
              "per_label": 32, "pdo_iterations": 2, "startup": 5},
    "full": {"repeats": 5, "latencies": [0.0, 0.01, 0.05], "workers": [1, 2, 4, 8, 16], "scale_latency": 0.05,
             "per_label": 64, "pdo_iterations": 4, "startup": 10},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    for mode in MODES:
        group.add_argument(f"--{mode}", dest="mode", action="store_const", const=mode)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    mode = args.mode or "quick"
    p = MODES[mode]
    started = time.perf_counter()

    def step(name: str):
        print(f"[{time.perf_counter() - started:6.1f}s] {name} ...", file=sys.stderr, flush=True)

    m = {}
    step("overhead")
    m["overhead"] = engine.overhead(p["latencies"], p["repeats"], record=False)
    m["overhead"] += engine.overhead(p["latencies"][-1:], p["repeats"], record=True)
    m["store"] = engine.store_creation(p["repeats"])
    step("evaluation scaling")
    m["eval_scaling"] = engine.eval_scaling(p["workers"], p["scale_latency"], p["per_label"])
    step("PDO scaling")
    m["pdo_scaling"] = engine.pdo_scaling(p["workers"], p["scale_latency"], p["pdo_iterations"])
    step("waste and resume")
    m["waste"] = engine.waste(3)
    step("start-up")
    m["startup"] = engine.startup(p["startup"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report.write(args.out, mode, m)
    step(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
