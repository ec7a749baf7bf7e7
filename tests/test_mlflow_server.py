"""reflex_dspy against a real `mlflow server` (SQLite backend, `--serve-artifacts`), as a team runs it.

One server per session (tests/mlflow_server.py) and one optimization against it (module
fixture `served`): the Python API with a recognisable fake API key on the task LM, in DSPy's
settings and on the reasoning LM, a loopback OpenAI-compatible fake as the provider. Then:
the run's artifacts come back through the server's proxy and equal the run directory's files;
the key is in no param, tag, artifact, model file or anywhere under the server's storage; the
prompt comes back from the registry by alias; the logged model loads in a fresh process and
answers with the fake server as its LM. Autolog runs in fresh processes, in both import orders.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import dspy
import pytest
from dashboard_kit import cli_env, cli_optimize, write_task
from fake_openai_server import task_answer
from fakes import routing_examples
from mlflow_server import mlflow_server  # noqa: F401 - the session fixture

from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.lm import resolve_lm
from reflex_dspy.reflex import Reflex
from reflex_dspy.tracking.files import dumps
from reflex_dspy.tracking.schema import config_document

mlflow = pytest.importorskip("mlflow")

FAKE_KEY = "sk-reflex-fake-key-7f3a9c1e5b"  # recognisable: must never be found in anything recorded
REASONER_KEY = "sk-reflex-fake-reasoner-2d8e4b6a"
EXPERIMENT = "team-routing"
INITIAL = "Say which team should handle the message."
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def served(mlflow_server, fake_openai, tmp_path_factory):  # noqa: F811 - the imported fixture
    """One optimization recorded on the server; everything the tests read back."""
    run_dir = tmp_path_factory.mktemp("served") / "reflex"
    task = resolve_lm("openai/fake-task", api_key=FAKE_KEY, base_url=fake_openai.base_url)
    reasoner = resolve_lm("openai/fake-reasoner", api_key=REASONER_KEY, base_url=fake_openai.base_url)
    optimizer = Reflex("exact", strategy="iterative", reasoning_lm=reasoner, run_dir=run_dir,
                       tracking_uri=mlflow_server.url, experiment=EXPERIMENT, register_prompt="routing-prompt",
                       max_iterations=2, max_workers=2)
    start = time.time()
    out = io.StringIO()
    with dspy.context(lm=task), contextlib.redirect_stdout(out):  # DSPy's settings hold the keyed LM
        program = optimizer.compile(program_from_prompt(INITIAL), trainset=routing_examples(4))
    wall = time.time() - start
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("reflex.run_id") == program.run_id)
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return types.SimpleNamespace(program=program, client=client, parent=parent, kids=kids, runs=runs,
                                 run_dir=Path(program.run_dir), wall=wall, start=start, server=mlflow_server,
                                 stdout=out.getvalue())


def _download(client, run_id: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, "", str(dest)))


def test_artifacts_live_on_the_server_and_equal_the_run_directory(served, tmp_path):
    parent = served.parent
    assert parent.info.status == "FINISHED"
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:")  # the server's proxy, not a client path
    assert not (served.run_dir.parent / "mlartifacts").exists()
    assert any(served.server.artifacts.rglob("config.json"))  # written by the server, under its own root
    local = _download(served.client, parent.info.run_id, tmp_path / "parent")
    for name in ("config.json", "baseline.json", "result.json", "best_prompt.md"):
        assert (local / name).read_bytes() == (served.run_dir / name).read_bytes(), name
    assert (local / "config.json").read_text() == dumps(config_document(json.loads((local / "config.json").read_text())))
    assert len(served.kids) == len(served.program.result.iterations) >= 1
    for kid in served.kids:
        files = _download(served.client, kid.info.run_id, tmp_path / kid.info.run_id)
        number = int(kid.data.tags["reflex.iteration"])
        assert (files / "iteration.json").read_bytes() == (served.run_dir / "iterations" / f"{number:03d}.json").read_bytes()
        assert {"diff.txt", "reasoning.md", "change_summary.txt"} <= {p.name for p in files.iterdir()}
        assert kid.info.end_time > kid.info.start_time  # the iteration's real span


def test_numbers_are_the_selected_and_held_out_ones(served):
    result, metrics = served.program.result, served.parent.data.metrics
    assert metrics["final_test"] == pytest.approx(result.final.mean)
    assert metrics["baseline_test"] == pytest.approx(result.baseline.mean)
    assert metrics["improvement"] == round(result.improvement, 6)
    assert metrics["selected_iteration"] == result.selected_iteration
    if result.selected_by == "val":
        assert metrics["selected_val_score"] == pytest.approx(result.selected_score)
    assert ("p_value" in metrics) != ("reflex.p_value" in served.parent.data.tags)
    # What the run cost, as the summary counts it (a user compares runs' cost in MLflow's table)
    usage = result.usage
    assert (metrics["usage.lm_calls"], metrics["usage.eval_tokens"], metrics["usage.reasoning_calls"]) == (
        usage["lm_calls"], usage["eval_tokens"], usage["reasoning_calls"]) and usage["lm_calls"] > 0
    steps = [m.step for m in served.client.get_metric_history(served.parent.info.run_id, "score")]
    assert steps[0] == 0 and steps == sorted(steps)  # the starting prompt is step 0
    duration = (served.parent.info.end_time - served.parent.info.start_time) / 1000
    assert duration >= 0.8 * served.wall - 1  # from the real start, not from when the store opened
    assert "View run" not in served.stdout and "View experiment" not in served.stdout  # nothing from MLflow
    (dataset,) = served.parent.inputs.dataset_inputs
    assert dataset.dataset.name == "trainset" and len(dataset.dataset.digest) == 8
    tags = served.parent.data.tags
    assert "Held-out test" in tags["mlflow.note.content"] and tags["mlflow.source.type"] == "LOCAL"


def test_no_key_in_any_param_tag_artifact_model_or_server_file(served, tmp_path):
    for run in served.runs:
        texts = [*run.data.params.values(), *run.data.tags.values()]
        assert not [t for t in texts if FAKE_KEY in t or REASONER_KEY in t], run.info.run_name
    assert served.parent.data.tags["reflex.dspy_model"] == "logged"
    everything = [p for root in (served.server.root, served.run_dir) for p in root.rglob("*") if p.is_file()]
    assert any("dspy_config.pkl" in str(p) for p in everything)  # the model's files are among them
    leaked = [str(p) for p in everything if FAKE_KEY.encode() in p.read_bytes() or REASONER_KEY.encode() in p.read_bytes()]
    assert leaked == []


def test_prompt_comes_back_from_the_registry_by_alias(served):
    prompt = served.client.load_prompt("prompts:/routing-prompt@reflex-best")
    assert prompt.template == served.program.result.best_prompt
    assert served.parent.info.run_id in prompt.commit_message and prompt.tags["reflex.run_id"] == served.program.run_id
    assert served.parent.data.tags["reflex.prompt_alias"] == "reflex-best"


SERVE = """
import json, sys
import dspy, mlflow
model = mlflow.pyfunc.load_model(sys.argv[1])
dspy.configure(lm=dspy.LM("openai/fake-task", api_base=sys.argv[2], api_key="serving-side-key", cache=False))
print(json.dumps(model.predict({"input": sys.argv[3]})))
"""


def test_logged_model_serves_in_a_fresh_process(served, fake_openai):
    message = "Customer 9: my card was charged twice."
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["MLFLOW_TRACKING_URI"] = served.server.url
    model_uri = f"models:/{served.parent.outputs.model_outputs[0].model_id}"
    done = subprocess.run([sys.executable, "-c", SERVE, model_uri, fake_openai.base_url, message],
                          capture_output=True, text=True, timeout=240, env=env, cwd=HERE)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer == {"output": task_answer(served.program.result.best_prompt, message)}


def _run_autolog(order: str, url: str, base_url: str, run_dir: Path) -> tuple[dict, str]:
    experiment = f"autolog-{order}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "MLFLOW_TRACKING"))}
    done = subprocess.run([sys.executable, str(HERE / "mlflow_autolog_job.py"), order, url, experiment, base_url,
                           str(run_dir)], capture_output=True, text=True, timeout=300, env=env, cwd=HERE)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), experiment


@pytest.mark.parametrize("order", ["lazy", "eager"])
def test_autolog_sees_reflex_in_both_import_orders_and_nests_our_run(order, mlflow_server, fake_openai,  # noqa: F811
                                                                     tmp_path):
    ids, experiment = _run_autolog(order, mlflow_server.url, fake_openai.base_url, tmp_path / "reflex")
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    top = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_id for r in top] == [ids["autolog_run"]]  # one top-level run: autolog's
    ours = [r for r in runs if r.data.tags.get("reflex.run_id") == ids["reflex_run"]]
    assert len(ours) == 1 and ours[0].data.tags["mlflow.parentRunId"] == ids["autolog_run"]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == ours[0].info.run_id]
    assert kids and all("reflex.iteration" in k.data.tags for k in kids)
    assert "best_model.json" in {a.path for a in client.list_artifacts(ids["autolog_run"])}  # autolog's own record


def test_bogus_tracking_uri_is_exit_2_before_anything(tmp_path, fake_openai):
    data, prompt = write_task(tmp_path / "task")
    env = cli_env(fake_openai.base_url, tmp_path / "cache")
    argv = [sys.executable, "-m", "reflex_dspy.cli", "optimize", str(data), str(prompt), "-m", "openai/fake-task",
            "--metric", "exact", "--run-dir", str(tmp_path / "runs")]
    before = fake_openai.received
    done = subprocess.run([*argv, "--mlflow-tracking-uri", "bogus://x"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 2 and "bogus://x" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    from_env = subprocess.run(argv, capture_output=True, text=True, env={**env, "MLFLOW_TRACKING_URI": "bogus://y"},
                              timeout=120)
    assert from_env.returncode == 2 and "MLFLOW_TRACKING_URI" in from_env.stderr
    assert not (tmp_path / "runs").exists() and fake_openai.received == before  # nothing written, no model called


def test_no_mlflow_flag_records_the_run_directory_only(tmp_path, fake_openai):
    data, prompt = write_task(tmp_path / "task", n_per_label=2)
    run_dir = tmp_path / "reflex"
    env = cli_env(fake_openai.base_url, tmp_path / "cache")
    done = cli_optimize(run_dir, data, prompt, env, "--no-mlflow", "-s", "iterative", "--max-iterations", "1")
    assert "MLflow" not in done.stdout + done.stderr and not list(tmp_path.rglob("mlflow.db"))
    assert any((run_dir / "runs").glob("*/result.json"))


def test_two_runs_started_at_once_into_a_new_run_dir_both_reach_mlflow(tmp_path, fake_openai):
    data, prompt = write_task(tmp_path / "task", n_per_label=2)
    run_dir = tmp_path / "new-runs"
    env = cli_env(fake_openai.base_url, tmp_path / "cache")
    procs = [cli_optimize(run_dir, data, prompt, env, "-s", "iterative", "--max-iterations", "1", wait=False)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert not [o for o in outputs if "TrackingWarning" in o or "MLflow tracking" in o], outputs
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{run_dir.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reflex")
    parents = client.search_runs([experiment.experiment_id], "tags.`reflex.run_id` != ''")
    assert sorted(r.data.tags["reflex.run_id"] for r in parents) == ["001", "002"]
    assert all(r.info.status == "FINISHED" for r in parents)
    dataset = client.get_run(parents[0].info.run_id).inputs.dataset_inputs[0].dataset
    assert dataset.name == "data.jsonl" and dataset.source_type == "local" and data.resolve().as_uri() in dataset.source
