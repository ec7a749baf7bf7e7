"""The dashboard's JSON API over runs written by the engine (fake models): what each view shows,
and what it refuses: path traversal, symlinks out of the run directory, secrets, foreign
origins and hosts, and malformed branch requests (which must start nothing)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading

import dspy
import pytest
from dashboard_kit import INITIAL, compile_run, dashboard, get_json, interrupting, request, task_respond
from fakes import fake_lm
from mlflow import MlflowClient

from reflex_dspy.adapters import SystemPromptAdapter
from reflex_dspy.dashboard.api import _best_detail, line_diff, strip_phase, target
from reflex_dspy.dashboard.safety import scrub
from reflex_dspy.result import format_tokens
from reflex_dspy.tracking.store import RunStore

SECRET_KEY, SECRET_PASS = "sk-dash-SECRET-4242", "hunter2pass"


class TwoStep(dspy.Module):
    """extract (input -> summary) then route (summary -> output): two predictors to optimize."""

    def __init__(self) -> None:
        super().__init__()
        self.extract = dspy.Predict(dspy.Signature("input: str -> summary: str").with_instructions("Summarise."))
        self.route = dspy.Predict(dspy.Signature("summary: str -> output: str").with_instructions(INITIAL))

    def forward(self, input: str) -> dspy.Prediction:
        with dspy.context(adapter=SystemPromptAdapter()):
            return self.route(summary=self.extract(input=input).summary)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """001 iterative (with secrets in its config), 002 its branch, 003 auto, 004 two-step from Python,
    005 interrupted: every run written by `Reflex.compile`."""
    root = tmp_path_factory.mktemp("dash")
    compile_run(root, reasoning_api_key=SECRET_KEY, reasoning_base_url=f"http://user:{SECRET_PASS}@127.0.0.1:9/v1",
                metadata={"reasoning_base_url": f"https://me:{SECRET_PASS}@llm.example/v1", "api_key": SECRET_KEY})
    compile_run(root, branch_from=("001", 1), max_iterations=1)
    compile_run(root, strategy="auto", max_iterations=4)
    compile_run(root, program=TwoStep(), dataset=False, max_iterations=2)
    with pytest.raises(KeyboardInterrupt):
        compile_run(root, task=fake_lm(interrupting, name="fake/dash-task"), max_workers=1)
    return root


@pytest.fixture(scope="module")
def server(root):
    with dashboard(root) as srv:
        yield srv


def every_response(server) -> list[str]:
    texts = [request(server, "GET", "/api/runs")[2], request(server, "GET", "/api/jobs")[2]]
    for row in get_json(server, "/api/runs")["runs"]:
        view = get_json(server, f"/api/runs/{row['id']}")
        texts.append(json.dumps(view))
        for n in [0, *(c["iteration"] for c in view["iteration_cards"])]:
            texts.append(request(server, "GET", f"/api/runs/{row['id']}/iterations/{n}")[2])
    return texts


# -- what the views show ----------------------------------------------------------------------
def test_runs_list_is_newest_first_with_each_branch_under_its_parent(server, root):
    data = get_json(server, "/api/runs")
    assert [(r["id"], r["depth"]) for r in data["runs"]] == [("005", 0), ("004", 0), ("003", 0), ("001", 0),
                                                              ("002", 1)]
    rows = {r["id"]: r for r in data["runs"]}
    assert rows["002"]["branched_from"] == {"run_id": "001", "iteration": 1}
    assert [rows[i]["status"] for i in ("001", "005")] == ["completed", "interrupted"] and not data["running"]
    for summary in RunStore(root).list_runs():  # every column is the record's own value
        row = rows[summary.run_id]
        assert (row["strategy"], row["model"], row["reasoning_model"], row["iterations"]) == (
            summary.strategy, summary.models["task"], summary.reasoning_model, summary.iterations)
        assert (row["baseline"], row["best"], row["final"]) == (summary.baseline, summary.best, summary.final)
        assert row["target"]["text"] == "1.00" and row["dataset"] == summary.dataset
    assert rows["001"]["dataset_name"] == "data.jsonl" and rows["004"]["dataset"] is None


def test_target_column_names_a_verdict_target_and_its_source():
    def cfg(**fields):
        return {"optimizer_config": {"score_threshold": 0.85, **fields}}

    assert target(cfg())["text"] == "0.85"
    assert target(cfg(target_model="openai/gpt-4o", target_source="verdict_json"))["text"] == (
        "openai/gpt-4o @ 0.85 [json]")
    assert target(cfg(target_model="m", target_source="verdict_run"))["text"] == "m @ 0.85 [run]"
    assert target(cfg(target_model="m", target_source="manual"))["text"] == "m @ 0.85"
    verdict = cfg(target_model="openai/big", target_source="verdict_json", target_metric="exact_match")
    assert target(verdict)["text"] == "openai/big @ 0.85 on exact_match [json]"


def test_run_view_tiles_and_cards_come_from_the_record(server, root):
    view = get_json(server, "/api/runs/1")
    run = RunStore(root).get_run("001")
    checkpoint, result, records = run.load_checkpoint(), run.load_result(), run.load_iterations()
    assert view["baseline_detail"]["mean"] == run.load_baseline()["mean_score"]
    best = view["best_detail"]
    assert (best["score"], best["iteration"], best["by"]) == (checkpoint["best_score"], result["selected_iteration"],
                                                              "val")
    delta = best["score"] - checkpoint["initial_val"]
    assert best["improvement"]["text"].startswith(f"{delta:+.4f}")
    assert view["tokens"]["eval_text"] == format_tokens(result["usage"]["eval_tokens"])
    assert view["tokens"]["reasoning_text"] == format_tokens(result["usage"]["reasoning_tokens"])
    assert [c["iteration"] for c in view["iteration_cards"]] == [r.iteration for r in records] == [1, 2, 3]
    assert [c["score"] for c in view["iteration_cards"]] == [r.score for r in records]
    assert [c["best"] for c in view["iteration_cards"]] == [r.iteration == result["selected_iteration"] for r in records]
    assert view["phases"] == [{"phase": "iterative", "count": 3, "first": 1, "last": 3}]
    assert view["result"]["final"]["mean"] == result["final"]["mean_score"] and view["result"]["significance"]
    assert view["children"] == [{"id": "002", "iteration": 1}] and view["branchable"]
    assert "iterative" in view["strategies"] and view["mlflow_url"] is None


def test_the_best_tile_of_a_finished_run_is_the_run_s_pick():
    """Before: a close call settled on val + train (iteration 1 picked) showed "Best 0.3333 ... (the
    initial prompt)" from the search's best on val (every candidate tied at 0.333), beside "selected
    iteration 1" on the same page. Fields as a real multi-model CLI run recorded them."""
    rows = [{"iteration": 1, "val": 1 / 3, "val_and_train": 4 / 9}, {"iteration": 0, "val": 1 / 3, "val_and_train": 1 / 3},
            {"iteration": 2, "val": 1 / 3, "val_and_train": 5 / 9}]
    checkpoint = {"best_score": 1 / 3, "best_iteration": 0, "best_by": "val", "initial_val": 1 / 3}
    result = {"selected_iteration": 1, "selected_by": "val + train", "best_score": 4 / 9,
              "selection_note": "... the rewrite margin ...", "confirmation": {"contenders": rows, "picked": 1}}
    config = {"split_sizes": {"train": 21, "val": 3, "test": 6}}
    best = _best_detail(config, checkpoint, result, [])
    assert (best["iteration"], best["score"], best["by"], best["selected"]) == (1, 4 / 9, "val + train", True)
    assert best["label"] == "picked on val + train"  # iteration 2's 0.556 is higher: the margin decided
    assert best["initial"] == 1 / 3 and best["improvement"]["text"].startswith("+0.1111")
    assert best["name"] == "iteration 1"
    branch = _best_detail(config, checkpoint, {**result, "selected_iteration": 0,
                                               "branched_from": {"run_id": "001", "iteration": 2}}, [])
    assert branch["name"] == "the branch's start, run 001 iteration 2"
    running = _best_detail(config, checkpoint, None, [])  # while the search goes on: its best so far
    assert (running["iteration"], running["score"], running["label"], running["selected"]) == (0, 1 / 3, "best on val",
                                                                                              False)


