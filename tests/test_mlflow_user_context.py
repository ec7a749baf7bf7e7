"""A run goes where the user's MLflow runs go: their store, their experiment, under their open run.

In-process, with fake LMs and a SQLite store in tmp_path. MLflow's process-wide state (tracking
URI, active experiment, their environment variables) is restored after each test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ScriptedReasoner, user_mlflow_state
from fakes import LABELS, fake_lm

from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.errors import UsageError
from reflex_dspy.reflex import Reflex
from reflex_dspy.tracking.mlflow_target import BUILTIN_SCHEMES, check_tracking_uri, resolve_uri

mlflow = pytest.importorskip("mlflow")


@pytest.fixture
def user_mlflow(monkeypatch, tmp_path):
    """Set MLflow's in-process state like a user's script would; restored afterwards."""
    yield from user_mlflow_state(monkeypatch, tmp_path, "mine", "users.db")


def _optimizer(task_lm, run_dir: Path, **kwargs) -> Reflex:
    labelled = f"Answer with one word: {', '.join(LABELS)}."
    reasoner = fake_lm(ScriptedReasoner([labelled]), name="fake/reasoner")
    return Reflex("exact", strategy="iterative", task_lm=task_lm, reasoning_lm=reasoner, run_dir=run_dir,
                  max_iterations=1, max_workers=2, **kwargs)


def test_run_nests_under_the_users_active_run_in_their_experiment(user_mlflow, task_lm, examples, tmp_path):
    with mlflow.start_run(run_name="my experiment run") as outer:
        program = _optimizer(task_lm, tmp_path / "reflex").compile(program_from_prompt("Route it."), trainset=examples)
    client = mlflow.MlflowClient(tracking_uri=user_mlflow)
    experiment = client.get_experiment_by_name("mine")
    ours = client.search_runs([experiment.experiment_id], f"tags.`reflex.run_id` = '{program.run_id}'")
    assert len(ours) == 1 and ours[0].data.tags["mlflow.parentRunId"] == outer.info.run_id
    assert ours[0].data.tags["reflex.dspy_model"] == "logged"  # logged in the user's experiment too
    assert ours[0].info.status == "FINISHED" and client.get_run(outer.info.run_id).info.status == "FINISHED"
    assert not (tmp_path / "reflex" / "mlflow.db").exists()  # the user's store, not ours
    config = json.loads((Path(program.run_dir) / "config.json").read_text())
    assert config["tracking"]["experiment"] == "mine"
    assert [r.info.run_id for r in mlflow.search_runs(output_format="list") if
            "mlflow.parentRunId" not in r.data.tags] == [outer.info.run_id]


def test_set_experiment_alone_gives_a_top_level_run_there(user_mlflow, task_lm, examples, tmp_path):
    program = _optimizer(task_lm, tmp_path / "reflex").compile(program_from_prompt("Route it."), trainset=examples)
    client = mlflow.MlflowClient(tracking_uri=user_mlflow)
    run = client.search_runs([client.get_experiment_by_name("mine").experiment_id],
                             f"tags.`reflex.run_id` = '{program.run_id}'")[0]
    assert "mlflow.parentRunId" not in run.data.tags and run.data.tags["reflex.dspy_model"] == "logged"
    assert mlflow.active_run() is None


def test_explicit_arguments_win_over_the_users_choices(user_mlflow, task_lm, examples, tmp_path):
    uri = f"sqlite:///{tmp_path / 'explicit.db'}"
    with mlflow.start_run():
        program = _optimizer(task_lm, tmp_path / "reflex", tracking_uri=uri, experiment="elsewhere").compile(
            program_from_prompt("Route it."), trainset=examples)
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("elsewhere").experiment_id],
                              f"tags.`reflex.run_id` = '{program.run_id}'")
    assert len(runs) == 1 and "mlflow.parentRunId" not in runs[0].data.tags


def test_get_params_is_json_safe_and_secret_free(task_lm):
    task_lm.kwargs["api_key"] = "sk-get-params-secret-123"
    optimizer = _optimizer(task_lm, "runs", tracking_uri="https://bob:s3cret@mlflow.example.com")
    params = optimizer.get_params()
    text = json.dumps(params)  # raises on anything not JSON
    assert "sk-get-params-secret" not in text and "s3cret" not in text
    assert params["strategy"] == "iterative" and params["task_lm"]["task"] == task_lm.model


@pytest.mark.parametrize("uri", ["bogus://x", "nosuchscheme:/db", "sqlite:////no/such/dir/x.db", " "])
def test_unusable_tracking_uris_are_refused(uri, tmp_path, task_lm, examples):
    with pytest.raises(UsageError):
        check_tracking_uri(uri)
    with pytest.raises(UsageError):
        resolve_uri(uri, f"sqlite:///{tmp_path}/mlflow.db")
    with pytest.raises(UsageError):  # the Python API: before anything is written
        _optimizer(task_lm, tmp_path / "reflex", tracking_uri=uri).compile(program_from_prompt("x"), trainset=examples)
    assert not (tmp_path / "reflex").exists()


def test_our_scheme_list_is_mlflows():
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    assert set(_tracking_store_registry._registry) == set(BUILTIN_SCHEMES)
    for good in ("http://127.0.0.1:5000", "sqlite:///x.db", "postgresql+psycopg2://u@h/db", "databricks", "/tmp/x"):
        check_tracking_uri(good)


def test_the_cli_experiment_defaults_to_mlflows_env_var(monkeypatch):
    """MLflow's convention: `$MLFLOW_EXPERIMENT_NAME` names the experiment unless a flag does."""
    from reflex_dspy.cli import build_parser

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "team-exp")
    args = build_parser().parse_args(["optimize", "d.jsonl", "p.md"])
    assert args.mlflow_experiment == "team-exp"
    args = build_parser().parse_args(["optimize", "d.jsonl", "p.md", "--mlflow-experiment", "mine"])
    assert args.mlflow_experiment == "mine"
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME")
    assert build_parser().parse_args(["optimize", "d.jsonl", "p.md"]).mlflow_experiment == "reflex"


