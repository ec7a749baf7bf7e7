"""MlflowTracker, the trajectory plot and export, against a real SQLite MLflow store.

The tracker is driven directly with hand-built records (no optimizer), so these tests pin down
what lands in MLflow: one parent, one finished child per iteration, exact artifact texts.
One database is shared by the module (creating one costs ~1.4 s); each test has its own experiment.
"""

from __future__ import annotations

import os
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import dspy
import pytest

import reflex_dspy  # noqa: F401  (sets the MLflow environment defaults before mlflow is imported)
from reflex_dspy.errors import UsageError
from reflex_dspy.result import IterationRecord, Measurement, RunResult
from reflex_dspy.stats import paired_significance
from reflex_dspy.tracking.base import Tracker, Trackers
from reflex_dspy.tracking.export import export_run
from reflex_dspy.tracking.files import dumps
from reflex_dspy.tracking.mlflow_tracker import MlflowTracker, TrackingWarning
from reflex_dspy.tracking.plot import trajectory_svg
from reflex_dspy.tracking.redact import redact_text, redact_uri
from reflex_dspy.tracking.schema import config_document
from reflex_dspy.tracking.store import RunStore

mlflow = pytest.importorskip("mlflow")

BASE_SCORES = {f"ex{i}": float(i % 2) for i in range(10)}
FINAL_SCORES = {f"ex{i}": 1.0 for i in range(10)}
PROMPTS = ["Route the message.", "Route the message.\nAnswer with one label.", "Answer with one label only."]


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def tracker(uri, tmp_path, request) -> MlflowTracker:
    return MlflowTracker(uri, experiment=request.node.name, artifact_root=tmp_path / "mlartifacts")


def client_for(tracker: MlflowTracker):
    return mlflow.MlflowClient(tracking_uri=tracker.tracking_uri)


def make_info(run_dir: Path, run_id: str = "001", **extra) -> dict:
    return {
        "run_id": run_id,
        "run_name": f"{run_id}_2026-11-22T10-00-00",
        "run_dir": str(run_dir),
        "created": "2026-11-22T10:00:00+00:00",
        "config": {
            "strategy": "reflective",
            "max_iterations": 3,
            "score_threshold": 0.9,
            "extra_kwargs": {"top_p": 0.5},
            "reasoning_base_url": None,
        },
        "strategy_params": {"minibatch": 4},
        "split_sizes": {"train": 8, "val": 2, "test": 10},
        "split_ids": {"train": [], "val": [], "test": list(BASE_SCORES)},
        "initial_candidate": {"predictors": {"predict": {"instructions": PROMPTS[0], "demos": []}}},
        "initial_prompt": PROMPTS[0],
        "metrics": ["exact"],
        "models": {"task": "fake/task", "reasoning": "fake/reasoner"},
        "budget": None,
        "warnings": [],
        "metadata": {"dataset_path": "/data/routing.jsonl"},
        "branched_from": None,
        "tracking": {"uri": "sqlite:///x.db", "experiment": "reflex"},
        **extra,
    }


def measure(split: str, scores: dict[str, float]) -> Measurement:
    mean = sum(scores.values()) / len(scores)
    samples = [{"id": "ex0", "inputs": {"question": "Where is my parcel?"}, "expected": {"answer": "shipping"},
                "output": "shipping", "score": 1.0, "error": None}]
    return Measurement(split, mean, 0.0, 1, len(scores), 0, dict(scores), {"exact": mean}, samples)


def make_record(
    i: int, score: float | None, val: float | None, prompt: str, predictor="predict"
) -> IterationRecord:
    return IterationRecord(
        iteration=i,
        phase="reflective",
        strategy="reflective",
        score=score,
        val_score=val,
        delta=0.1 * i,
        scores_by_metric={"exact": score or 0.0},
        system_prompt={"predict": prompt},
        candidate={"predictors": {"predict": {"instructions": prompt, "demos": []}}},
        fingerprint=f"fp{i}",
        reasoning=f"reasoning {i}: outputs are sentences",
        change_summary=f"change {i}",
        predictor=predictor,
        eval_tokens=100 * i,
        reasoning_tokens=10 * i,
        metric_calls=8,
        elapsed_seconds=1.5 * i,
        timestamp="2026-11-22T10:00:00+00:00",
        is_full_eval=True,
        batch_size=8,
        n_failed=0,
    )