def test_improvement_is_relative_to_the_baseline_and_guarded_at_zero():
    from reflex_dspy.dashboard.api import improvement

    assert improvement(0.8671, 0.5812)["text"] == "+0.2859 / 49.2%"
    assert improvement(0.5, 0.0)["text"] == "+0.5000" and improvement(None, 0.3) is None


def test_auto_phases_are_grouped_and_the_phase_prefix_is_stripped(server, root):
    view = get_json(server, "/api/runs/3")
    records = RunStore(root).get_run("003").load_iterations()
    first = re.match(r"\[(\w+) phase 1\]", records[0].reasoning)  # auto's first probe (allocation.py)
    assert first and view["phases"][0]["phase"] == first.group(1)
    assert sum(p["count"] for p in view["phases"]) == len(records) and len(view["phases"]) >= 2
    detail = get_json(server, "/api/runs/3/iterations/1")
    assert detail["reasoning"] == strip_phase(records[0].reasoning) and not detail["reasoning"].startswith("[")
    assert strip_phase("[pdo phase 3] Duel won") == "Duel won"


def test_iteration_view_diffs_against_the_previous_prompt(server, root):
    records = RunStore(root).get_run("001").load_iterations()
    detail = get_json(server, "/api/runs/1/iterations/2")
    [pred] = detail["predictors"]
    assert pred["current"] == records[1].system_prompt["predict"] and pred["previous"] == records[0].system_prompt[
        "predict"]
    assert pred["initial"] == INITIAL and detail["previous"] == 1 and pred["changed"]
    added = [line["text"] for line in pred["diff"] if line["op"] == "+"]
    assert added == ["- Rule 2: Do not explain your choice."]
    assert detail["change_summary"] == records[1].change_summary and detail["scores_by_metric"] == {
        "exact": records[1].score}
    first = get_json(server, "/api/runs/1/iterations/1")
    assert first["previous"] == 0 and any(line["op"] == "-" for line in first["predictors"][0]["diff"]) is False
    assert line_diff("a\nb", "a\nc") == [{"op": "=", "text": "a"}, {"op": "-", "text": "b"}, {"op": "+", "text": "c"}]


