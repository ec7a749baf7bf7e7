"""Engine benchmarks on latency-bound fakes: overhead per metric call, scaling, waste, start-up."""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from workloads import ROOT, SLEPT, examples, models, optimize, program, reasoning_model, task_model


def overhead(latencies: list[float], repeats: int, record: bool) -> list[dict[str, Any]]:
    """Wall time of a fixed optimization minus the time the fake models really slept, per metric call.

    One worker, so the latencies add up exactly; `record` adds the run layout and MLflow (SQLite),
    measured on a store that exists already: creating a new MLflow database (about 1 s of schema
    migrations, once per run directory) is reported apart by `store_creation`. `cpu_ms` is the
    process CPU time per metric call (the fakes' sleeps cost none). After each unrecorded run,
    `plain_dspy` makes as many task-model calls without the framework (a second view, labelled
    apart: it never replaces the overhead itself).
    """
    rows = []
    for latency in latencies:
        per_call, overshoot, floor, cpu = [], [], [], []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                if record:
                    optimize(0.0, run_dir=Path(tmp), iterations=1)
                SLEPT[0] = 0.0
                cpu_start = time.process_time()
                result, wall = optimize(latency, run_dir=Path(tmp) if record else None)
                cpu_s = time.process_time() - cpu_start
            u = result.usage
            per_call.append((wall - SLEPT[0]) / u["metric_calls"])
            cpu.append(cpu_s / u["metric_calls"])
            model_calls = u["lm_calls"] + u["reasoning_calls"]
            overshoot.append((SLEPT[0] - model_calls * latency) / model_calls)
            if not record:  # the floor does not depend on recording: measured once per latency
                floor.append(plain_dspy(latency, u["metric_calls"]))
        ms = statistics.median(per_call) * 1000
        plain_ms = statistics.median(floor) * 1000 if floor else None
        rows.append({"latency_ms": latency * 1000, "recorded": record, "metric_calls": u["metric_calls"],
                     "overhead_ms": ms, "pct_of_50ms": ms / 50 * 100,
                     "overshoot_ms": statistics.median(overshoot) * 1000,
                     "plain_dspy_ms": plain_ms, "above_plain_ms": None if plain_ms is None else ms - plain_ms,
                     "cpu_ms": statistics.median(cpu) * 1000})
    return rows


def plain_dspy(latency: float, calls: int) -> float:
    """Seconds per call, beyond the time the fake slept, of a plain DSPy loop making `calls` task
    calls: the benchmark's program on its examples (in turn), the same fake model and latency and
    the same metric, one thread, no framework (no evaluator, ledger, journal, lifecycle, proposer).
    It is what DSPy itself costs per call on this machine, the floor under the overhead above."""
    import dspy

    from reflex_dspy.data import assign_ids
    from reflex_dspy.metrics import resolve_metric

    data, metric, student, lm = assign_ids(examples(8)), resolve_metric("exact"), program(), task_model(latency)
    SLEPT[0] = 0.0
    start = time.perf_counter()
    with dspy.context(lm=lm):
        for i in range(calls):
            example = data[i % len(data)]
            metric(example, student(**example.inputs()))
    return (time.perf_counter() - start - SLEPT[0]) / calls


def cold_code(latencies: list[float], repeats: int = 60) -> list[dict[str, Any]]:
    """Median time of one fixed piece of DSPy work (format and parse a chat prompt three times) run
    right after sleeping each latency: the same code is slower after its thread slept (caches and
    clock cool down), so part of the overhead's growth with latency is the machine, not more work."""
    import dspy
    from dspy.adapters import ChatAdapter

    sig = dspy.Signature("question, context -> answer, reasoning", "Answer the question from the context.")
    adapter = ChatAdapter()
    reply = "[[ ## answer ## ]]\n3\n\n[[ ## reasoning ## ]]\nbecause\n\n[[ ## completed ## ]]"

    def work() -> None:
        for _ in range(3):
            adapter.format(sig, demos=[], inputs={"question": "What is x?", "context": "x is 3"})
            adapter.parse(sig, reply)

    work()
    rows = []
    for latency in latencies:
        times = []
        for _ in range(repeats):
            if latency:
                time.sleep(latency)
            start = time.perf_counter()
            work()
            times.append(time.perf_counter() - start)
        rows.append({"latency_ms": latency * 1000, "work_ms": statistics.median(times) * 1000})
    return rows


