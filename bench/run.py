"""Run the benchmarks and write docs/benchmarks.md (see that file for what each one measures).

    python bench/run.py --quick    # minutes
    python bench/run.py --full     # longer: more repeats, more workers, bigger evaluations
    python bench/run.py --smoke --out /tmp/b.md   # seconds: checks the benchmarks still run
    python bench/run.py --quick --only overhead    # the overhead section alone (about a minute)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import engine  # noqa: E402
import quality  # noqa: E402
import quality_report  # noqa: E402
import quality_tasks  # noqa: E402
import report  # noqa: E402
from workloads import ROOT, quality_models  # noqa: E402

QUALITY_RESULTS = ROOT / "bench" / "results" / "quality-150"  # 16/8/24 splits, 150 calls (issue 16)
HELD_OUT_RESULTS = ROOT / "bench" / "results" / "held-out"  # quality_tasks.HELD_OUT, same settings
DOC = ROOT / "docs" / "benchmarks.md"

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
    parser.add_argument("--out", type=Path, default=DOC, help="the report (the README's headline table follows it only here)")
    parser.add_argument("--quality-results", type=Path, default=QUALITY_RESULTS,
                        help="one JSON file per quality run; --full runs the missing ones (delete a file to rerun it)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the quality benchmark in --full (default 3)")
    parser.add_argument("--only", choices=["overhead"],
                        help="measure one section and rewrite only it in --out (the others stay as they are)")
    parser.add_argument("--conditions", default="",
                        help="how the machine was (e.g. what else ran), written with the overhead section's date")
    args = parser.parse_args(argv)
    mode = args.mode or "quick"
    p = MODES[mode]
    started = time.perf_counter()

    def step(name: str):
        print(f"[{time.perf_counter() - started:6.1f}s] {name} ...", file=sys.stderr, flush=True)

    if args.only == "overhead":
        step("overhead")
        report.rewrite_section(args.out, report.overhead_section(overhead(p, args)))
        step(f"rewrote the overhead section of {args.out}")
        return 0
    m = {}
    step("quality per budget")
    m["quality_lines"] = quality_section(mode, args, step)
    step("overhead")
    m.update(overhead(p, args))
    step("evaluation scaling")
    m["eval_scaling"] = engine.eval_scaling(p["workers"], p["scale_latency"], p["per_label"])
    step("PDO scaling")
    m["pdo_scaling"] = engine.pdo_scaling(p["workers"], p["scale_latency"], p["pdo_iterations"], p["per_label"])
    step("waste and resume")
    m["waste"] = engine.waste(3)
    step("start-up")
    m["startup"] = engine.startup(p["startup"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report.write(args.out, mode, m)
    step(f"wrote {args.out}")
    return 0


def overhead(p: dict, args: argparse.Namespace) -> dict:
    """The overhead section's measurements: per metric call (unrecorded, then recorded at the
    highest latency), a new MLflow store's cost, DSPy work after each latency's sleep, and when,
    how (the command) and on what load they were taken."""
    started, load = datetime.now(UTC), os.getloadavg()[0]
    rows = engine.overhead(p["latencies"], p["repeats"], record=False)
    rows += engine.overhead(p["latencies"][-1:], p["repeats"], record=True)
    m = {"overhead": rows, "store": engine.store_creation(p["repeats"]), "cold_code": engine.cold_code(p["latencies"])}
    argv = [a for a in sys.argv[1:] if not a.startswith("--conditions=")]
    if "--conditions" in argv:  # what the machine was doing belongs to the prose, not the command
        del argv[argv.index("--conditions"):argv.index("--conditions") + 2]
    command = " ".join(["python bench/run.py", *argv])
    m["overhead_when"] = {"started": f"{started:%Y-%m-%d %H:%M} UTC", "load": (load, os.getloadavg()[0]),
                          "command": command, "cpus": os.cpu_count(), "conditions": args.conditions}
    return m


def quality_section(mode: str, args: argparse.Namespace, step) -> list[str]:
    """--full runs every missing quality run on the embedded model (hours on 2 cores); --quick
    reports the results already in the folder; --smoke runs a tiny comparison against fakes."""
    plots = args.out.parent / "benchmarks"
    plots.mkdir(parents=True, exist_ok=True)
    if mode == "smoke":
        shutil.rmtree(args.out.parent / "quality-smoke", ignore_errors=True)
        results = quality.run(args.out.parent / "quality-smoke", tasks=["routing"], seeds=[0], budget=16,
                              optimizers=["auto", "BootstrapFewShotWithRandomSearch"], sizes=(4, 4, 4),
                              models=quality_models, log=step)
        return quality_report.section(results, plots, "Smoke run against fake models: checks the harness only.")
    tasks = quality_tasks.available()
    if mode == "full":
        quality.run(args.quality_results, tasks=tasks, optimizers=quality.OPTIMIZERS, seeds=range(args.seeds),
                    log=step)
    source = (f"The embedded default model (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M, llama.cpp in-process) as task "
              f"model *and* as reasoning/proposer model for every optimizer; JSONAdapter; train / val / test = "
              f"{' / '.join(map(str, quality_tasks.SIZES))} examples per seed (the seed also draws the split); "
              f"reflex strategies get `max_metric_calls={quality.BUDGET}`. Results come from the run files in "
              f"`{args.quality_results.relative_to(ROOT) if args.quality_results.is_relative_to(ROOT) else args.quality_results}`"
              f" (`--full` runs the missing ones; `--quick` only reports them). Metric calls are the optimizer's "
              "metric calls on train/val (GEPA's count includes its feedback calls); task-model calls are those the "
              "model really answered: DSPy's response cache is shared by the runs of a task, so later runs reuse "
              "answers to prompts seen before, which lowers their calls, tokens and wall time, never their scores.")
    results = quality.load(args.quality_results)
    if args.out.resolve() == DOC:
        _update_readme(quality_report.headline(quality_report.summarize(results), tasks, results))
    held_out = quality_report.held_out_section(
        quality.load(HELD_OUT_RESULTS), plots,
        f"Run with `python bench/quality_one.py TASK OPTIMIZER SEED --results {HELD_OUT_RESULTS.relative_to(ROOT)}` "
        "on the settings above, after the changes to auto the tables above measured, and not used to make any.")
    return quality_report.section(results, plots, source) + held_out


def _update_readme(table: list[str]) -> None:
    """Keep the README's headline table (between its markers) the one docs/benchmarks.md shows."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- bench-headline -->", "<!-- /bench-headline -->"
    if table and start in text and end in text:
        head, rest = text.split(start, 1)
        readme.write_text(head + start + "\n" + "\n".join(table) + "\n" + end + rest.split(end, 1)[1])


if __name__ == "__main__":
    raise SystemExit(main())
