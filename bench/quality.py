"""Quality per budget: every reflex strategy against DSPy's own optimizers.

Every optimizer at a given (task, seed) gets the same task model, the same reasoning/proposer
model, the same train / val / test split and the same metric; reflex strategies get
`--max-metric-calls` = `budget`, DSPy's optimizers run with the settings the issue names
(MIPROv2 and GEPA `auto="light"`; COPRO and BootstrapFewShotWithRandomSearch sized to about
the same number of calls) and their calls are counted. Test is measured outside the optimizer,
the same way for all of them, and never used to choose.

Each run's result is one JSON file under the results folder, written when the run ends, so an
interrupted benchmark continues where it stopped and the report is built from the files.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import dspy
import quality_tasks
from quality_tasks import TASKS, Task

REFLEX = ["iterative", "structural", "fewshot", "pdo", "auto", "gepa"]
DSPY = ["COPRO", "BootstrapFewShotWithRandomSearch", "MIPROv2", "GEPA"]  # cheapest first
OPTIMIZERS = REFLEX + DSPY
BUDGET = 64  # metric calls for reflex strategies: 8 full passes over an 8-example split


class Meter:
    """Counts the calls a model really answered (not the response cache) and their tokens."""

    def __init__(self, lm: dspy.LM) -> None:
        self.calls = self.tokens = 0
        self._lock = threading.Lock()
        engine = lm._engine_spec
        inner = engine.complete

        def complete(request):
            response = inner(request)
            with self._lock:
                self.calls += 1
                self.tokens += (response.usage.total_tokens or 0) if response.usage else 0
            return response

        engine.complete = complete

    def snapshot(self) -> tuple[int, int]:
        return self.calls, self.tokens


class CountedMetric:
    """The task's metric, counting calls on search data and on test data apart."""

    def __init__(self, task: Task, test_ids: set[str], feedback: bool = False) -> None:
        self.task, self.test_ids, self.feedback = task, test_ids, feedback
        self.search_calls = self.test_calls = 0
        self._lock = threading.Lock()

    def __call__(self, example, pred, trace=None, pred_name=None, pred_trace=None):
        with self._lock:
            if example.get("id") in self.test_ids:
                self.test_calls += 1
            else:
                self.search_calls += 1
        score = self.task.score(example, pred)
        if self.feedback:  # GEPA's metric protocol: a score plus text feedback
            return dspy.Prediction(score=score, feedback=self.task.feedback(example, pred))
        return score


def evaluate(task: Task, program: dspy.Module, examples: list[dspy.Example]) -> dict[str, Any]:
    """Test score of `program`; an answer that fails to parse is wrong, and counted as a failure."""
    scores, failures = [], 0
    for ex in examples:
        try:
            scores.append(task.score(ex, program(**ex.inputs())))
        except Exception:  # noqa: BLE001 - a parse failure is a wrong answer the user would see
            failures += 1
            scores.append(0.0)
    return {"score": sum(scores) / len(scores), "scores": scores, "failures": failures}


def _reflex(name: str, student: dspy.Module, metric, train, val, test, task_lm, reasoner, seed: int,
            budget: int) -> dspy.Module:
    from reflex_dspy import Reflex

    opt = Reflex(metric, strategy=name, task_lm=task_lm, reasoning_lm=reasoner, track=False,
                 max_metric_calls=budget, max_workers=1, seed=seed, max_iterations=50,
                 score_threshold=1.0, reasoning_max_tokens=512)
    splits = {"train": [e.id for e in train], "val": [e.id for e in val], "test": [e.id for e in test]}
    return opt.compile(student, trainset=train + val + test, splits=splits)


def _dspy(name: str, student: dspy.Module, metric, train, val, task_lm, reasoner, seed: int) -> dspy.Module:
    from dspy.teleprompt import COPRO, GEPA, BootstrapFewShotWithRandomSearch, MIPROv2

    if name == "MIPROv2":
        return MIPROv2(metric, prompt_model=reasoner, task_model=task_lm, auto="light", num_threads=1,
                       seed=seed, verbose=False).compile(student, trainset=train, valset=val)
    if name == "COPRO":  # breadth x depth x |train| = 4 x 2 x 8 = 64 calls
        return COPRO(prompt_model=reasoner, metric=metric, breadth=4, depth=2).compile(
            student, trainset=train, eval_kwargs={"num_threads": 1, "display_progress": False})
    if name == "BootstrapFewShotWithRandomSearch":  # (5 + 3 candidates) x |val| = 64 calls, + bootstrapping
        return BootstrapFewShotWithRandomSearch(metric, num_candidate_programs=5, num_threads=1).compile(
            student, trainset=train, valset=val)
    if name == "GEPA":
        return GEPA(metric, auto="light", reflection_lm=reasoner, num_threads=1, seed=seed).compile(
            student, trainset=train, valset=val)
    raise ValueError(f"unknown optimizer {name!r}")