RECORDS = [
    make_record(1, 0.5, 0.5, PROMPTS[1]),
    make_record(2, 0.75, None, PROMPTS[2], predictor=None),
    make_record(3, 0.875, 1.0, PROMPTS[2]),
]


def make_result(records: list[IterationRecord]) -> RunResult:
    baseline, final = measure("test", BASE_SCORES), measure("test", FINAL_SCORES)
    return RunResult(
        strategy="reflective",
        split_sizes={"train": 8, "val": 2, "test": 10},
        held_out=True,
        baseline=baseline,
        final=final,
        significance=paired_significance(BASE_SCORES, FINAL_SCORES),
        selected_iteration=3,
        selected_by="val",
        selected_score=1.0,
        best_prompt=PROMPTS[2],
        candidate=records[-1].candidate,
        iterations=records,
        initial_val_score=0.5,
        stop_reason="max iterations",
        usage={},
        duration_seconds=3.0,
        score_threshold=0.9,
        models={"task": "fake/task"},
    )


def full_run(tracker: Tracker, run_dir: Path, run_id: str = "001", info: dict | None = None,
             program: dspy.Module | None = None) -> dict:
    info = info or make_info(run_dir, run_id)
    tracker.on_run_start(info)
    tracker.on_baseline(measure("test", BASE_SCORES))
    tracker.on_checkpoint({"iteration": 0, "best": None})
    for record in RECORDS:
        tracker.on_iteration(record)
        tracker.on_checkpoint(
            {"iteration": record.iteration, "best": {"prompt": record.system_prompt["predict"]}}
        )
    tracker.on_program(program or dspy.Predict("question -> answer", instructions=PROMPTS[2]))
    tracker.on_result(make_result(RECORDS))
    return info


def artifact(client, run_id: str, path: str, tmp_path: Path) -> str:
    dest = tmp_path / "download" / run_id
    dest.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, path, str(dest))).read_text(encoding="utf-8")


def child_runs(client, tracker: MlflowTracker):
    return client.search_runs([tracker._experiment_id], f"tags.`mlflow.parentRunId` = '{tracker.run_id}'")


