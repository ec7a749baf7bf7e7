"""examples/tool_agent end to end on the embedded model: a DSPy agent with a tool, only `answer` optimized.

Small on purpose (4 inputs, one iterative step, the example's trace-aware `faithful` metric, then
one judge call on a recorded trace): it checks that pipeline mode works on a real model and
records what it should, not how much it gains (the example's README reports that).
"""

from __future__ import annotations

import json
from pathlib import Path

import dspy
import pytest

from reflex_dspy import AgentTrace, Reflex
from reflex_dspy.adapters import load_inputs, load_pipeline_file, load_prompt, make_program
from reflex_dspy.metrics import JudgeMetric, load_rubric
from reflex_dspy.trace import using_trace
from reflex_dspy.tracking.store import RunStore

pytest.importorskip("xllamacpp")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tool_agent"


def _messages(entry: dict) -> str:
    return "\n".join(str(m.get("content")) for m in entry.get("messages") or [])


@pytest.mark.slow
def test_the_tool_agent_example_optimizes_its_answer_node_on_the_embedded_model(tmp_path):
    from dspy.clients.base_lm import GLOBAL_HISTORY

    from reflex_dspy.lm import embedded_lm

    task = embedded_lm(max_tokens=60)  # DSPy's cache (a private one in tests) spares the unchanged find step
    pipeline = load_pipeline_file(EXAMPLE / "agent.py")
    program, binding = make_program(pipeline, load_prompt(EXAMPLE / "prompt.md"))
    inputs = load_inputs(EXAMPLE / "inputs.jsonl", binding)
    picked = [ex for ex in inputs if ex.reflex_id in ("q01", "q02", "q06", "q07")]
    optimizer = Reflex(
        pipeline.module.faithful,
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
    seen = len(GLOBAL_HISTORY)
    optimized = optimizer.compile(program, trainset=picked)
    result = optimized.result

    assert len(result.iterations) == 1 and result.final.n == 4 and result.baseline.mean is not None
    assert optimized.find.signature.instructions == before and not optimized.find.demos  # context: untouched
    record = result.iterations[0]
    assert set(record.candidate["predictors"]) == {"answer"}
    assert set(record.details["changed_predictors"]) <= {"answer"}
    proposals = [_messages(e) for e in GLOBAL_HISTORY[seen:] if "revised_instructions" in _messages(e)]
    assert proposals, "the reasoning model was not asked"
    assert "[2] lookup (tool) [context]" in proposals[0]  # it saw the failing examples' traces
    run = RunStore(tmp_path).get_run(result.run_id)
    entries = [json.loads(line) for line in run.file("journal.jsonl").read_text().splitlines()]
    traces = [e["result"]["agent_trace"] for e in entries if e.get("kind") == "eval"]
    assert traces and all(
        [n["kind"] for n in t["nodes"]] == ["predictor", "tool", "predictor"] for t in traces
    )

    # The embedded judge grades one recorded answer with its whole trace, and its reply parses.
    judge = JudgeMetric(embedded_lm(max_tokens=120), load_rubric(EXAMPLE / "rubric.md"))
    trace = AgentTrace.from_dict(traces[0])
    example = next(ex for ex in picked if ex.reflex_id == trace.input_id)
    with using_trace(trace):
        graded = judge.evaluate(example, dspy.Prediction(answer=trace.final_answer))
    assert 0.0 <= graded.score <= 1.0
    assert "[3] answer (predictor) [optimize]" in _messages(GLOBAL_HISTORY[-1])