def test_a_two_predictor_program_gets_one_prompt_per_predictor(server):
    detail = get_json(server, "/api/runs/4/iterations/1")
    assert [p["name"] for p in detail["predictors"]] == ["extract", "route"]
    assert [p["changed"] for p in detail["predictors"]] == [True, False]  # round robin: extract first
    second = get_json(server, "/api/runs/4/iterations/2")
    assert second["predictor"] == "route" and second["predictors"][1]["current"] != INITIAL
    view = get_json(server, "/api/runs/4")
    assert not view["branchable"] and "branch_from=('004', ITERATION)" in view["branch_hint"]


def test_interrupted_run_shows_what_was_recorded_and_how_to_resume(server):
    view = get_json(server, "/api/runs/5")
    assert view["status"] == "interrupted" and view["result"] is None
    assert [c["iteration"] for c in view["iteration_cards"]] == [1]
    assert view["resume_hint"] == "reflex-dspy optimize --resume-from 005"


def test_a_run_in_progress_is_running_and_grows(tmp_path):
    gate, started = threading.Event(), threading.Event()

    def slow(system: str, messages: list[dict]) -> str:
        if "- rule 2" in system.lower():
            started.set()
            gate.wait(30)
        return task_respond(system, messages)

    worker = threading.Thread(target=compile_run, args=(tmp_path,),
                              kwargs={"task": fake_lm(slow, name="fake/dash-task"), "max_iterations": 2})
    worker.start()
    try:
        assert started.wait(30)
        with dashboard(tmp_path) as srv:
            listing = get_json(srv, "/api/runs")
            assert listing["running"] and listing["runs"][0]["status"] == "running"
            assert len(get_json(srv, "/api/runs/1")["iteration_cards"]) == 1
            gate.set()
            worker.join(30)
            view = get_json(srv, "/api/runs/1")
            assert view["status"] == "completed" and len(view["iteration_cards"]) == 2
    finally:
        gate.set()
        worker.join(30)


def test_empty_run_directory_lists_nothing(tmp_path):
    with dashboard(tmp_path / "nothing-yet") as srv:
        assert get_json(srv, "/api/runs")["runs"] == []
        status, headers, text = request(srv, "GET", "/")
        assert status == 200 and headers["content-type"].startswith("text/html") and "app.js" in text


def test_mlflow_link_points_at_the_runs_mlflow_run(root):
    with dashboard(root, mlflow_ui_url="http://127.0.0.1:5000/") as srv:
        url = get_json(srv, "/api/runs/1")["mlflow_url"]
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reflex")
    runs = client.search_runs([experiment.experiment_id], "tags.`reflex.run_id` = '001'")
    assert url == f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs/{runs[0].info.run_id}"


