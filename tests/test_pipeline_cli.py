"""`reflex-dspy optimize PROMPT --pipeline-file F --inputs-file F`: pipeline_fn and DSPy program files,
inputs files, errors, per-sample timeouts, dry run, resume and branch, on fake models.

`reflex_dspy.lm.resolve_lm` / `probe_lm` are replaced (as in test_cli_optimize.py); the pipeline
files are written by each test into tmp_path and run for real, worker processes included.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
import types
from pathlib import Path

import dspy
import pytest
from fakes import fake_lm
from test_pipeline import GOOD, PRICES, WEAK, question, rewrite_everything, shop_respond

import reflex_dspy.lm
import reflex_dspy.progress
from reflex_dspy.adapters import PipelineFnProgram, load_pipeline_file
from reflex_dspy.adapters.pipeline_fn import SampleTimedOut
from reflex_dspy.candidate import Candidate
from reflex_dspy.cli import main
from reflex_dspy.evaluation import Evaluator
from reflex_dspy.retries import classify_error
from reflex_dspy.tracking.store import RunStore

PIPELINE_FN = textwrap.dedent('''
    import time
    from reflex_dspy import AgentTrace

    PRICES = {prices!r}

    def pipeline_fn(prompt, input):
        """extract -> lookup tool -> answer; the answer quotes the tool only when the prompt says so."""
        if input == "hang":
            time.sleep(600)
        if "kettle" in input:
            return {{"answer": "not a trace"}}
        item = input.removeprefix("How much does the ").removesuffix(" cost?")
        trace = AgentTrace()
        trace.add("extract", inputs={{"question": input}}, outputs={{"item": item}})
        result = f"{{PRICES[item]}} dollars"
        trace.tool("lookup", {{"item": item}}, result)
        quote = "tool result" in prompt.lower() or "Examples:" in prompt or item < "f"
        answer = result if quote else "about 10 dollars, I think"
        trace.add("answer", inputs={{"question": input, "tool_result": result}}, outputs={{"answer": answer}},
                  optimize=True)
        trace.final_answer = answer
        return trace
''').format(prices=PRICES)

PROGRAM_FILE = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_pipeline import ShopAgent

    def build_program():
        return ShopAgent(mark=True)
""")

RUBRIC = "Grade 1-5. Give 1 to an answer that ignores the result the lookup tool returned; 5 if it quotes it."


def judge_respond(system: str, messages: list[dict]) -> str:
    """A fake judge applying RUBRIC to the trace it is shown: the final answer must quote the tool result."""
    text = "\n".join(m["content"] for m in messages)
    final = re.search(r"final answer: <data>(.*?)</data>", text)
    result = re.search(r"\(tool\) \[context\]\n  arguments:\n.*?\n  result: <data>(.*?)</data>", text, re.S)
    score = 5 if final and result and final.group(1) == result.group(1) else 1
    return json.dumps({"reasoning": "quotes the tool" if score == 5 else "ignores the tool", "score": score})


@pytest.fixture
def models(monkeypatch) -> types.SimpleNamespace:
    ns = types.SimpleNamespace(probed=[], judge_prompts=[])

    def judge(system, messages):
        ns.judge_prompts.append("\n".join(m["content"] for m in messages))
        return judge_respond(system, messages)

    ns.judge = fake_lm(judge, name="fake/judge")
    ns.reasoner = fake_lm(rewrite_everything, name="fake/reasoner")
    ns.task = fake_lm(shop_respond, name="fake/task")
    lms = {"fake/judge": ns.judge, "fake/reasoner": ns.reasoner, "fake/task": ns.task}
    monkeypatch.setattr(reflex_dspy.lm, "resolve_lm", lambda spec, **kw: lms[spec or "fake/task"])
    monkeypatch.setattr(reflex_dspy.lm, "probe_lm", ns.probed.append)
    return ns


