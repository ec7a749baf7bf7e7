"""One small run per strategy on the embedded model: each completes, records and pays for real calls.

Small on purpose (16 reviews, one or two iterations, short answers): these check that every
strategy works on a real model end to end, not how much it gains (bench/ measures that).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reflex_dspy import Reflex
from reflex_dspy.adapters import load_prompt, program_from_prompt
from reflex_dspy.data import load_dataset
from reflex_dspy.tracking.store import RunStore

pytest.importorskip("xllamacpp")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "review_sentiment"

CASES = {
    "iterative": ({}, 1),
    "structural": ({"variants_per_round": 3}, 1),
    "fewshot": ({"max_examples": 2, "candidate_pool_size": 4}, 1),
    "pdo": ({"initial_pool_size": 3, "duels_per_round": 2, "samples_per_duel": 4, "mutation_frequency": 0}, 1),
    # The opening step (the label set, no reasoning call) runs in test_e2e_cli; here auto's axes do.
    "auto": ({"max_phases": 2, "min_phases": 1, "state_facts": False}, 2),
    "gepa": ({"max_metric_calls": 30}, 1),
}


@pytest.fixture(scope="module")
def embedded():
    from reflex_dspy.lm import embedded_lm, probe_lm

    task = embedded_lm(max_tokens=12, cache=False)  # every run pays for its own calls
    probe_lm(task)  # loads the model once for the module
    return task


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_every_strategy_runs_on_the_embedded_model(name, embedded, tmp_path):
    params, iterations = CASES[name]
    examples = load_dataset(EXAMPLE / "data.jsonl")[:16]
    opt = Reflex("exact", strategy=name, task_lm=embedded, reasoning_lm=embedded, run_dir=tmp_path, reasoning_max_tokens=160,
                 max_iterations=iterations, batch_size=6, train_ratio=0.75, val_ratio=0.25, max_workers=1,
                 extra_kwargs=params)
    program = opt.compile(program_from_prompt(load_prompt(EXAMPLE / "prompt.md")), trainset=examples)
    result = program.result
    assert result.strategy == name and 1 <= len(result.iterations) <= iterations
    expected_phases = {"structural", "iterative", "fewshot", "pdo"} if name == "auto" else {name}
    assert {r.phase for r in result.iterations} <= expected_phases
    assert result.final.n == result.split_sizes["test"] and result.final.mean is not None
    assert result.usage["lm_calls"] > result.baseline.n and result.usage["eval_tokens"] > 0
    run = RunStore(tmp_path).get_run(result.run_id)
    assert run.status == "completed" and len(run.load_iterations()) == len(result.iterations)
    recorded = json.loads(run.file("result.json").read_text())
    assert recorded["final"]["mean_score"] == result.final.mean
    if name == "fewshot":
        assert any(r.candidate["predictors"]["predict"]["demos"] for r in result.iterations)
    else:  # every other strategy asks the reasoning model for something
        assert result.usage["reasoning_calls"] > 0
