"""Pipeline mode's faults: bad files and inputs (one line, exit 2, nothing written), a pipeline_fn that
returns the wrong type (its examples fail, never 0), and per-sample timeouts that really stop a call."""

from __future__ import annotations

import json
import re
import time
import types

import dspy
import pytest
from fakes import fake_lm
from test_pipeline import GOOD, PRICES, question, shop_respond
from test_pipeline_cli import cli, fake_models, pipeline_files

from reflex_dspy.adapters import PipelineFnProgram, load_pipeline_file
from reflex_dspy.adapters.pipeline_fn import SampleTimedOut
from reflex_dspy.candidate import Candidate
from reflex_dspy.data import assign_ids
from reflex_dspy.evaluation import Evaluator
from reflex_dspy.retries import RetryPolicy, classify_error


@pytest.fixture
def models(monkeypatch) -> types.SimpleNamespace:
    return fake_models(monkeypatch)


@pytest.fixture
def files(tmp_path) -> types.SimpleNamespace:
    return pipeline_files(tmp_path)


@pytest.mark.parametrize(
    ("setup", "argv", "message"),
    [
        (
            lambda f: f.agent.write_text("x = 1\n"),
            ["PROMPT", "--pipeline-file", "AGENT"],
            r"agent_fn\.py: defines neither pipeline_fn\(prompt, input\) nor a DSPy program factory",
        ),
        (
            lambda f: f.agent.write_text("import os\n\nraise RuntimeError('no key')\n"),
            ["PROMPT", "--pipeline-file", "AGENT"],
            r"agent_fn\.py:3: importing it failed: RuntimeError: no key",
        ),
        (
            lambda f: f.agent.write_text("def pipeline_fn(prompt):\n    pass\n"),
            ["PROMPT", "--pipeline-file", "AGENT"],
            r"pipeline_fn must accept two arguments \(prompt, input\)",
        ),
        (
            lambda f: f.inputs.write_text('{"input": "a"}\n{"input": "b"\n'),
            ["PROMPT", "--pipeline-file", "AGENT"],
            r"inputs\.jsonl:2: invalid JSON",
        ),
        (
            lambda f: f.inputs.write_text('{"input": "a"}\n\n{"ideal": "b"}\n'),
            ["PROMPT", "--pipeline-file", "AGENT"],
            r"inputs\.jsonl:3: missing 'input'",
        ),
        (
            lambda f: f.inputs.write_text('{"input": "a", "expected": "b"}\n'),
            ["PROMPT", "--pipeline-file", "AGENT"],
            r"inputs\.jsonl:1: unknown field 'expected' \(allowed: input, ideal, id\)",
        ),
        (
            lambda f: f.inputs.write_text('{"input": "a", "id": 1}\n{"input": "b", "id": "1"}\n'),
            ["PROMPT", "--pipeline-file", "AGENT"],
            r"inputs\.jsonl:2: id '1' repeats the id at .*inputs\.jsonl:1",
        ),
        (
            lambda f: f.inputs.write_text('{"input": "a"}\n'),
            ["PROMPT", "--pipeline-file", "AGENT", "--metric", "exact"],
            r"has no 'ideal', which --metric compares against",
        ),
        (lambda f: None, ["--pipeline-file", "AGENT"], r"defines pipeline_fn: give PROMPT"),
        (
            lambda f: None,
            ["PROMPT", "--pipeline-file", "AGENT", "-m", "fake/task"],
            r"-m: a pipeline_fn calls its own model",
        ),
        (lambda f: None, ["PROMPT", "PROMPT", "--pipeline-file", "AGENT"], r"give only PROMPT"),
        (lambda f: None, ["PROMPT", "--inputs-file", "INPUTS"], r"--inputs-file needs --pipeline-file"),
        (
            lambda f: None,
            ["--pipeline-file", "PROGRAM", "--optimize", "anwser"],
            r"no predictor named 'anwser' in the program \(it has: extract, answer\)",
        ),
    ],
)
def test_bad_pipeline_input_is_one_line_exit_2_and_nothing_written(
    setup, argv, message, capsys, models, files
):
    setup(files)
    paths = {"PROMPT": files.prompt, "AGENT": files.agent, "PROGRAM": files.program, "INPUTS": files.inputs}
    argv = [paths.get(a, a) for a in argv]
    if "--inputs-file" not in argv:
        argv += ["--inputs-file", files.inputs]
    scoring = [] if "--metric" in argv else ["--judge", "fake/judge"]
    code, out, err = cli(capsys, "optimize", *argv, *scoring, *files.flags)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("reflex-dspy: error: ") and re.search(message, err), err
    assert not files.run_dir.exists()