@pytest.fixture
def files(tmp_path) -> types.SimpleNamespace:
    ns = types.SimpleNamespace(root=tmp_path, run_dir=tmp_path / "reflex")
    ns.agent = tmp_path / "agent_fn.py"
    ns.agent.write_text(PIPELINE_FN)
    ns.program = tmp_path / "agent.py"
    ns.program.write_text(PROGRAM_FILE.format(tests=str(Path(__file__).parent)))
    ns.prompt = tmp_path / "prompt.md"
    ns.prompt.write_text(WEAK + "\n")
    ns.rubric = tmp_path / "rubric.md"
    ns.rubric.write_text(RUBRIC)
    ns.inputs = tmp_path / "inputs.jsonl"
    records = [
        {"id": f"q{i}", "input": question(item), "ideal": f"{price} dollars"}
        for i, (item, price) in enumerate(PRICES.items())
        if item != "kettle"
    ]
    ns.inputs.write_text("".join(json.dumps(r) + "\n" for r in records))
    ns.flags = [
        "--run-dir",
        str(ns.run_dir),
        "--mlflow-tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--reasoning-model",
        "fake/reasoner",
        "-s",
        "iterative",
        "--max-iterations",
        "2",
        "--early-stopping-patience",
        "0",
        "--threshold",
        "1.0",
        "--train-split",
        "0.6",
        "--val-split",
        "0.4",
    ]
    return ns


def only_run(run_dir: Path):
    (summary,) = RunStore(run_dir).list_runs()
    return RunStore(run_dir).get_run(summary.run_id)


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_pipeline_fn_file_runs_judged_on_the_whole_trace(capsys, models, files, tmp_path):
    best = tmp_path / "best.md"
    code, out, err = cli(
        capsys,
        "optimize",
        files.prompt,
        "--pipeline-file",
        files.agent,
        "--inputs-file",
        files.inputs,
        "--judge",
        "fake/judge",
        "--judge-criteria",
        files.rubric,
        "-o",
        best,
        "--results-json",
        tmp_path / "result.json",
        *files.flags,
    )
    assert code == 0, err
    assert re.search(r"Baseline score : 0\.\d+", out) and "Final score    : 1.0000" in out
    assert "Changed nodes  : prompt" in out and best.read_text() == GOOD + "\n"
    shown = models.judge_prompts[0]  # the judge saw every node, the tool's arguments and result, the flags
    assert "[1] extract (predictor) [context]" in shown and "[3] answer (predictor) [optimize]" in shown
    assert "[2] lookup (tool) [context]" in shown and re.search(r"result: <data>\d+ dollars</data>", shown)
    assert RUBRIC in shown
    run = only_run(files.run_dir)
    meta = run.load_config()["metadata"]
    assert meta["pipeline"] == {"file": str(files.agent.resolve()), "sample_timeout": None, "optimize": None}
    assert meta["dataset_path"] == str(files.inputs.resolve()) and meta["task_model"] is None
    assert run.load_config()["models"]["task"] == "pipeline_fn/agent_fn.py"
    records = run.load_iterations()
    assert records[0].details["changed_predictors"] == ["prompt"] and records[0].system_prompt == {
        "prompt": GOOD
    }
    result = json.loads((tmp_path / "result.json").read_text())
    ids = {s["id"] for s in result["baseline"]["samples"]}
    assert ids <= {f"q{i}" for i in range(len(PRICES))}  # significance pairs by the inputs' own ids
    assert set(result["final"]["scores"]) == set(result["baseline"]["scores"])


@pytest.mark.parametrize("shape", ["json", "jsonl"])
def test_inputs_as_a_json_array_or_jsonl_with_a_metric(shape, capsys, models, files, tmp_path):
    records = [json.loads(line) for line in files.inputs.read_text().splitlines()]
    inputs = tmp_path / f"inputs.{shape}"
    inputs.write_text(json.dumps(records, indent=1) if shape == "json" else files.inputs.read_text())
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
        *files.flags,
    )
    assert code == 0, err
    assert "Final score    : 1.0000" in out