def test_full_run_logs_parent_and_one_child_per_iteration(tracker, tmp_path):
    info = full_run(tracker, tmp_path / "runs" / "001_2026-11-22T10-00-00")
    assert tracker.failed is None
    client = client_for(tracker)
    parent = client.get_run(tracker.run_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "reflex 001 reflective"
    tags, params, metrics = parent.data.tags, parent.data.params, parent.data.metrics
    assert tags["reflex.run_id"] == "001" and tags["reflex.run_path"] == info["run_dir"]
    assert tags["reflex.dataset"] == "/data/routing.jsonl" and "reflex.branched_from_run" not in tags
    assert tags["reflex.significant"] == "false" and tags["reflex.stop_reason"] == "max iterations"
    assert tags["reflex.dspy_model"] == "logged", tags["reflex.dspy_model"]
    assert params["config.max_iterations"] == "3" and params["config.extra_kwargs.top_p"] == "0.5"
    assert (
        params["split.test"] == "10" and params["metrics"] == "exact" and params["model.task"] == "fake/task"
    )
    assert "config.reasoning_base_url" not in params
    assert (
        metrics["baseline_score"] == 0.5 and metrics["final_score"] == 1.0 and metrics["improvement"] == 0.5
    )
    assert metrics["selected_iteration"] == 3 and metrics["p_value"] == pytest.approx(0.0625)
    history = client.get_metric_history(tracker.run_id, "score")
    # step 0 is the starting prompt (iteration 1's score minus its delta, the same batch)
    assert [(m.step, m.value) for m in history] == [(0, 0.4), (1, 0.5), (2, 0.75), (3, 0.875)]
    assert [m.step for m in client.get_metric_history(tracker.run_id, "val_score")] == [1, 3]
    assert metrics["selected_val_score"] == 1.0 and metrics["selected_train_score"] == 0.875
    assert metrics["baseline_test"] == 0.5 and metrics["final_test"] == 1.0
    assert tags["mlflow.note.content"].startswith("reflex run 001") and "0.5000 -> 1.0000" in tags["mlflow.note.content"]
    (dataset,) = parent.inputs.dataset_inputs  # /data/routing.jsonl does not exist: the examples given
    assert dataset.dataset.name == "trainset" and dataset.dataset.source_type == "code"
    assert artifact(client, tracker.run_id, "config.json", tmp_path) == dumps(config_document(info))
    assert artifact(client, tracker.run_id, "best_prompt.md", tmp_path) == PROMPTS[2] + "\n"
    assert '"completed_iterations": 3' in artifact(client, tracker.run_id, "checkpoint.json", tmp_path)
    assert "answer" in artifact(client, tracker.run_id, "program.json", tmp_path)
    ET.fromstring(artifact(client, tracker.run_id, "trajectory.svg", tmp_path))
    assert str(tmp_path / "mlartifacts") in parent.info.artifact_uri

    kids = sorted(child_runs(client, tracker), key=lambda r: int(r.data.tags["reflex.iteration"]))
    assert len(kids) == 3
    for kid, record in zip(kids, RECORDS, strict=True):
        assert kid.info.status == "FINISHED" and kid.info.run_name == f"iteration {record.iteration:03d}"
        assert (
            kid.data.params["iteration"] == str(record.iteration) and kid.data.params["phase"] == "reflective"
        )
        assert kid.data.params.get("predictor") == record.predictor
        for key in (
            "score",
            "val_score",
            "delta",
            "eval_tokens",
            "reasoning_tokens",
            "elapsed_seconds",
            "metric_calls",
        ):
            value = getattr(record, key)
            assert kid.data.metrics.get(key) == (None if value is None else pytest.approx(value)), key
        run_id = kid.info.run_id
        assert artifact(client, run_id, "iteration.json", tmp_path) == dumps(record.to_dict())
        assert artifact(client, run_id, "prompts/predict.md", tmp_path) == record.system_prompt["predict"]
        assert artifact(client, run_id, "reasoning.md", tmp_path) == record.reasoning
        assert artifact(client, run_id, "change_summary.txt", tmp_path) == record.change_summary
    first_diff = artifact(client, kids[0].info.run_id, "diff.txt", tmp_path)
    assert "--- a/predict" in first_diff and "+Answer with one label." in first_diff
    assert artifact(client, kids[2].info.run_id, "diff.txt", tmp_path) == ""  # same prompt as iteration 2
    assert all(k.info.end_time >= k.info.start_time for k in kids)


def test_resume_replaces_partial_children_without_duplicates(tracker, tmp_path):
    run_dir = tmp_path / "runs" / "002_2026-11-22T10-00-00"
    info = make_info(run_dir, "002")
    tracker.on_run_start(info)
    tracker.on_baseline(measure("test", BASE_SCORES))
    tracker.on_iteration(RECORDS[0])
    tracker.on_iteration(RECORDS[1])
    client = client_for(tracker)
    # The process died while logging iteration 3 (a partial child), after a stray duplicate of 2.
    client.create_run(
        tracker._experiment_id, tags={"mlflow.parentRunId": tracker.run_id, "reflex.iteration": "3"}
    )
    client.create_run(
        tracker._experiment_id, tags={"mlflow.parentRunId": tracker.run_id, "reflex.iteration": "2"}
    )
    client.set_terminated(tracker.run_id, "KILLED")
    parent_id = tracker.run_id

    resumed = MlflowTracker(tracker.tracking_uri, tracker.experiment)
    resumed.on_resume(info, measure("test", BASE_SCORES), RECORDS)
    assert resumed.run_id == parent_id and client.get_run(parent_id).info.status == "RUNNING"
    kids = child_runs(client, resumed)
    assert sorted(int(r.data.tags["reflex.iteration"]) for r in kids) == [1, 2, 3]
    assert all(r.info.status == "FINISHED" for r in kids)
    assert len(client.get_metric_history(parent_id, "baseline_score")) == 1
    assert [m.step for m in client.get_metric_history(parent_id, "score")] == [0, 1, 2, 3]
    resumed.on_iteration(make_record(4, 0.9, 1.0, PROMPTS[2]))
    resumed.on_result(make_result([*RECORDS, make_record(4, 0.9, 1.0, PROMPTS[2])]))
    assert len(child_runs(client, resumed)) == 4 and client.get_run(parent_id).info.status == "FINISHED"
    assert resumed.failed is None

    # A resume whose parent never reached MLflow creates it and logs every recorded iteration.
    other = MlflowTracker(tracker.tracking_uri, tracker.experiment)
    other.on_resume(make_info(tmp_path / "runs" / "003_x", "003"), None, RECORDS[:2])
    assert other.run_id != parent_id and len(child_runs(client, other)) == 2


@pytest.mark.parametrize(
    ("error", "status"), [(KeyboardInterrupt(), "KILLED"), (RuntimeError("boom\nmore"), "FAILED")]
)
def test_on_error_terminates_the_run(tracker, tmp_path, error, status):
    tracker.on_run_start(make_info(tmp_path / "runs" / "004_2026-11-22T10-00-00", "004"))
    tracker.on_error(error)
    run = client_for(tracker).get_run(tracker.run_id)
    assert run.info.status == status
    assert run.data.tags["reflex.error"] == (
        "KeyboardInterrupt" if status == "KILLED" else "RuntimeError: boom"
    )


def test_unreachable_server_warns_once_and_never_raises(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    tracker = MlflowTracker("http://alice:hunter2@127.0.0.1:9", artifact_root=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.on_run_start(make_info(tmp_path / "runs" / "005_x", "005"))
        tracker.on_baseline(measure("test", BASE_SCORES))
        tracker.on_iteration(RECORDS[0])
        tracker.on_result(make_result(RECORDS))
        tracker.on_error(RuntimeError("late"))
    ours = [w for w in caught if issubclass(w.category, TrackingWarning)]
    assert len(ours) == 1 and tracker.failed
    message = str(ours[0].message)
    assert (
        "http://***@127.0.0.1:9" in message and "hunter2" not in message and "hunter2" not in tracker.failed
    )
    assert "hunter2" not in repr(tracker)


def test_credentials_are_redacted_everywhere(tracker, tmp_path):
    secret_url = "https://bob:s3cret@llm.example.com/v1?api_key=k3y&model=x"
    info = make_info(tmp_path / "runs" / "006_x", "006")
    info["config"]["reasoning_base_url"] = secret_url
    tracker.on_run_start(info)
    tracker.on_error(RuntimeError(f"cannot reach {secret_url}"))
    client = client_for(tracker)
    run = client.get_run(tracker.run_id)
    stored = [
        *run.data.params.values(),
        *run.data.tags.values(),
        artifact(client, tracker.run_id, "config.json", tmp_path),
    ]
    assert not any("s3cret" in text for text in stored)
    assert run.data.params["config.reasoning_base_url"].startswith("https://***@llm.example.com/v1")
    assert redact_uri(secret_url) == "https://***@llm.example.com/v1?api_key=***&model=x"
    assert redact_uri("sqlite:////tmp/a@b/mlflow.db") == "sqlite:////tmp/a@b/mlflow.db"
    assert redact_text("see http://u:p@h:5000/x and https://h") == "see http://***@h:5000/x and https://h"


FAKE_KEY = "sk-reflex-test-0123456789abcdef"


def test_program_is_logged_as_a_model_without_any_key(tracker, tmp_path, monkeypatch):
    """The LM (and its key) configured in DSPy's settings and on a predictor never reach the model;
    the model is linked to the final metrics; the user's MLflow state is left as it was."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////nowhere/users-own.db")  # must survive the hook
    before = mlflow.get_tracking_uri()
    program = dspy.Predict("question -> answer", instructions=PROMPTS[2])
    program.lm = dspy.LM("openai/fake-task", api_key=FAKE_KEY)
    program.result = "run bookkeeping, not part of the model"
    with dspy.context(lm=dspy.LM("openai/fake-task", api_key=FAKE_KEY)):
        full_run(tracker, tmp_path / "runs" / "007_x", "007", program=program)
    client = client_for(tracker)
    run = client.get_run(tracker.run_id)
    assert run.data.tags["reflex.dspy_model"] == "logged" and tracker.model_id
    assert program.lm is not None and program.result  # the caller's program is untouched
    model = client.get_logged_model(tracker.model_id)
    assert model.source_run_id == tracker.run_id and model.status.to_proto() == 2  # READY
    linked = {m.key: m.value for m in model.metrics or []}
    assert linked["final_test"] == 1.0 and linked["selected_val_score"] == 1.0 and linked["score"] == 0.875
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location, dst_path=str(tmp_path)))
    files = [p for p in local.rglob("*") if p.is_file()]
    assert files and not [p for p in files if FAKE_KEY.encode() in p.read_bytes()]
    assert "reflex-dspy==" in (local / "requirements.txt").read_text()
    mlmodel = (local / "MLmodel").read_text()
    assert "signature:" in mlmodel and "question" in mlmodel and (local / "data" / "model").is_dir()
    assert mlflow.active_run() is None and mlflow.get_tracking_uri() == before
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:////nowhere/users-own.db"


def test_an_lm_in_dspy_settings_that_cannot_be_pickled_does_not_stop_the_model(tracker, tmp_path):
    """MLflow's DSPy flavor pickles all of `dspy.settings`; a user's `dspy.configure(lm=...)` with a
    custom engine holding a lock made it fail ("cannot pickle '_thread.lock'") and the model was lost."""
    import threading

    from fakes import fake_lm

    lm = fake_lm(lambda system, messages: "answer")
    lm.fake_engine.guard = threading.Lock()  # FakeEngine has one already; this keeps the test honest if it goes
    program = dspy.Predict("question -> answer", instructions=PROMPTS[2])
    with dspy.context(lm=lm):
        full_run(tracker, tmp_path / "runs" / "008_x", "008", program=program)
        assert dspy.settings.lm is lm  # the settings are the user's again afterwards
    tags = client_for(tracker).get_run(tracker.run_id).data.tags
    assert tags["reflex.dspy_model"] == "logged", tags["reflex.dspy_model"]


def test_without_mlflow_model_flavors_the_program_is_not_logged_and_nothing_warns(tracker, tmp_path, monkeypatch,
                                                                                 caplog):
    """mlflow-skinny (the README's first line) has no model flavors: `mlflow.models` lacks
    ModelSignature. That is how the package is installed, not a failure: the tag says why, and no
    warning reaches the user's terminal."""
    import reflex_dspy.tracking.mlflow_model as mlflow_model

    def skinny(*args, **kwargs):
        raise ImportError("cannot import name 'ModelSignature' from 'mlflow.models'")

    monkeypatch.setattr(mlflow_model, "log_program_model", skinny)
    with caplog.at_level("WARNING"):
        full_run(tracker, tmp_path / "runs" / "008_x", "008", program=dspy.Predict("question -> answer"))
    tag = client_for(tracker).get_run(tracker.run_id).data.tags["reflex.dspy_model"]
    assert tag.startswith("unavailable: ImportError") and "ModelSignature" in tag
    assert not [r for r in caplog.records if "MLflow model" in r.getMessage()]


def test_export_round_trip_equals_what_was_logged(tracker, tmp_path):
    info = full_run(tracker, tmp_path / "live" / "runs" / "008_2026-11-22T10-00-00", "008")
    client = client_for(tracker)
    # A partial child of iteration 2 must not shadow the finished one.
    client.create_run(
        tracker._experiment_id, tags={"mlflow.parentRunId": tracker.run_id, "reflex.iteration": "2"}
    )
    path = export_run(tracker.tracking_uri, "8", tmp_path / "export", experiment=tracker.experiment)
    assert path == tmp_path / "export" / "runs" / "008_2026-11-22T10-00-00"
    assert (path / "config.json").read_text(encoding="utf-8") == dumps(config_document(info))
    assert (path / "baseline.json").read_text(encoding="utf-8") == dumps(
        measure("test", BASE_SCORES).to_dict()
    )
    assert (path / "result.json").read_text(encoding="utf-8") == dumps(make_result(RECORDS).to_dict())
    assert (path / "best_prompt.md").read_text(encoding="utf-8") == PROMPTS[2] + "\n"
    assert (path / "program.json").exists() and (path / "checkpoint.json").exists()
    for record in RECORDS:
        text = (path / "iterations" / f"{record.iteration:03d}.json").read_text(encoding="utf-8")
        assert text == dumps(record.to_dict())
    run = RunStore(tmp_path / "export").get_run("8")
    assert run.status == "completed" and run.load_iterations() == RECORDS

    with pytest.raises(UsageError, match="already exists"):
        export_run(tracker.tracking_uri, "008", tmp_path / "export", experiment=tracker.experiment)
    again = export_run(
        tracker.tracking_uri, tracker.run_id, tmp_path / "by-id" / "runs", experiment=tracker.experiment
    )
    assert again == tmp_path / "by-id" / "runs" / path.name
    with pytest.raises(UsageError, match="no reflex run"):
        export_run(tracker.tracking_uri, "999", tmp_path / "none", experiment=tracker.experiment)
    with pytest.raises(UsageError, match="no reflex run"):
        export_run(tracker.tracking_uri, "8", tmp_path / "none", experiment="no-such-experiment")


def test_trajectory_svg_is_valid_xml():
    svg = trajectory_svg(RECORDS, baseline=0.5, final=0.9, threshold=0.85)
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert svg.count("<polyline") == 2  # train and val (val skips the unmeasured iteration 2)
    assert "final (test)" in svg and "threshold" in svg and "baseline (test)" in svg
    as_dicts = trajectory_svg([r.to_dict() for r in RECORDS])
    ET.fromstring(as_dicts)
    ET.fromstring(trajectory_svg([]))
    odd = trajectory_svg(
        [
            {"iteration": i, "score": s, "val_score": None}
            for i, s in enumerate([float("nan"), 2, -1, None, 0.5])
        ]
    )
    ET.fromstring(odd)


def test_export_equals_the_live_layout(tmp_path, uri):
    """The live layout (LayoutTracker) and its export from MLflow are the same bytes."""
    layout = pytest.importorskip("reflex_dspy.tracking.layout")
    run = RunStore(tmp_path / "live").create_run()
    mlflow_tracker = MlflowTracker(uri, experiment="layout-equality")
    trackers = Trackers([layout.LayoutTracker(run), mlflow_tracker])
    info = make_info(run.path, run.run_id)
    info["run_name"] = run.path.name
    full_run(trackers, run.path, run.run_id, info=info)
    exported = export_run(uri, run.run_id, tmp_path / "exported", experiment="layout-equality")
    live = {p.relative_to(run.path): p.read_bytes() for p in run.path.rglob("*") if p.is_file()}
    copy = {p.relative_to(exported): p.read_bytes() for p in exported.rglob("*") if p.is_file()}
    assert {k: v for k, v in live.items() if k.name not in ("journal.jsonl", "run.pid", "trials.jsonl")} == copy


def test_fewshot_iteration_shows_its_demos_in_the_diff_and_as_markdown(tracker, tmp_path):
    demo = {"question": "Where is my parcel?", "answer": "shipping"}
    record = make_record(1, 0.5, 0.5, PROMPTS[0])
    record.candidate = {"predictors": {"predict": {"instructions": PROMPTS[0], "demos": [demo]}}}
    tracker.on_run_start(make_info(tmp_path / "runs" / "010_x", "010"))
    tracker.on_iteration(record)
    client = client_for(tracker)
    (kid,) = child_runs(client, tracker)
    diff = artifact(client, kid.info.run_id, "diff.txt", tmp_path)
    assert "+question: Where is my parcel?" in diff and "+answer: shipping" in diff  # same instructions, new demo
    demos = artifact(client, kid.info.run_id, "demos/predict.md", tmp_path)
    assert demos == "## Demo 1\n\n**question**: Where is my parcel?\n**answer**: shipping\n"


def test_registry_alias_moves_only_for_a_promoted_version(tracker, tmp_path):
    def run(run_id: str, promoted: bool) -> None:
        info = make_info(tmp_path / "runs" / f"{run_id}_x", run_id)
        info["config"]["register_prompt"] = f"routing-{tracker.experiment[-20:]}"
        tracker.run_id, tracker._records = None, {}
        tracker.on_run_start(info)
        tracker.on_baseline(measure("test", BASE_SCORES))
        result = make_result(RECORDS)
        result.promotion, result.run_id = {"promoted": promoted}, run_id
        tracker.on_result(result)

    client = client_for(tracker)
    run("011", promoted=True)
    name = f"routing-{tracker.experiment[-20:]}"
    first = client.load_prompt(f"prompts:/{name}@reflex-best")
    assert first.version == 1 and first.template == PROMPTS[2] and "run 011" in first.commit_message
    assert client.get_run(tracker.run_id).data.tags["reflex.prompt_alias"] == "reflex-best"
    run("012", promoted=False)
    assert client.load_prompt(f"prompts:/{name}/2").tags["reflex.promoted"] == "false"
    assert client.load_prompt(f"prompts:/{name}@reflex-best").version == 1  # the alias stayed
    assert client.get_run(tracker.run_id).data.tags["reflex.prompt_alias"].startswith("not moved")
