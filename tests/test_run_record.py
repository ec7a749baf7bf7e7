"""The run record of a real compile: the reflex layout, RunStore, branches, MLflow agreement, secrets."""

from __future__ import annotations

import json

import pytest
from conftest import ScriptedReasoner, routing_examples, routing_respond
from fakes import fake_lm
from mlflow import MlflowClient

from reflex_dspy import Reflex
from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.cli import main
from reflex_dspy.errors import UsageError
from reflex_dspy.tracking.export import export_run
from reflex_dspy.tracking.store import RunStore

INITIAL = "Say which team should handle the message."
VERBOSE = "Be verbose. Explain which of billing, shipping, technical applies."
GOOD = "Route the message. Answer with one word: billing, shipping or technical."
ITERATION_FIELDS = {"iteration", "system_prompt", "score", "val_score", "scores_by_metric", "reasoning",
                    "change_summary", "eval_tokens", "reasoning_tokens", "elapsed_seconds", "timestamp", "phase",
                    "is_full_eval"}


def optimizer_for(root, proposals=(VERBOSE, GOOD), *, task=None, reasoner=None, **kwargs) -> Reflex:
    reasoner = reasoner or fake_lm(ScriptedReasoner(list(proposals)), name="fake/reasoner")
    params = {"max_iterations": 2, "early_stopping_patience": 0, "score_threshold": 1.0, "max_workers": 2}
    params.update(kwargs)
    return Reflex("exact", strategy="iterative", task_lm=task or fake_lm(routing_respond), reasoning_lm=reasoner,
                  run_dir=root, metadata={"dataset_path": str(root / "data.jsonl")}, **params)


def compile_run(root, proposals=(VERBOSE, GOOD), **kwargs):
    return optimizer_for(root, proposals, **kwargs).compile(program_from_prompt(INITIAL), trainset=routing_examples())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("record")
    program = compile_run(root)
    return root, program, RunStore(root).get_run(program.run_id)


def test_layout_has_every_file_and_field_of_the_spec(finished):
    root, program, run = finished
    names = {p.name for p in run.path.iterdir()}
    assert {"config.json", "baseline.json", "checkpoint.json", "iterations", "best_prompt.md", "result.json",
            "journal.jsonl", "program.json"} <= names
    assert "run.pid" not in names and run.status == "completed"
    config = run.load_config()
    settings = config["optimizer_config"]  # aevyra-reflex's names (tracking/schema.py)
    assert settings["strategy"] == "iterative" and settings["metrics"] == ["exact"]
    assert config["initial_prompt"] == INITIAL and config["split_sizes"]["test"] > 0
    assert config["dataset_path"].endswith("data.jsonl") and settings["_cli_models"][0].startswith("fake/")
    assert config["timestamp"] == run.path.name.split("_", 1)[1] and config["run_id"] == run.run_id
    baseline = run.load_baseline()
    assert {"mean_score", "std_score", "n_runs", "scores_by_metric", "samples"} <= set(baseline)
    assert len(baseline["samples"]) == config["split_sizes"]["test"]
    iterations = run.load_iterations()
    assert [it.iteration for it in iterations] == [1, 2]
    for it in iterations:
        assert set(it.to_dict()) >= ITERATION_FIELDS
    assert iterations[1].system_prompt["predict"] == GOOD
    assert json.loads(run.file("iterations/002.json").read_text())["system_prompt"] == GOOD  # the text
    result = run.load_result()
    assert result["run_id"] == run.run_id == program.run_id
    assert run.best_prompt().strip() == result["best_prompt"].strip() == GOOD
    checkpoint = run.load_checkpoint()
    assert checkpoint["search_done"] and checkpoint["best_iteration"] == 2 and checkpoint["completed_iterations"] == 2
    assert checkpoint["best_prompt"] == GOOD and checkpoint["initial_prompt"] == INITIAL
    # The journal holds every paid result: all the checkpoint counted, then the final test evaluation.
    journal = run.file("journal.jsonl").read_text().splitlines()
    assert checkpoint["paid_entries"] + config["split_sizes"]["test"] == len(journal)