def test_a_wrong_return_type_fails_those_examples_with_a_clear_error(capsys, models, files, tmp_path):
    inputs = tmp_path / "with_kettle.jsonl"
    inputs.write_text(
        "".join(json.dumps({"input": question(i), "ideal": f"{p} dollars"}) + "\n" for i, p in PRICES.items())
    )
    code, out, err = cli(
        capsys,
        "optimize",
        files.prompt,
        "--pipeline-file",
        files.agent,
        "--inputs-file",
        inputs,
        "--metric",
        "exact",
        "--train-split",
        "1.0",
        "--results-json",
        tmp_path / "r.json",
        *files.flags[:-4],
    )
    assert code == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    failed = [s for s in result["baseline"]["samples"] if s["error"]]
    assert len(failed) == 1 and result["baseline"]["n_failed"] == 1
    assert failed[0]["error"] == "PipelineFnError: pipeline_fn must return reflex_dspy.AgentTrace, got dict"
    assert failed[0]["score"] is None  # failed, never scored 0


def test_a_hung_pipeline_call_is_stopped_and_fails_only_its_example(files):
    pipeline = load_pipeline_file(files.agent)
    program = PipelineFnProgram(
        pipeline.module.pipeline_fn,
        GOOD,
        timeout=1.0,
        workers=2,
        ref=("file", str(files.agent), "pipeline_fn"),
    )
    examples = [
        dspy.Example(input=q).with_inputs("input") for q in ("hang", question("anvil"), question("oar"))
    ]
    evaluator = Evaluator(
        program, lambda ex, pred, trace=None: 1.0, task_lm=fake_lm(shop_respond), max_workers=2
    )
    started = time.monotonic()
    try:
        result = evaluator.evaluate(Candidate.from_program(program), examples)
        hung = [r for r in result.results.values() if r.failed]
        assert len(hung) == 1 and hung[0].error.startswith("SampleTimedOut: timed out after 1s")
        assert result.n - result.n_failed == 2 and result.mean == 1.0
        assert evaluator.usage.retries == 0 and program.runner.killed == 1  # stopped once, not retried
        again = evaluator.evaluate(
            Candidate.from_program(program), [dspy.Example(input=question("globe")).with_inputs("input")]
        )
        assert again.n_failed == 0  # a fresh worker replaced the stopped one
    finally:
        program.close()
    assert time.monotonic() - started < 15
    assert classify_error(SampleTimedOut("timed out after 1s")) == "fatal"


def test_callers_waiting_for_a_worker_are_not_stranded_when_workers_are_stopped(files):
    """One worker, three threads, two hung calls: each is stopped in turn and the last call still runs."""
    from concurrent.futures import ThreadPoolExecutor

    pipeline = load_pipeline_file(files.agent)
    ref = ("file", str(files.agent), "pipeline_fn")
    program = PipelineFnProgram(pipeline.module.pipeline_fn, GOOD, timeout=0.5, workers=1, ref=ref)
    try:
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(program, input=q) for q in ("hang", "hang", question("anvil"))]
            outcomes = [f.exception(timeout=30) or f.result().output for f in futures]
    finally:
        program.close()
    assert [type(o).__name__ for o in outcomes[:2]] == ["SampleTimedOut", "SampleTimedOut"]
    assert outcomes[2] == "41 dollars" and program.runner.killed == 2


FAULTY_AGENT = '''
import dspy
import litellm
from reflex_dspy import AgentTrace

asked = {}

def pipeline_fn(prompt, input):
    """An agent whose own model call overflows its context on long inputs and is rate-limited once."""
    asked[input] = asked.get(input, 0) + 1
    if input.startswith("long"):
        raise dspy.ContextWindowExceededError(model="agent-model", message="over 4096 tokens")
    if input == "flaky" and asked[input] == 1:
        raise litellm.RateLimitError("slow down", llm_provider="openai", model="agent-model")
    trace = AgentTrace()
    trace.final_answer = "ok"
    return trace
'''


def test_an_error_in_a_worker_process_is_treated_as_the_same_error_in_a_thread(tmp_path):
    """Before: every error of a worker process (a per-sample timeout) came back as a plain
    PipelineFnError, so a context overflow failed its example (left out of the mean, asked again
    at each evaluation) and a rate limit was never retried."""
    agent = tmp_path / "faulty_agent.py"
    agent.write_text(FAULTY_AGENT)
    pipeline = load_pipeline_file(agent)
    examples = assign_ids([dspy.Example(input=q, output="ok").with_inputs("input") for q in ("long one", "flaky", "short")])
    means = []
    for timeout in (None, 30.0):  # in the evaluator's threads, then in a worker process
        program = PipelineFnProgram(pipeline.module.pipeline_fn, "Answer.", timeout=timeout, workers=1,
                                    ref=("file", str(agent), "pipeline_fn"))
        evaluator = Evaluator(program, lambda ex, pred, trace=None: float(pred.output == ex.output),
                              task_lm=fake_lm(shop_respond), max_workers=1, retry=RetryPolicy(base_delay=0.01))
        pipeline.module.asked.clear()
        try:
            result = evaluator.evaluate(Candidate.from_program(program), examples)
        finally:
            program.close()
        by_input = {ex.input: result.results[ex.reflex_id] for ex in examples}
        assert by_input["long one"].no_answer == "too_long" and by_input["long one"].score == 0.0
        assert not by_input["long one"].failed and not by_input["flaky"].failed
        assert evaluator.usage.retries == 1 and evaluator.usage.too_long == 1 and result.n_failed == 0
        means.append(result.mean)
    assert means == [2 / 3, 2 / 3]