def store_creation(repeats: int) -> dict[str, Any]:
    """Seconds to open a brand-new run directory's MLflow SQLite store (the first run's fixed cost)."""
    from reflex_dspy.tracking.mlflow_tracker import MlflowTracker

    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            MlflowTracker(f"sqlite:///{tmp}/mlflow.db", "bench").client  # noqa: B018 (opens the store)
            times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "repeats": repeats}


def eval_scaling(workers: list[int], latency: float, n_per_label: int) -> list[dict[str, Any]]:
    """Speed-up of one evaluation of n examples against a latency-bound model, by max_workers."""
    from reflex_dspy.candidate import Candidate
    from reflex_dspy.evaluation import Evaluator
    from reflex_dspy.metrics import resolve_metric

    data = examples(n_per_label)
    student = program()
    rows, base = [], None
    for k in workers:
        ev = Evaluator(student, resolve_metric("exact"), task_lm=task_model(latency), max_workers=k)
        start = time.perf_counter()
        ev.evaluate(Candidate.from_program(student), data)
        wall = time.perf_counter() - start
        base = base or wall
        rows.append({"workers": k, "wall_s": wall, "speedup": base / wall, "efficiency": base / wall / k})
    return rows


def pdo_scaling(workers: list[int], latency: float, iterations: int, n_per_label: int = 32) -> list[dict[str, Any]]:
    """Wall time of a PDO run by max_workers: a round's duels are scored in one evaluation.

    The proposer writes a distinct prompt for every tip (`distinct=True`), so the pool holds six
    prompts and each round duels new pairs; a warm-up run first pays the imports (Optuna, SciPy)
    that the first measured run would otherwise carry alone, inflating every speed-up.
    """
    def run(k: int, lat: float) -> tuple[Any, float]:
        return optimize(lat, workers=k, strategy="pdo", iterations=iterations, n_per_label=n_per_label,
                        lms=(task_model(lat), reasoning_model(lat, distinct=True)))

    run(1, 0.0)
    rows, base = [], None
    for k in workers:
        result, wall = run(k, latency)
        base = base or wall
        rows.append({"workers": k, "wall_s": wall, "speedup": base / wall, "efficiency": base / wall / k,
                     "metric_calls": result.usage["metric_calls"]})
    return rows


def waste(iterations: int) -> dict[str, Any]:
    """Calls the models answered against the minimum (distinct pairs and replies), and calls an
    interrupted-then-resumed run made beyond an uninterrupted one (goal 0)."""
    from reflex_dspy.tracking.base import Tracker
    from reflex_dspy.tracking.store import RunStore

    class StopAt(Tracker):
        def on_iteration(self, record) -> None:
            if record.iteration == 2:
                raise KeyboardInterrupt

    def answered(lms) -> int:
        return sum(lm.fake_engine.calls for lm in lms)

    whole_lms, first_lms, second_lms = models(0.0), models(0.0), models(0.0)
    with tempfile.TemporaryDirectory() as tmp:
        whole, _ = optimize(0.0, iterations=iterations, run_dir=Path(tmp) / "a", lms=whole_lms)
        with contextlib.suppress(KeyboardInterrupt):
            optimize(0.0, iterations=iterations, run_dir=Path(tmp) / "b", trackers=[StopAt()], lms=first_lms)
        run = RunStore(Path(tmp) / "b").list_runs()[-1]
        optimize(0.0, iterations=iterations, run_dir=Path(tmp) / "b", resume=run.run_id, lms=second_lms)
    u = whole.usage
    return {"answered": answered(whole_lms), "distinct": u["metric_calls"] + u["reasoning_calls"],
            "cache_hits": u["cache_hits"],
            "repaid_after_resume": answered(first_lms) + answered(second_lms) - answered(whole_lms)}


def startup(repeats: int) -> dict[str, Any]:
    """`reflex-dspy --help` wall time in a fresh interpreter (median)."""
    exe = Path(sys.executable).with_name("reflex-dspy")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([str(exe), "--help"], check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "max_s": max(times), "repeats": repeats}
