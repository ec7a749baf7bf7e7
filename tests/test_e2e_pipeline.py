"""examples/tool_agent end to end on the embedded model: a DSPy agent with a tool, only `answer` optimized,
judged by the embedded model on the whole trace. Small on purpose (4 inputs, one iteration): it
checks that pipeline mode works on a real model and records what it should, not how much it gains.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reflex_dspy import Reflex
from reflex_dspy.adapters import load_inputs, load_pipeline_file, load_prompt, make_program
from reflex_dspy.metrics import JudgeMetric, load_rubric
from reflex_dspy.tracking.store import RunStore

pytest.importorskip("llama_cpp")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tool_agent"


@pytest.mark.slow
def test_the_tool_agent_example_optimizes_its_answer_node_on_the_embedded_model(tmp_path):
    from reflex_dspy.lm import embedded_lm

    task = embedded_lm(max_tokens=60)  # DSPy's cache (a private one in tests) spares the unchanged find step
    judge = embedded_lm(max_tokens=120)
    pipeline = load_pipeline_file(EXAMPLE / "agent.py")
    program, binding = make_program(pipeline, load_prompt(EXAMPLE / "prompt.md"))
    inputs = load_inputs(EXAMPLE / "inputs.jsonl", binding)
    picked = [ex for ex in inputs if ex.reflex_id in ("q01", "q02", "q06", "q07")]
    metric = JudgeMetric(judge, load_rubric(EXAMPLE / "rubric.md"))
    optimizer = Reflex(
        metric,
        strategy="iterative",
        task_lm=task,
        reasoning_lm=task,
        run_dir=tmp_path,
        mlflow=False,
        max_iterations=1,
        train_ratio=1.0,
        max_workers=1,
        reasoning_max_tokens=200,
    )
    before = program.find.signature.instructions
    optimized = optimizer.compile(program, trainset=picked)
    result = optimized.result

    assert len(result.iterations) == 1 and result.final.n == 4 and result.baseline.mean is not None
    assert optimized.find.signature.instructions == before and not optimized.find.demos  # context: untouched
    record = result.iterations[0]
    assert set(record.candidate["predictors"]) == {"answer"}
    assert set(record.details["changed_predictors"]) <= {"answer"}
    assert result.usage["reasoning_calls"] > 0 and result.usage["lm_calls"] > 4
    shown = "\n".join(m["content"] for m in judge.history[-1]["messages"])  # the judge saw the whole trace
    assert "[2] lookup (tool) [context]" in shown and "[3] answer (predictor) [optimize]" in shown
    run = RunStore(tmp_path).get_run(result.run_id)
    entries = [json.loads(line) for line in run.file("journal.jsonl").read_text().splitlines()]
    traces = [e["result"]["agent_trace"] for e in entries if e.get("kind") == "eval"]
    assert traces and all(
        [n["kind"] for n in t["nodes"]] == ["predictor", "tool", "predictor"] for t in traces
    )
