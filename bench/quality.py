"""Quality per budget: auto (what users get by default) against each of DSPy's optimizers.

Every optimizer at a given (task, seed) gets the same task model, the same reasoning/proposer
model, the same train / val / test split and the same metric. reflex strategies get
`max_metric_calls` = `budget`. DSPy's optimizers run twice where their API allows: sized to the
same budget (`BootstrapFewShotWithRandomSearch` by `num_candidate_programs`, MIPROv2 by
`num_trials` / `num_candidates`, GEPA by `max_metric_calls`, COPRO by breadth x depth), and at
DSPy's own `auto="light"` (the `-light` names). Every optimizer's real search metric calls are
counted and reported: DSPy's sizing is approximate (bootstrapping adds calls). Test is measured
outside the optimizer, the same way for all of them, and never used to choose.

The order of runs is the order of `OPTIMIZERS`: the headline (baseline, auto, the four DSPy
optimizers at equal calls) first, then DSPy's light settings, then the other reflex strategies,
so a grid stopped early still holds whole headline comparisons.

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
from quality_tasks import ALL_TASKS, Task

REFLEX = ["auto", "fewshot", "joint", "pdo", "iterative", "structural", "gepa"]
DSPY = ["BootstrapFewShotWithRandomSearch", "MIPROv2", "GEPA", "COPRO"]  # sized to the budget
DSPY_LIGHT = ["MIPROv2-light", "GEPA-light"]  # DSPy's own auto="light" settings
HEADLINE = ["auto", *DSPY]
OPTIMIZERS = [*HEADLINE, *DSPY_LIGHT, *REFLEX[1:]]
BUDGET = 150  # metric calls for reflex strategies (the setting): ~6 passes over train + val


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


def dspy_sizes(budget: int, n_train: int, n_val: int) -> dict[str, dict[str, int]]:
    """DSPy's knobs sized to about `budget` search metric calls (their own accounting differs:
    bootstrapping runs the program on train until enough traces succeed, so the real calls are
    measured and reported, never assumed)."""
    return {
        # (num_candidate_programs + 3 fixed programs) x |val|, + bootstrapping on train
        "BootstrapFewShotWithRandomSearch": {"num_candidate_programs": max(budget // n_val - 3, 1)},
        # one full val pass per trial (a val smaller than the minibatch is scored whole), + bootstrapping
        "MIPROv2": {"num_trials": max(budget // n_val - 3, 2), "num_candidates": 6},
        "GEPA": {"max_metric_calls": budget},
        # breadth x depth x |train|
        "COPRO": {"breadth": 4, "depth": max(budget // (4 * n_train), 1)},
    }


def _dspy(name: str, student: dspy.Module, metric, train, val, task_lm, reasoner, seed: int,
          budget: int) -> dspy.Module:
    from dspy.teleprompt import COPRO, GEPA, BootstrapFewShotWithRandomSearch, MIPROv2

    size = dspy_sizes(budget, len(train), len(val)).get(name, {})
    if name == "MIPROv2-light":
        return MIPROv2(metric, prompt_model=reasoner, task_model=task_lm, auto="light", num_threads=1,
                       seed=seed, verbose=False).compile(student, trainset=train, valset=val)
    if name == "MIPROv2":
        return MIPROv2(metric, prompt_model=reasoner, task_model=task_lm, auto=None, num_candidates=size["num_candidates"],
                       num_threads=1, seed=seed, verbose=False).compile(
            student, trainset=train, valset=val, num_trials=size["num_trials"], minibatch=False)
    if name == "COPRO":
        return COPRO(prompt_model=reasoner, metric=metric, breadth=size["breadth"], depth=size["depth"]).compile(
            student, trainset=train, eval_kwargs={"num_threads": 1, "display_progress": False})
    if name == "BootstrapFewShotWithRandomSearch":
        return BootstrapFewShotWithRandomSearch(metric, num_threads=1, **size).compile(
            student, trainset=train, valset=val)
    if name in ("GEPA", "GEPA-light"):
        budget_kw = {"auto": "light"} if name == "GEPA-light" else size
        return GEPA(metric, reflection_lm=reasoner, num_threads=1, seed=seed, **budget_kw).compile(
            student, trainset=train, valset=val)
    raise ValueError(f"unknown optimizer {name!r}")


def run_one(task: Task, optimizer: str, seed: int, budget: int, task_lm: dspy.LM, reasoner: dspy.LM,
            meters: dict[str, Meter], sizes: tuple[int, int, int]) -> dict[str, Any]:
    train, val, test = quality_tasks.split(task.load(), seed, sizes)
    metric = CountedMetric(task, {e.id for e in test}, feedback=optimizer.startswith("GEPA"))
    before = {k: m.snapshot() for k, m in meters.items()}
    start = time.perf_counter()
    with dspy.context(lm=task_lm, adapter=dspy.JSONAdapter()):
        if optimizer in REFLEX:
            program = _reflex(optimizer, task.program(), metric, train, val, test, task_lm, reasoner, seed, budget)
        else:
            program = _dspy(optimizer, task.program(), metric, train, val, task_lm, reasoner, seed, budget)
        wall = time.perf_counter() - start
        spent = {k: [a - b for a, b in zip(m.snapshot(), before[k], strict=True)] for k, m in meters.items()}
        result = evaluate(task, program, test)
    return {
        "task": task.name, "optimizer": optimizer, "seed": seed,
        "budget": budget if optimizer in REFLEX or optimizer in DSPY else None,
        "test": result["score"], "test_failures": result["failures"], "test_scores": result["scores"],
        "metric_calls": metric.search_calls, "task_calls": spent["task"][0],
        "tokens": spent["task"][1] + spent["reasoner"][1], "reasoner_calls": spent["reasoner"][0],
        "wall_s": round(wall, 2), "instructions": _instructions(program), "demos": _demos(program),
        **(_search(program.result) if optimizer in REFLEX else {}),
    }


def _search(result: Any) -> dict[str, Any]:
    """Why a reflex run stopped, the phase of each iteration, auto's phases (each axis, why it was
    chosen: probe or rung, and the gains behind it), each iteration's metric calls and scores
    (batch, val) and the pick (with its confirmation on train, when a close call had one). DSPy's
    optimizers report none of it."""
    phases = []
    for r in result.iterations:
        info = r.details.get("auto")
        if info and (not phases or phases[-1]["phase_number"] != r.details.get("phase_number")):
            phases.append({"phase_number": r.details.get("phase_number"), "axis": r.phase, "kind": info["kind"],
                           "evidence": info["evidence"]})
    steps = [{"iteration": r.iteration, "phase": r.phase, "metric_calls": r.metric_calls, "batch": r.score,
              "val": r.val_score} for r in result.iterations]
    return {"stop_reason": result.stop_reason, "phases": [r.phase for r in result.iterations],
            "auto_phases": phases, "steps": steps, "selected_iteration": result.selected_iteration,
            "selected_by": result.selected_by, "confirmation": result.confirmation}


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
            task = ALL_TASKS[name]
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
