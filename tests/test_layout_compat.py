"""The run layout is aevyra-reflex 0.2.0's (issue 19): each side reads the other's runs.

- A real `reflex-dspy optimize` run (the fake OpenAI server) is read by aevyra-reflex's own
  `RunStore` and served by its own dashboard server.
- Runs written by aevyra-reflex's own `RunStore` are listed, shown, diffed, served and branched
  by ours.
- A run in the older reflex_dspy layout (tests/data/layout_v0, written by the code before the
  shared names) is read under the shared names and resumed.
- A truncated config.json makes one run `corrupt`, never all of them (issue 17, item 12).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from aevyra_kit import get_their_json, their_dashboard_over
from aevyra_reflex.run_store import RunStore as TheirStore
from conftest import ScriptedReasoner, routing_examples, routing_respond
from dashboard_kit import cli_env, cli_optimize, dashboard, get_json, request, write_task
from strategy_kit import run_strategy

from reflex_dspy.cli import main
from reflex_dspy.dashboard.api import DashboardData
from reflex_dspy.tracking.store import RunStore, created_at

LAYOUT_V0 = Path(__file__).parent / "data" / "layout_v0"


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, fake_openai):
    """One real CLI run: 2 iterative iterations on the routing task, with MLflow."""
    folder = tmp_path_factory.mktemp("cli")
    data, prompt = write_task(folder / "task")
    env = cli_env(fake_openai.base_url, folder / "cache")
    root = folder / ".reflex"
    cli_optimize(root, data, prompt, env, "-s", "iterative", "--max-iterations", "2", "--threshold", "1.0")
    return root, env, data


# -- theirs reads ours ---------------------------------------------------------------------------
def test_their_run_store_reads_a_cli_run_field_for_field(cli_run):
    root, _, data = cli_run
    ours = RunStore(root).get_run("001").summary()
    [theirs] = TheirStore(root).list_runs()
    for f in dataclasses.fields(theirs):
        if f.name not in ("parent_run_id", "parent_iteration"):  # not a branch
            assert getattr(theirs, f.name) not in (None, "", [], {}), f.name
    assert (theirs.run_id, theirs.status, theirs.strategy) == (ours.run_id, ours.status, ours.strategy)
    assert (theirs.model, theirs.dataset) == (ours.models["task"], ours.dataset) == ("openai/fake-task",
                                                                                     str(data.resolve()))
    assert (theirs.baseline_score, theirs.best_score, theirs.final_score) == (ours.baseline, ours.best, ours.final)
    assert (theirs.iterations_completed, theirs.duration_seconds) == (ours.iterations, ours.duration_seconds) != (0, 0)
    assert created_at(theirs.timestamp) == ours.created
    assert theirs.config["strategy"] == "iterative" and theirs.config["metrics"] == ["exact"]

    # The seed's snippet, on their RunStore and on ours (which also takes the runs folder).
    for store in (TheirStore(root), RunStore(root / "runs")):
        run = store.get_run("001")
        result = run.load_result()
        assert result["best_score"] == ours.best and result["duration_seconds"] > 0
        iterations = run.load_iterations()
        assert [it.iteration for it in iterations] == [1, 2] and all(it.reasoning for it in iterations)
        config = run.load_config()
        assert config["optimizer_config"]["strategy"] == "iterative"
        assert config["optimizer_config"]["metrics"] == ["exact"]
    their_iterations = TheirStore(root).get_run("001").load_iterations()
    assert all(isinstance(it.system_prompt, str) and "Rule" in it.system_prompt for it in their_iterations)
    checkpoint = TheirStore(root).get_run("001").load_checkpoint()  # every field their resume needs
    assert checkpoint.completed_iterations == 2 and checkpoint.best_prompt and checkpoint.initial_prompt


def test_an_export_from_mlflow_is_the_same_layout_their_run_store_reads(cli_run, tmp_path):
    from reflex_dspy.tracking.export import export_run

    root = cli_run[0]
    exported = export_run(RunStore(root).tracking_uri, "001", tmp_path / "exported")
    live = RunStore(root).get_run("001")
    for name in ("config.json", "checkpoint.json", "baseline.json", "result.json", "iterations/002.json"):
        assert (exported / name).read_bytes() == live.file(name).read_bytes(), name
    [theirs] = TheirStore(tmp_path / "exported").list_runs()
    [original] = TheirStore(root).list_runs()
    assert dataclasses.replace(theirs, run_dir="") == dataclasses.replace(original, run_dir="")


@pytest.fixture
def their_dashboard(cli_run):
    with their_dashboard_over(cli_run[0]) as url:
        yield url


def test_their_dashboard_serves_a_cli_run_with_prompts_deltas_and_tokens(cli_run, their_dashboard):
    root = cli_run[0]
    records = RunStore(root).get_run("001").load_iterations()
    [row] = get_their_json(f"{their_dashboard}/api/runs")
    assert (row["run_id"], row["status"], row["strategy"], row["model"]) == ("001", "completed", "iterative",
                                                                            "openai/fake-task")
    view = get_their_json(f"{their_dashboard}/api/runs/001")
    assert view["status"] == "completed" and view["checkpoint"]["completed_iterations"] == 2
    served = view["iterations"]
    assert [it["system_prompt"] for it in served] == [r.system_prompt["predict"] for r in records]
    assert [(it["eval_tokens"], it["reasoning_tokens"]) for it in served] == [
        (r.eval_tokens, r.reasoning_tokens) for r in records]
    assert all(it["eval_tokens"] > 0 and it["reasoning_tokens"] > 0 for it in served)
    # Δ: their page subtracts consecutive scores; iteration 2 of an iterative run builds on iteration 1.
    assert served[1]["score"] - served[0]["score"] == pytest.approx(records[1].delta)
    assert view["result"]["final"]["mean_score"] == RunStore(root).get_run("001").summary().final
    one = get_their_json(f"{their_dashboard}/api/runs/001/iterations/2")
    assert one["system_prompt"] == records[1].system_prompt["predict"] and one["reasoning"] == records[1].reasoning


def test_reflex_dspy_exports_run_store_and_the_run_dir_default(tmp_path, monkeypatch):
    import reflex_dspy
    from reflex_dspy.cli import build_parser
    from reflex_dspy.run_record import default_run_dir

    assert reflex_dspy.RunStore is RunStore
    assert RunStore(tmp_path / ".reflex").runs_dir == RunStore(tmp_path / ".reflex" / "runs").runs_dir
    monkeypatch.setenv("REFLEX_RUN_DIR", str(tmp_path / "elsewhere"))
    assert default_run_dir() == str(tmp_path / "elsewhere")
    for argv in (["runs"], ["optimize", "d.jsonl", "p.md"], ["dashboard"]):
        assert build_parser().parse_args(argv).run_dir == str(tmp_path / "elsewhere"), argv
    monkeypatch.delenv("REFLEX_RUN_DIR")
    assert default_run_dir() == ".reflex" and build_parser().parse_args(["runs"]).run_dir == ".reflex"


# -- ours reads theirs ---------------------------------------------------------------------------
THEIR_PROMPTS = [
    "Classify the customer message.\nAnswer with exactly one of: billing, shipping, technical.",
    "Classify the customer message.\nAnswer with exactly one of: billing, shipping, technical.\n"
    "- Rule 1: Answer with the label only, in lowercase.",
]


@pytest.fixture
def their_runs(tmp_path):
    """Two runs written by aevyra-reflex's own RunStore: a completed one and an interrupted one."""
    from aevyra_reflex.optimizer import OptimizerConfig
    from aevyra_reflex.result import EvalSnapshot, IterationRecord, OptimizationResult
    from aevyra_reflex.run_store import CheckpointState, IterationState

    data = tmp_path / "support.jsonl"  # their dataset format: OpenAI chat messages + ideal
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": e.input}], "ideal": e.output})
                            + "\n" for e in routing_examples(4)))
    config = dataclasses.asdict(OptimizerConfig(strategy="iterative", max_iterations=2,
                                                reasoning_model="openai/fake-reasoner"))
    config["_cli_models"] = ["openai/fake-task"]
    store = TheirStore(tmp_path / ".reflex")
    for complete in (True, False):
        run = store.create_run(config=config, dataset_path=str(data), prompt_path="", initial_prompt="Classify.")
        run.mark_running()
        run.save_baseline({"mean_score": 0.25, "scores_by_metric": {"exact_match": 0.25}, "total_tokens": 90,
                           "samples": []})
        records = []
        for i, prompt in enumerate(THEIR_PROMPTS, start=1):
            state = IterationState(iteration=i, system_prompt=prompt, score=0.5 + 0.25 * i, reasoning=f"why {i}",
                                   eval_tokens=100 * i, reasoning_tokens=40, change_summary=f"change {i}")
            run.save_iteration(state)
            run.save_checkpoint(CheckpointState(run_id=run.run_id, initial_prompt="Classify.", current_prompt=prompt,
                                                completed_iterations=i, best_prompt=prompt, best_score=state.score))
            records.append(IterationRecord(iteration=i, system_prompt=prompt, score=state.score,
                                           eval_tokens=state.eval_tokens, reasoning_tokens=40))
        if complete:
            result = OptimizationResult(best_prompt=THEIR_PROMPTS[1], best_score=1.0, iterations=records,
                                        converged=True, baseline=EvalSnapshot(mean_score=0.25),
                                        final=EvalSnapshot(mean_score=0.75), strategy_name="iterative")
            run.save_result({**result.to_dict(), "duration_seconds": 12.5})
            run.mark_done()
        else:
            run.running_path.write_text("999999999")  # a crashed process: its PID is gone
    return tmp_path / ".reflex", data


