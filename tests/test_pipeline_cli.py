"""`reflex-dspy optimize PROMPT --pipeline-file F --inputs-file F`: pipeline_fn and DSPy program files,
inputs as JSON or JSONL, dry run, resume and branch, on fake models (faults: test_pipeline_faults.py).

`reflex_dspy.lm.resolve_lm` / `probe_lm` are replaced (as in test_cli_optimize.py); the pipeline
files are written by each test into tmp_path and run for real, worker processes included.
"""

from __future__ import annotations

import json
import re
import textwrap
import types
from pathlib import Path

import pytest
from fakes import fake_lm
from test_pipeline import GOOD, PRICES, WEAK, question, rewrite_everything, shop_respond

import reflex_dspy.lm
import reflex_dspy.progress
from reflex_dspy.cli import main
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


def fake_models(monkeypatch) -> types.SimpleNamespace:
    """resolve_lm → the fake judge, reasoner and task model by name; probe_lm records instead of calling."""
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


def pipeline_files(tmp_path) -> types.SimpleNamespace:
    """A pipeline_fn file, a DSPy program file, a prompt, a rubric, inputs and the common flags."""
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
    ns.flags = ["--run-dir", str(ns.run_dir), "--mlflow-tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    ns.flags += [
        "--reasoning-model",
        "fake/reasoner",
        "-s",
        "iterative",
        "--max-iterations",
        "2",
        "--early-stopping-patience",
        "0",
    ]
    ns.flags += ["--threshold", "1.0", "--train-split", "0.6", "--val-split", "0.4"]
    return ns


@pytest.fixture
def models(monkeypatch) -> types.SimpleNamespace:
    return fake_models(monkeypatch)


@pytest.fixture
def files(tmp_path) -> types.SimpleNamespace:
    return pipeline_files(tmp_path)


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
    config = run.load_config()
    meta = config["metadata"]
    assert meta["pipeline"] == {"file": str(files.agent.resolve()), "sample_timeout": None, "optimize": None}
    assert config["dataset_path"] == str(files.inputs.resolve()) and meta["task_models"] is None
    assert config["optimizer_config"]["_cli_models"] == ["pipeline_fn/agent_fn.py"]
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
    assert code == 130 and "interrupted" in err
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


@pytest.mark.parametrize("given", ["text", "object"])
def test_a_bare_dspy_predictor_as_the_program_takes_its_signatures_inputs(capsys, models, files, given):
    """`program = dspy.ChainOfThought("question -> answer")` has `forward(**kwargs)`: its inputs are
    the signature's (every input was refused as "not an argument of the program's forward (none)")."""
    files.program.write_text('import dspy\nprogram = dspy.ChainOfThought("question -> answer")\n')
    records = [{"input": {"question": question(item)} if given == "object" else question(item),
                "ideal": f"{price} dollars"} for item, price in PRICES.items()]
    files.inputs.write_text("".join(json.dumps(r) + "\n" for r in records))
    code, out, err = cli(capsys, "optimize", "--pipeline-file", files.program, "--inputs-file", files.inputs,
                         "-m", "fake/task", "--metric", "exact", "--dry-run", *files.flags)
    assert code == 0, err
    assert f"dataset        : {files.inputs} ({len(PRICES)} examples)" in out
    assert "predictors     : predict [optimize]" in out and models.task.fake_engine.calls == 0