# -- what it refuses --------------------------------------------------------------------------
TRAVERSALS = [
    "/api/runs/../../../../etc/passwd", "/api/runs/%2e%2e/%2e%2e/etc/passwd", "/api/runs/..%2f..%2fetc%2fpasswd",
    "/api/runs/%2Fetc%2Fpasswd", "/api/runs//etc/passwd", "/api/runs/001/iterations/..%2f..%2fconfig.json",
    "/api/runs/001_x/iterations/1", "/static/../../../../etc/passwd", "/static/%2e%2e/server.py",
    "/static/..%2fserver.py", "/static/server.py", "/static//etc/passwd", "//etc/passwd", "/etc/passwd",
    "/api/runs/1%00", "/static/app.js/../../api.py", "/..%5c..%5cetc%5cpasswd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_gets_400_or_404_and_no_file(server, path):
    status, _, text = request(server, "GET", path)
    assert status in (400, 404), (path, status)
    assert "root:" not in text and "import " not in text and "instructions" not in text


def test_a_symlink_out_of_the_run_directory_is_never_followed(tmp_path, root):
    outside = tmp_path / "outside"
    shutil.copytree(RunStore(root).get_run("001").path, outside / "098_2030-01-01T00-00-00")
    (outside / "secret.json").write_text(json.dumps({"initial_prompt": "OUTSIDE-MARKER", "config": {}}))
    local = tmp_path / "rd"
    shutil.copytree(root, local, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts"))
    runs = local / "runs"
    (runs / "098_2030-01-01T00-00-00").symlink_to(outside / "098_2030-01-01T00-00-00")  # a whole run
    planted = runs / "099_2030-01-01T00-00-01"
    shutil.copytree(runs / sorted(p.name for p in runs.iterdir() if p.name.startswith("001"))[0], planted)
    (planted / "config.json").unlink()
    (planted / "config.json").symlink_to(outside / "secret.json")  # one file of a run
    with dashboard(local) as srv:
        ids = [r["id"] for r in get_json(srv, "/api/runs")["runs"]]
        assert "098" not in ids and "099" not in ids and "001" in ids
        for path in ("/api/runs/98", "/api/runs/99", "/api/runs/99/iterations/1", "/api/runs/98/iterations/0"):
            status, _, text = request(srv, "GET", path)
            assert status == 404 and "OUTSIDE-MARKER" not in text and "outside" not in text


def test_no_secret_reaches_any_response(server, root):
    config_file = RunStore(root).get_run("001").path / "config.json"
    assert SECRET_PASS not in config_file.read_text()  # the engine redacts URLs in Reflex(metadata=...)
    # A run recorded elsewhere (an older version, a hand-edited file) may still hold one: plant it.
    config = json.loads(config_file.read_text())
    config["metadata"]["endpoint"] = f"https://me:{SECRET_PASS}@llm.example/v1"
    config_file.write_text(json.dumps(config))
    # A custom strategy may put anything in an iteration's details, which the iteration view shows.
    planted = RunStore(root).get_run("005").path / "iterations" / "001.json"
    record = json.loads(planted.read_text())
    record["details"].update(storage=f"postgresql://u:{SECRET_PASS}@db/optuna", api_key=SECRET_KEY)
    planted.write_text(json.dumps(record))
    texts = every_response(server)
    assert "postgresql://***@db/optuna" in get_json(server, "/api/runs/5/iterations/1")["details"]["storage"]
    assert len(texts) > 10
    for text in texts:
        assert SECRET_KEY not in text and SECRET_PASS not in text
    cleaned = scrub({"api_key": SECRET_KEY, "x": {"url": f"https://me:{SECRET_PASS}@llm.example/v1?token=t"},
                     "eval_tokens": 3, "note": f"failed at http://u:{SECRET_PASS}@h/v1 (401)"})
    assert cleaned == {"x": {"url": "https://***@llm.example/v1?token=***"}, "eval_tokens": 3,
                       "note": "failed at http://***@h/v1 (401)"}


def test_no_cors_and_foreign_hosts_are_refused(server):
    status, headers, _ = request(server, "GET", "/api/runs", headers={"Origin": "http://evil.example"})
    assert status == 200 and not any(h.startswith("access-control-") for h in headers)
    status, headers, _ = request(server, "OPTIONS", "/api/runs/1/branch",
                                 headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert status == 405 and not any(h.startswith("access-control-") for h in headers)
    for host in ("evil.example", "evil.example:8128", "127.0.0.1.evil.example", ""):
        assert request(server, "GET", "/api/runs", headers={"Host": host})[0] == 403
    assert request(server, "GET", "/api/runs", headers={"Host": "localhost:1"})[0] == 200
    assert "frame-ancestors 'none'" in request(server, "GET", "/")[1]["content-security-policy"]


GOOD = {"iteration": 1, "strategy": "iterative", "max_iterations": 2}
BAD_BRANCHES = [
    ("/api/runs/1/branch", {**GOOD, "strategy": "nope"}, {}, "strategy must be one of"),
    ("/api/runs/1/branch", {**GOOD, "strategy": "tests.evil:Strategy"}, {}, "strategy must be one of"),
    ("/api/runs/1/branch", {**GOOD, "iteration": 9}, {}, "has no iteration 9"),
    ("/api/runs/1/branch", {**GOOD, "iteration": "1"}, {}, "iteration must be an integer"),
    ("/api/runs/1/branch", {**GOOD, "iteration": True}, {}, "iteration must be an integer"),
    ("/api/runs/1/branch", {**GOOD, "max_iterations": 0}, {}, "between 1 and 100"),
    ("/api/runs/1/branch", {**GOOD, "max_iterations": 101}, {}, "between 1 and 100"),
    ("/api/runs/1/branch", {**GOOD, "dataset": "/etc/passwd"}, {}, "unknown field"),
    ("/api/runs/1/branch", {"iteration": 1, "strategy": "iterative"}, {}, "missing field"),
    ("/api/runs/1/branch", [1, "iterative", 2], {}, "expected a JSON object"),
    ("/api/runs/42/branch", GOOD, {}, "no run 42"),
    ("/api/runs/..%2f001/branch", GOOD, {}, "invalid"),
    ("/api/runs/4/branch", GOOD, {}, "not started by the CLI"),
    ("/api/runs/1/branch", GOOD, {"Content-Type": "text/plain"}, "application/json"),
    ("/api/runs/1/branch", b"iteration=1", {"Content-Type": "application/x-www-form-urlencoded"}, "application/json"),
    ("/api/runs/1/branch", b"{not json", {}, "not valid JSON"),
]


@pytest.mark.parametrize(("path", "body", "headers", "message"), BAD_BRANCHES)
def test_bad_branch_requests_are_refused_and_start_nothing(server, root, path, body, headers, message):
    before = sorted(p.name for p in (root / "runs").iterdir())
    status, _, text = request(server, "POST", path, body=body, headers=headers)
    assert status == 400, text
    assert message in json.loads(text)["error"]
    assert server.jobs.jobs == [] and not (root / "dashboard").exists()
    assert sorted(p.name for p in (root / "runs").iterdir()) == before


@pytest.mark.parametrize("headers", [{"Origin": "http://evil.example"}, {"Origin": "null"},
                                     {"Sec-Fetch-Site": "cross-site"}])
def test_cross_origin_branch_requests_are_refused(server, root, headers):
    status, _, text = request(server, "POST", "/api/runs/1/branch", body=GOOD, headers=headers)
    assert status == 403 and "cross-origin" in text
    assert server.jobs.jobs == [] and not (root / "dashboard").exists()


def test_a_valid_branch_runs_the_cli_branch_command_with_an_argument_list(server, root, monkeypatch):
    started = []

    class Recorder:
        pid = 4242

        def __init__(self, argv, **kwargs):
            started.append((argv, kwargs))

        def poll(self):
            return None

    monkeypatch.setattr(subprocess, "Popen", Recorder)
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        status, _, text = request(server, "POST", "/api/runs/1/branch", body=GOOD, headers={"Origin": origin})
        assert status == 202, text
        [(argv, kwargs)] = started
        assert argv[:11] == [sys.executable, "-m", "reflex_dspy.cli", "branch", "001", "1", "--strategy", "iterative",
                             "--max-iterations", "2", "--run-dir"]
        assert argv[11] == str(root.resolve()) and "shell" not in kwargs and kwargs["start_new_session"]
        [job] = get_json(server, "/api/jobs")["jobs"]
        assert (job["parent"], job["state"], job["pid"]) == ("001", "running", 4242)
        assert job["log"].startswith("dashboard/branch-001-1-")
    finally:
        server.jobs.jobs.clear()
        server.jobs._procs.clear()
        shutil.rmtree(root / "dashboard", ignore_errors=True)


def test_the_cli_serves_until_ctrl_c(root):
    # SIGINT back to its default in the child, even where CI started us with it ignored.
    proc = subprocess.Popen([sys.executable, "-m", "reflex_dspy.cli", "dashboard", "--run-dir", str(root), "--port", "0",
                             "--no-open"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        assert line.startswith("reflex-dspy dashboard: http://127.0.0.1:")
        url = line.split()[2]
        import urllib.request

        with urllib.request.urlopen(url + "api/runs", timeout=10) as response:
            assert len(json.load(response)["runs"]) == 5
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(10) == 0 and "dashboard stopped" in proc.stderr.read()
    finally:
        proc.kill() if proc.poll() is None else None
    bad = subprocess.run([sys.executable, "-m", "reflex_dspy.cli", "dashboard", "--port", "70000", "--no-open"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("reflex-dspy: error: --port 70000")