def test_run_store_lists_and_finds_runs(finished, tmp_path):
    root, _, run = finished
    [summary] = RunStore(root).list_runs()
    assert (summary.run_id, summary.status, summary.strategy, summary.iterations) == (run.run_id, "completed",
                                                                                       "iterative", 2)
    assert summary.final == 1.0 and summary.baseline is not None and summary.target == 1.0
    assert RunStore(root / "runs").get_run(int(run.run_id)).path == run.path  # "3", "003", the runs folder
    assert RunStore(root).find_incomplete_run() is None
    with pytest.raises(UsageError, match="no run 42"):
        RunStore(root).get_run("42")
    with pytest.raises(UsageError, match="invalid run id"):
        RunStore(root).get_run("../../etc")


def test_an_interrupted_run_is_found_for_its_dataset_and_resumed(tmp_path):
    def interrupted(system, messages):
        if "one word" in system:
            raise KeyboardInterrupt  # Ctrl-C while iteration 2's proposal is evaluated
        return routing_respond(system, messages)

    with pytest.raises(KeyboardInterrupt):
        compile_run(tmp_path, task=fake_lm(interrupted), max_workers=1)
    store = RunStore(tmp_path)
    run = store.find_incomplete_run(dataset_path=tmp_path / "data.jsonl")
    assert run is not None and run.status == "interrupted" and not run.file("run.pid").exists()
    assert store.find_incomplete_run(dataset_path=tmp_path / "other.jsonl") is None
    assert [it.iteration for it in run.load_iterations()] == [1]

    reasoner = ScriptedReasoner(["never asked: both proposals are replayed from the journal"])
    optimizer = optimizer_for(tmp_path, reasoner=fake_lm(reasoner, name="fake/reasoner"), max_workers=1)
    resumed = optimizer.compile(program_from_prompt(INITIAL), trainset=routing_examples(), resume=run.run_id)
    assert resumed.run_id == run.run_id and run.status == "completed" and reasoner.seen == []
    assert [it.iteration for it in run.load_iterations()] == [1, 2]
    assert resumed.result.final.mean == 1.0
    assert len(store.runs()) == 1


def test_resume_refuses_other_settings_or_data(finished):
    root, _, run = finished
    run.file("result.json").rename(run.file("result.hold"))  # pretend it was interrupted
    try:
        optimizer = Reflex("exact", task_lm=fake_lm(routing_respond), reasoning_lm=fake_lm(routing_respond),
                           run_dir=root, max_iterations=5, early_stopping_patience=0, score_threshold=1.0)
        with pytest.raises(UsageError, match="config field max_iterations is 5 but the run used 2"):
            optimizer.compile(program_from_prompt(INITIAL), trainset=routing_examples(), resume=run.run_id)
        with pytest.raises(UsageError, match="dataset or its splits differ"):
            optimizer.compile(program_from_prompt(INITIAL), trainset=routing_examples(5), resume=run.run_id)
    finally:
        run.file("result.hold").rename(run.file("result.json"))


def test_branch_reuses_the_parent_baseline_and_records_where_it_came_from(finished):
    root, _, parent = finished
    task = fake_lm(routing_respond)
    optimizer = Reflex("exact", strategy="iterative", task_lm=task, reasoning_lm=fake_lm(ScriptedReasoner([GOOD])),
                       run_dir=root, max_iterations=1, early_stopping_patience=0)
    branch = optimizer.compile(program_from_prompt(INITIAL), trainset=routing_examples(),
                               branch_from=(parent.run_id, 1))
    run = RunStore(root).get_run(branch.run_id)
    assert run.load_config()["branched_from"] == {"run_id": parent.run_id, "iteration": 1}
    assert run.load_baseline() == parent.load_baseline()  # copied, not re-evaluated
    assert run.load_config()["initial_prompt"] == VERBOSE  # iteration 1 of the parent
    # The branch point's val score came from the parent's journal: no test call, no val call paid.
    sent = {system for system, _ in task.fake_engine.requests}
    assert INITIAL not in sent and VERBOSE not in sent
    tags = _parent_run(root, run).data.tags
    assert (tags["reflex.branched_from_run"], tags["reflex.branched_from_iteration"]) == (parent.run_id, "1")
    with pytest.raises(UsageError, match="no iteration 9"):
        optimizer.compile(program_from_prompt(INITIAL), trainset=routing_examples(), branch_from=(parent.run_id, 9))
    other = Reflex("contains", task_lm=task, reasoning_lm=task, run_dir=root)
    with pytest.raises(UsageError, match="metric differs"):
        other.compile(program_from_prompt(INITIAL), trainset=routing_examples(), branch_from=(parent.run_id, 1))