def test_a_program_factory_runs_with_its_marks_and_only_the_marked_node_changes(capsys, models, files):
    code, out, err = cli(
        capsys,
        "optimize",
        "--pipeline-file",
        files.program,
        "--inputs-file",
        files.inputs,
        "-m",
        "fake/task",
        "--metric",
        "exact",
        *files.flags,
    )
    assert code == 0, err
    assert "Final score    : 1.0000" in out and "Changed nodes  : answer" in out
    run = only_run(files.run_dir)
    assert run.load_config()["initial_candidate"]["predictors"] == {
        "answer": {"instructions": WEAK, "demos": []}
    }
    assert all(set(r.candidate["predictors"]) == {"answer"} for r in run.load_iterations())


def test_a_prompt_replaces_the_one_optimized_predictors_instructions(capsys, models, files, tmp_path):
    prompt = tmp_path / "good.md"
    prompt.write_text(GOOD)
    code, out, err = cli(
        capsys,
        "optimize",
        prompt,
        "--pipeline-file",
        files.program,
        "--inputs-file",
        files.inputs,
        "-m",
        "fake/task",
        "--metric",
        "exact",
        "--optimize",
        "answer",
        *files.flags,
    )
    assert code == 0, err
    assert "Baseline score : 1.0000" in out
    code, _, err = cli(
        capsys,
        "optimize",
        prompt,
        "--pipeline-file",
        files.program,
        "--inputs-file",
        files.inputs,
        "--optimize",
        "answer",
        "--optimize",
        "extract",
        *files.flags,
    )
    assert code == 2 and "2 are selected (extract, answer)" in err


def test_dry_run_loads_the_file_and_inputs_and_calls_no_model(capsys, models, files):
    code, out, err = cli(
        capsys,
        "optimize",
        "--pipeline-file",
        files.program,
        "--inputs-file",
        files.inputs,
        "-m",
        "fake/task",
        "--metric",
        "exact",
        "--sample-timeout",
        "5",
        "--dry-run",
        *files.flags,
    )
    assert code == 0, err
    assert f"pipeline       : {files.program} (build_program())" in out
    assert "predictors     : extract [context], answer [optimize]" in out
    assert "sample timeout : 5s (task model request timeout)" in out
    assert f"dataset        : {files.inputs} ({len(PRICES) - 1} examples)" in out
    assert "dry run: no model was called" in out
    assert models.task.fake_engine.calls == 0 and models.probed == [] and not files.run_dir.exists()


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


def test_an_interrupted_pipeline_run_resumes_and_branches_from_its_record(capsys, models, files, monkeypatch):
    class StopAtFirstIteration(reflex_dspy.progress.ConsoleTracker):
        def on_iteration(self, record):
            raise KeyboardInterrupt

    args = [
        "optimize",
        files.prompt,
        "--pipeline-file",
        files.agent,
        "--inputs-file",
        files.inputs,
        "--judge",
        "fake/judge",
        "--sample-timeout",
        "30",
        *files.flags,
    ]
    with monkeypatch.context() as patch:
        patch.setattr(reflex_dspy.progress, "ConsoleTracker", StopAtFirstIteration)
        code, _, err = cli(capsys, *args)
    assert code == 1 and "interrupted" in err
    run = only_run(files.run_dir)
    assert run.status == "interrupted"
    files.prompt.write_text("An edited prompt the resume must not use.")
    code, out, err = cli(
        capsys,
        "optimize",
        "--resume-from",
        run.run_id,
        "--run-dir",
        files.run_dir,
        "--mlflow-tracking-uri",
        f"sqlite:///{files.root / 'mlflow.db'}",
    )
    assert code == 0, err
    assert "Final score    : 1.0000" in out
    resumed = RunStore(files.run_dir).get_run(run.run_id)
    assert (
        resumed.status == "completed"
        and resumed.load_config()["metadata"]["pipeline"]["sample_timeout"] == 30
    )
    code, out, err = cli(
        capsys,
        "branch",
        run.run_id,
        "0",
        "--strategy",
        "fewshot",
        "--max-iterations",
        "1",
        "--run-dir",
        files.run_dir,
        "--mlflow-tracking-uri",
        f"sqlite:///{files.root / 'mlflow.db'}",
    )
    assert code == 0, err
    store = RunStore(files.run_dir)
    branch = store.get_run(store.list_runs()[-1].run_id)
    assert branch.load_config()["initial_candidate"]["predictors"]["prompt"]["instructions"] == WEAK