def test_runs_show_and_diff_read_runs_aevyra_reflex_wrote(their_runs, capsys):
    root, data = their_runs
    assert main(["runs", "--run-dir", str(root)]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line[:3] in ("001", "002")]
    assert "completed" in lines[0] and "0.250" in lines[0] and "0.750" in lines[0] and "support.jsonl" in lines[0]
    assert "interrupted" in lines[1] and "openai/fake-task" in lines[1] and "iterative" in lines[1]
    assert main(["show", "1", "--run-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "Task model     : openai/fake-task" in out and f"Dataset        : {data.resolve()}" in out
    assert "Baseline       : 0.2500" in out and "why 2" in out and "Best score     : 1.0000" in out
    assert main(["diff", "1", "1", "2", "--run-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "+- Rule 1: Answer with the label only, in lowercase." in out.splitlines()
    assert RunStore(root).find_incomplete_run() is None  # their interrupted run is branched, not resumed


def test_our_dashboard_serves_runs_aevyra_reflex_wrote(their_runs):
    root, data = their_runs
    with dashboard(root) as server:
        listed = get_json(server, "/api/runs")["runs"]
        assert {(r["id"], r["status"]) for r in listed} == {("001", "completed"), ("002", "interrupted")}
        view = get_json(server, "/api/runs/1")
        assert view["model"] == "openai/fake-task" and view["branchable"] and view["result"]["final"]["mean"] == 0.75
        # Their result.json names no selected candidate or split: the page says "best score", not
        # "selected iteration null (best on ?: 1.0000)"
        assert view["result"]["selected_iteration"] is None and view["result"]["selected_score"] == 1.0
        detail = get_json(server, "/api/runs/1/iterations/2")
        [pred] = detail["predictors"]
        assert pred["current"] == THEIR_PROMPTS[1] and pred["previous"] == THEIR_PROMPTS[0]
        assert [line["text"] for line in pred["diff"] if line["op"] == "+"] == [
            "- Rule 1: Answer with the label only, in lowercase."]


def test_branch_starts_a_run_from_their_iteration_on_their_dataset(their_runs, fake_openai, tmp_path):
    import subprocess
    import sys

    root, data = their_runs
    env = cli_env(fake_openai.base_url, tmp_path / "cache")
    argv = [sys.executable, "-m", "reflex_dspy.cli", "branch", "1", "2", "--run-dir", str(root), "-s", "iterative",
            "--max-iterations", "1"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    branch = RunStore(root).get_run("003")
    config = branch.load_config()
    assert config["initial_prompt"] == THEIR_PROMPTS[1] and config["dataset_path"] == str(data.resolve())
    assert config["branched_from"] == {"run_id": "001", "iteration": 2}
    assert config["optimizer_config"]["_cli_models"] == ["openai/fake-task"]
    assert branch.status == "completed" and [r.iteration for r in branch.load_iterations()] == [1]
    assert [(s.run_id, s.branched_from) for s in RunStore(root).list_runs()][2] == ("003", config["branched_from"])


# -- the older layout, and a corrupt run ---------------------------------------------------------
def test_a_run_in_the_older_layout_is_read_under_the_shared_names_and_resumed(tmp_path):
    root = tmp_path / "old"
    shutil.copytree(LAYOUT_V0, root)
    run = RunStore(root).get_run("001")
    assert run.status == "interrupted" and "config" in json.loads(run.file("config.json").read_text())  # old names
    config = run.load_config()
    assert config["optimizer_config"]["metrics"] == ["exact"] and config["dataset_path"] == "data.jsonl"
    assert run.load_baseline()["mean_score"] is not None and run.load_checkpoint()["completed_iterations"] == 1
    reasoner = ScriptedReasoner(["never asked: the second proposal is replayed from the journal"])
    resumed = run_strategy("iterative", reasoner, respond=routing_respond, run_dir=root, resume="001",
                           mlflow=False, metadata={"dataset_path": "data.jsonl"}, max_iterations=2, max_workers=1)
    assert resumed.run_id == "001" and run.status == "completed" and reasoner.seen == []
    assert [it.iteration for it in run.load_iterations()] == [1, 2] and resumed.result.final.mean == 1.0
    assert json.loads(run.file("result.json").read_text())["best_score"] == resumed.result.selected_score
    assert json.loads(run.file("checkpoint.json").read_text())["version"] == 2  # the v1 checkpoint, rewritten as v2


def test_a_truncated_config_json_lists_that_run_as_corrupt_and_hides_no_other(tmp_path, capsys):
    source = LAYOUT_V0 / "runs"
    for n in (1, 2, 3):
        shutil.copytree(next(source.iterdir()), tmp_path / "runs" / f"00{n}_2026-01-0{n}T10-00-00")
    broken = tmp_path / "runs" / "002_2026-01-02T10-00-00" / "config.json"
    broken.write_text(broken.read_text()[:200])
    assert main(["runs", "--run-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert [line.split()[3] for line in out.splitlines()[1:4]] == ["interrupted", "corrupt", "interrupted"]
    assert f"run 002 is corrupt: run 002: {broken} cannot be read" in out
    assert main(["show", "3", "--run-dir", str(tmp_path)]) == 0
    assert main(["show", "2", "--run-dir", str(tmp_path)]) == 2
    assert "config.json cannot be read" in capsys.readouterr().err
    assert DashboardData(tmp_path).list_view()["runs"][1]["problem"].endswith("(char 200))")
    with dashboard(tmp_path) as server:
        rows = get_json(server, "/api/runs")["runs"]
        assert [(r["id"], r["status"]) for r in rows] == [("003", "interrupted"), ("002", "corrupt"),
                                                          ("001", "interrupted")]
        assert get_json(server, "/api/runs/3")["status"] == "interrupted"
        status, _, text = request(server, "GET", "/api/runs/2")
        assert status == 404 and "config.json cannot be read" in text and str(tmp_path) not in text