def test_a_branch_that_keeps_its_start_names_it_as_the_branch_s_start(finished, capsys):
    """Before: "Selected: the initial prompt" beside the parent's baseline (the user's prompt), though
    the branch started from the parent's iteration 1."""
    root, _, parent = finished
    optimizer = Reflex("exact", strategy="iterative", task_lm=fake_lm(routing_respond),
                       reasoning_lm=fake_lm(ScriptedReasoner(["Be verbose about it."])), run_dir=root,
                       max_iterations=1, early_stopping_patience=0, progress=False)
    result = optimizer.compile(program_from_prompt(INITIAL), trainset=routing_examples(),
                               branch_from=(parent.run_id, 1)).result
    name = f"the branch's start, run {parent.run_id} iteration 1"
    assert result.selected_iteration == 0 and f"Selected       : {name} (best on val" in result.summary()
    assert main(["show", result.run_id, "--run-dir", str(root)]) == 0
    assert f"Selected       : {name} (best on val" in capsys.readouterr().out


def _parent_run(root, run):
    client = MlflowClient(RunStore(root).tracking_uri)
    experiment = client.get_experiment_by_name("reflex")
    [found] = client.search_runs([experiment.experiment_id],
                                 filter_string=f"tags.`reflex.run_path` = '{run.path.resolve()}'")
    return found


def test_mlflow_run_and_layout_agree_field_by_field(finished, tmp_path):
    root, _, run = finished
    client = MlflowClient(RunStore(root).tracking_uri)
    parent = _parent_run(root, run)
    assert parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_iteration = {int(c.data.tags["reflex.iteration"]): c for c in children}
    for it in run.load_iterations():
        child = by_iteration[it.iteration]
        for name in ("score", "val_score", "delta", "eval_tokens", "reasoning_tokens", "elapsed_seconds"):
            assert child.data.metrics[name] == pytest.approx(getattr(it, name)), name
        assert child.data.params["iteration"] == str(it.iteration) and child.data.params["phase"] == it.phase
    result = run.load_result()
    assert parent.data.metrics["final_score"] == result["final"]["mean_score"]
    assert parent.data.metrics["baseline_score"] == result["baseline"]["mean_score"]
    assert parent.data.params["config.max_iterations"] == "2"

    exported = export_run(RunStore(root).tracking_uri, run.run_id, tmp_path)
    assert exported.name == run.path.name
    for name in ("config.json", "baseline.json", "checkpoint.json", "result.json", "best_prompt.md", "program.json",
                 "iterations/001.json", "iterations/002.json"):
        assert (exported / name).read_text() == run.file(name).read_text(), name


SECRET = "sk-reflex-test-SECRET-0123456789"


def test_the_api_key_is_written_nowhere(tmp_path, monkeypatch, capfd):
    from reflex_dspy import lm as lm_module

    seen = {}

    def resolve(spec, api_key=None, base_url=None, **kwargs):
        seen["key"] = api_key
        reasoner = fake_lm(ScriptedReasoner([GOOD]), name="openai/reasoner")
        reasoner.fake_engine.api_key = api_key  # held by the model client, as a real provider's would
        return reasoner

    monkeypatch.setattr(lm_module, "resolve_lm", resolve)
    optimizer = Reflex("exact", strategy="iterative", task_lm=fake_lm(routing_respond), run_dir=tmp_path,
                       reasoning_model="openai/reasoner", reasoning_api_key=SECRET, max_iterations=1)
    program = optimizer.compile(program_from_prompt(INITIAL), trainset=routing_examples())
    assert seen["key"] == SECRET  # the key was really used...
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in written) and len(written) > 10
    for path in written:  # ...and is in no file: layout, journal, MLflow database and artifacts
        assert SECRET.encode() not in path.read_bytes(), path
    out, err = capfd.readouterr()
    assert SECRET not in out + err + repr(optimizer.config) + json.dumps(program.result.to_dict(), default=str)