def test_an_experiment_id_exported_for_another_store_is_not_a_choice_for_ours(monkeypatch, tmp_path):
    """mlflow.set_experiment exports $MLFLOW_EXPERIMENT_ID to child processes; in another store that
    id names nothing, and the run goes to `reflex` instead of failing to record."""
    from reflex_dspy.tracking.mlflow_target import resolve_target

    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "424242")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    target = resolve_target(f"sqlite:///{tmp_path / 'fresh.db'}", None)
    assert target.experiment == "reflex"


def test_runs_in_threads_take_turns_with_mlflows_process_wide_tracking_uri(user_mlflow, tmp_path):
    """Before: run b pointed the fluent URI at its store while run a was using it, and a, leaving
    first, put the user's URI back under b, whose model then went to the user's store."""
    import threading

    from reflex_dspy.tracking.mlflow_store import fluent_store

    a_in, b_in, a_out, seen = threading.Event(), threading.Event(), threading.Event(), {}

    def a() -> None:
        with fluent_store(f"sqlite:///{tmp_path / 'a'}.db"):
            a_in.set()
            b_in.wait(0.5)  # before: b came in here; now it waits for a to leave
        a_out.set()

    def b() -> None:
        a_in.wait(10)
        with fluent_store(f"sqlite:///{tmp_path / 'b'}.db"):
            b_in.set()
            a_out.wait(10)
            seen["b"] = mlflow.get_tracking_uri()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"b": f"sqlite:///{tmp_path / 'b'}.db"}
    assert mlflow.get_tracking_uri() == user_mlflow  # the user's again


def test_two_runs_in_threads_on_one_store_each_log_their_model(task_lm, examples, tmp_path):
    import threading

    uri, results = f"sqlite:///{tmp_path / 'shared.db'}", {}

    def run(strategy: str) -> None:
        reasoner = fake_lm(ScriptedReasoner([f"Answer with one word: {', '.join(LABELS)}."]), name="fake/reasoner")
        opt = Reflex("exact", strategy=strategy, task_lm=task_lm, reasoning_lm=reasoner, run_dir=tmp_path / "reflex",
                     max_iterations=1, max_workers=2, tracking_uri=uri, progress=False)
        results[strategy] = opt.compile(program_from_prompt("Route it."), trainset=examples).result

    threads = [threading.Thread(target=run, args=(s,)) for s in ("iterative", "structural")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client = mlflow.MlflowClient(tracking_uri=uri)
    parents = [r for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
               if "mlflow.parentRunId" not in r.data.tags]
    assert sorted(results) == ["iterative", "structural"] and len(parents) == 2
    assert [r.data.tags.get("reflex.dspy_model") for r in parents] == ["logged", "logged"]
    for parent in parents:  # in this store (before, one could land in the default store instead)
        model = client.get_logged_model(parent.data.tags["reflex.model_uri"].removeprefix("models:/"))
        assert model.source_run_id == parent.info.run_id and parent.info.status == "FINISHED"
    # Both inserted the one dataset: before, the slower hit MLflow's unique key and its record stopped there.
    first, second = ([d.dataset.digest for d in p.inputs.dataset_inputs] for p in parents)
    assert first == second and len(first) == 1
