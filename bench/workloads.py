"""Deterministic, latency-bound workloads for the engine benchmarks (overhead, scaling, waste).

The fake models come from `tests/fakes.py` (one place for fakes); here they only gain a fixed
latency, so wall time minus latency is what the framework itself costs.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import dspy  # noqa: E402
from fakes import KEYWORDS, fake_lm, routing_examples, truth  # noqa: E402

INITIAL = "Say which team should handle the message."
PROPOSALS = [
    "Route the message to a team ({n}).",
    "Answer with one word: billing, shipping or technical ({n}).",
    "Read the message and reply with the team name only ({n}).",
]


SLEPT = [0.0]  # seconds the fakes really slept: sleep() overshoots its argument, and that is not overhead


def _sleep(latency: float) -> None:
    if latency:  # sleep(0) still yields the CPU: on a busy machine that alone costs milliseconds
        start = time.perf_counter()
        time.sleep(latency)
        SLEPT[0] += time.perf_counter() - start  # one worker in the overhead runs: no lock needed


def examples(n_per_label: int) -> list[dspy.Example]:
    """The routing task of tests/fakes.py in the bench's own wording: with the tests' wording the
    waste benchmark's run completed before its interruption at iteration 2 (not investigated)."""
    return routing_examples(n_per_label, ask="")


def task_model(latency: float) -> dspy.LM:
    """Answers the bare label when the instructions list every label (except for technical
    messages, so no prompt reaches 1.0 and every run does all its iterations), else a sentence."""

    def respond(system: str, messages: list[dict]) -> str:
        _sleep(latency)
        label = truth(messages[-1]["content"])
        listed = all(k in system.lower() for k in KEYWORDS)
        return label if listed and label != "technical" else f"This is about {label}."

    return fake_lm(respond, name="bench/task")


def reasoning_model(latency: float, *, distinct: bool = False) -> dspy.LM:
    """A stateless proposer: the proposal depends only on how many rewrites the prompt has seen.

    `distinct`: every different request gets a different proposal (one of `PROPOSALS`, chosen
    and tagged by the request's hash), so PDO's pool really holds several prompts; without it
    every tip gives the same variant and PDO duels one pair over and over.
    """

    def respond(system: str, messages: list[dict]) -> str:
        _sleep(latency)
        text = messages[-1]["content"]
        n = text.count("Iter ")
        if distinct:
            n = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
        return json.dumps({
            "failure_patterns": "outputs are sentences, not labels",
            "change_summary": f"proposal {n + 1}",
            "revised_instructions": PROPOSALS[n % len(PROPOSALS)].format(n=n),
        })

    # A fixed name: a resumed run recognises the replies journaled by the interrupted one by model name.
    return fake_lm(respond, name="bench/reasoner")


def program() -> dspy.Module:
    from reflex_dspy.adapters import program_from_prompt

    return program_from_prompt(INITIAL)


def models(latency: float) -> tuple[dspy.LM, dspy.LM]:
    """(task model, reasoning model); their `.fake_engine.calls` count the calls really answered."""
    return task_model(latency), reasoning_model(latency)


def optimize(latency: float, *, workers: int = 1, iterations: int = 3, n_per_label: int = 8,
             run_dir: Path | None = None, strategy: str = "iterative", trackers=(), resume: Any = None,
             lms: tuple[dspy.LM, dspy.LM] | None = None, **config: Any) -> tuple[Any, float]:
    """One fixed optimization; returns (result, wall seconds)."""
    from reflex_dspy import Reflex

    task, reasoner = lms or models(latency)
    opt = Reflex("exact", strategy=strategy, task_lm=task, reasoning_lm=reasoner,
                 max_workers=workers, max_iterations=iterations, early_stopping_patience=0, score_threshold=1.0,
                 track=run_dir is not None, run_dir=run_dir, trackers=trackers,
                 tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}" if run_dir else None, **config)
    start = time.perf_counter()
    optimized = opt.compile(program(), trainset=examples(n_per_label), resume=resume)
    return optimized.result, time.perf_counter() - start


def quality_models() -> tuple[dspy.LM, dspy.LM]:
    """Fakes for the quality benchmark's smoke run: the task model names the right team only when
    the instructions list all four teams or a demo shows the format; the proposer lists them."""
    from quality_tasks import TASKS

    gold = {e.message: e.team for e in TASKS["routing"].load()}
    teams = sorted(set(gold.values()))

    def task(system: str, messages: list[dict]) -> str:
        text = messages[-1]["content"]
        label = next((t for m, t in gold.items() if m in text), "billing")
        knows = all(t in system.lower() for t in teams) or len(messages) > 1
        return json.dumps({"team": label if knows else f"The {label} people"})

    def reasoner(system: str, messages: list[dict]) -> str:
        return json.dumps({"failure_patterns": "answers are sentences", "change_summary": "name the teams",
                           "revised_instructions": f"Reply with one team name: {', '.join(teams)}."})

    return fake_lm(task, name="bench/quality-task"), fake_lm(reasoner, name="bench/quality-reasoner")
