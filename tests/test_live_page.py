"""The live page's API (`GET /api/runs/<id>/live`, `/trials/<n>`; dashboard/live.py) over runs made
by the real engine: a slow CLI run against `fake_openai_server` watched while it works, stopped
with SIGSTOP (the page says it has not heard from the runner), resumed with SIGCONT, then
killed (interrupted, with its resume command); a pipeline run's trial traces; created and
failed runs.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import routing_examples
from dashboard_kit import (
    INITIAL,
    cli_env,
    cli_optimize,
    dashboard,
    get_json,
    reasoner_respond,
    request,
    write_task,
)
from fake_openai_server import FakeOpenAI
from fakes import fake_lm
from test_pipeline import ShopAgent, compile_shop

from reflex_dspy import Reflex
from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.cli import main
from reflex_dspy.run_status import HEARTBEAT
from reflex_dspy.tracking.store import RunStore

FLAGS = ("-s", "iterative", "--max-iterations", "3", "--threshold", "1.0", "--val-split", "0", "--max-workers", "2")


def _until(check, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def slow_run(tmp_path):
    """A real CLI run against a fake server that answers in 0.1 s, beating every 0.3 s."""
    data, prompt = write_task(tmp_path / "task", n_per_label=6)
    with FakeOpenAI(delay=0.1) as fake:
        env = {**cli_env(fake.base_url, tmp_path / "cache"), "REFLEX_HEARTBEAT_SECONDS": "0.3"}
        proc = cli_optimize(tmp_path / "rd", data, prompt, env, *FLAGS, wait=False)
        try:
            yield tmp_path / "rd", proc
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
            proc.wait(10)


def test_trials_and_candidates_of_a_live_run_then_stale_then_fresh_then_interrupted(slow_run, capsys):
    root, proc = slow_run
    _until(lambda: RunStore(root).runs() and RunStore(root).runs()[0].file(HEARTBEAT).exists(), what="the run")
    with dashboard(root) as server:
        live = _until(lambda: (v := get_json(server, "/api/runs/001/live"))["n_trials"] >= 8 and v, what="trials")
        assert live["status"] == "running" and live["phase"] and live["silence"]["stale"] is False
        times = [t["time"] for t in live["trials"]]
        assert times == sorted(times, reverse=True) and live["trials"][0]["index"] == live["n_trials"] - 1
        first = live["trials"][-1]
        assert first["phase"] == "evaluating baseline" and first["split"] == "test" and first["candidate"] == 0
        assert all(t["score"] in (0.0, 1.0) and t["feedback"] and not t["has_trace"] for t in live["trials"])

        live = _until(lambda: (v := get_json(server, "/api/runs/001/live"))["candidates"]
                      and len(v["trend"]) >= 2 and v, what="two candidates scored in the search")
        means = [c["mean"] for c in live["candidates"] if c["mean"] is not None]
        assert means == sorted(means, reverse=True)  # ranked by mean
        bests = [p["best"] for p in live["trend"]]
        assert bests == sorted(bests) and bests[-1] == max(means)  # the trend never goes down

        os.kill(proc.pid, signal.SIGSTOP)  # alive but silent
        stale = _until(lambda: (v := get_json(server, "/api/runs/001/live"))["silence"]["stale"] and v,
                       timeout=15, what="staleness")
        assert stale["status"] == "running" and stale["silence"]["seconds"] > 3 * 0.3
        row = get_json(server, "/api/runs")["runs"][0]
        assert row["status"] == "running" and row["silence"]["stale"]
        assert main(["runs", "--run-dir", str(root)]) == 0
        assert "running (no word for" in capsys.readouterr().out

        os.kill(proc.pid, signal.SIGCONT)
        _until(lambda: not get_json(server, "/api/runs/001/live")["silence"]["stale"], timeout=15, what="a beat")

        proc.kill()  # the process dies: interrupted, with the command that continues it
        proc.wait(10)
        live = get_json(server, "/api/runs/001/live")
        assert live["status"] == "interrupted" and live["silence"] is None
        assert live["hints"]["resume"] == f"reflex-dspy optimize --resume-from 001 --run-dir {root.resolve()}"


def test_pipeline_trials_link_to_their_execution_trace(tmp_path):
    compile_shop(ShopAgent(mark=True), tmp_path, max_iterations=1)
    with dashboard(tmp_path) as server:
        live = get_json(server, "/api/runs/001/live")
        traced = [t for t in live["trials"] if t["has_trace"]]
        assert traced and len(traced) == len(live["trials"])
        trial = get_json(server, f"/api/runs/001/trials/{traced[0]['index']}")
        kinds = [(n["name"], n["kind"], n["optimize"]) for n in trial["trace"]["nodes"]]
        assert kinds == [("extract", "predictor", False), ("lookup", "tool", False), ("answer", "predictor", True)]
        assert trial["example_id"] == traced[0]["example_id"] and trial["score"] == traced[0]["score"]
        assert request(server, "GET", f"/api/runs/001/trials/{live['n_trials']}")[0] == 404
        assert request(server, "GET", "/api/runs/001/trials/x")[0] == 400


def test_created_and_failed_runs_say_what_to_do(tmp_path, task, lms, capsys):
    assert main(["optimize", "create", str(task.data), str(task.prompt), "-m", "fake/task", "--metric", "exact",
                 "--run-dir", str(task.run_dir)]) == 0
    with dashboard(task.run_dir) as server:
        live = get_json(server, "/api/runs/001/live")
        assert live["status"] == "created" and live["n_trials"] == 0
        assert live["hints"]["start"] == f"reflex-dspy optimize run 001 --run-dir {task.run_dir.resolve()}"

    def broken(system: str, messages: list[dict]) -> str:
        raise ValueError("no answer")

    optimizer = Reflex("exact", task_lm=fake_lm(broken, name="fake/task"), max_workers=1, mlflow=False,
                       reasoning_lm=fake_lm(reasoner_respond, name="fake/reasoner"), run_dir=tmp_path / "f")
    with pytest.raises(Exception, match="every test example failed"):
        optimizer.compile(program_from_prompt(INITIAL), trainset=routing_examples(3))
    with dashboard(tmp_path / "f") as server:
        live = get_json(server, "/api/runs/001/live")
        assert live["status"] == "failed" and live["failure"]["reason"].startswith("every test example failed")
        failed = [t for t in live["trials"] if t["score"] is None]
        assert failed and all("no answer" in t["error"] for t in failed)  # failed pairs are in the feed
        assert get_json(server, "/api/runs")["runs"][0]["status"] == "failed"


def test_the_interrupted_run_continues_with_optimize_run(tmp_path, monkeypatch, capsys):
    """`optimize run ID` on an interrupted run continues it (as --resume-from ID), in no new run."""
    data, prompt = write_task(tmp_path / "task", n_per_label=3)
    with FakeOpenAI(delay=0.05) as fake:
        env = cli_env(fake.base_url, tmp_path / "cache")
        proc = cli_optimize(tmp_path / "rd", data, prompt, env, *FLAGS, wait=False)
        run = _until(lambda: (r := RunStore(tmp_path / "rd").runs()) and r[0].load_iterations() and r[0],
                     what="a first iteration")
        proc.kill()
        proc.wait(10)
        assert run.status == "interrupted"
        fake.delay = 0.0
        for key in ("OPENAI_API_BASE", "OPENAI_API_KEY"):
            monkeypatch.setenv(key, env[key])
        code = main(["optimize", "run", "1", "--run-dir", str(tmp_path / "rd")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "continuing it" in err and run.status == "completed"
    assert [r.path for r in RunStore(tmp_path / "rd").runs()] == [run.path]