def run_one(task: Task, optimizer: str, seed: int, budget: int, task_lm: dspy.LM, reasoner: dspy.LM,
            meters: dict[str, Meter], sizes: tuple[int, int, int]) -> dict[str, Any]:
    train, val, test = quality_tasks.split(task.load(), seed, sizes)
    metric = CountedMetric(task, {e.id for e in test}, feedback=optimizer == "GEPA")
    before = {k: m.snapshot() for k, m in meters.items()}
    start = time.perf_counter()
    with dspy.context(lm=task_lm, adapter=dspy.JSONAdapter()):
        if optimizer in REFLEX:
            program = _reflex(optimizer, task.program(), metric, train, val, test, task_lm, reasoner, seed, budget)
        else:
            program = _dspy(optimizer, task.program(), metric, train, val, task_lm, reasoner, seed)
        wall = time.perf_counter() - start
        spent = {k: [a - b for a, b in zip(m.snapshot(), before[k], strict=True)] for k, m in meters.items()}
        result = evaluate(task, program, test)
    return {
        "task": task.name, "optimizer": optimizer, "seed": seed, "budget": budget if optimizer in REFLEX else None,
        "test": result["score"], "test_failures": result["failures"], "test_scores": result["scores"],
        "metric_calls": metric.search_calls, "task_calls": spent["task"][0],
        "tokens": spent["task"][1] + spent["reasoner"][1], "reasoner_calls": spent["reasoner"][0],
        "wall_s": round(wall, 2), "instructions": _instructions(program), "demos": _demos(program),
        **(_search(program.result) if optimizer in REFLEX else {}),
    }


def _search(result: Any) -> dict[str, Any]:
    """Why a reflex run stopped and the phase of each iteration (auto's axis choices); DSPy's
    optimizers report neither."""
    return {"stop_reason": result.stop_reason, "phases": [r.phase for r in result.iterations]}


def run_baseline(task: Task, seed: int, task_lm: dspy.LM, sizes: tuple[int, int, int]) -> dict[str, Any]:
    _, _, test = quality_tasks.split(task.load(), seed, sizes)
    with dspy.context(lm=task_lm, adapter=dspy.JSONAdapter()):
        result = evaluate(task, task.program(), test)
    return {"task": task.name, "optimizer": "baseline", "seed": seed, "test": result["score"],
            "test_failures": result["failures"], "test_scores": result["scores"]}


def _instructions(program: dspy.Module) -> list[str]:
    return [p.signature.instructions for _, p in program.named_predictors()]


def _demos(program: dspy.Module) -> int:
    return sum(len(p.demos) for _, p in program.named_predictors())


def embedded_models() -> tuple[dspy.LM, dspy.LM]:
    """The embedded default model as task model (greedy, response cache on: a cached answer is the
    answer) and as reasoning model (no cache, so seeds differ)."""
    from reflex_dspy.lm import embedded_lm

    return embedded_lm(max_tokens=64), embedded_lm(max_tokens=512, cache=False)


def run(out: Path, *, tasks: Iterable[str], optimizers: Iterable[str], seeds: Iterable[int],
        budget: int = BUDGET, sizes: tuple[int, int, int] = quality_tasks.SIZES, models: Callable[[], tuple[dspy.LM, dspy.LM]] = embedded_models,
        log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> list[dict[str, Any]]:
    """Run every missing (task, optimizer, seed), seeds outermost, then tasks, so that an early stop
    leaves whole comparisons (every optimizer on a task); return all results found in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    tasks, optimizers, seeds = list(tasks), list(optimizers), list(seeds)
    lms: tuple[dspy.LM, dspy.LM] | None = None
    meters: dict[str, Meter] = {}
    for seed in seeds:
        for name in tasks:
            task = TASKS[name]
            for optimizer in ["baseline", *optimizers]:
                path = out / f"{name}-{optimizer}-s{seed}.json"
                if path.exists():
                    continue
                if lms is None:
                    lms = models()
                    meters = {"task": Meter(lms[0]), "reasoner": Meter(lms[1])}
                log(f"quality: {name} · {optimizer} · seed {seed} ...")
                try:
                    if optimizer == "baseline":
                        record = run_baseline(task, seed, lms[0], sizes)
                    else:
                        record = run_one(task, optimizer, seed, budget, *lms, meters, sizes)
                except Exception as exc:  # noqa: BLE001 - one optimizer failing must not stop the rest
                    record = {"task": name, "optimizer": optimizer, "seed": seed,
                              "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(record, indent=1))
                tmp.replace(path)
                log(f"quality: {name} · {optimizer} · seed {seed}: "
                    + (f"test {record['test']:.3f}" if "test" in record else record["error"])
                    + (f" · {record['metric_calls']} metric calls · {record['wall_s']:.0f}s" if "wall_s" in record else ""))
    return load(out)


def load(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))] if out.exists() else []
