"""`optimize create`, `optimize dry-run ID`, `optimize run ID` (cli/lifecycle_cmds.py) and the run
statuses they rely on (`created`, `failed` with its reason, the heartbeat and trials files).

The end-to-end test runs the real CLI in separate processes against `fake_openai_server`: the
run is created from one working directory and started by another process from another one,
after the original dataset and prompt were deleted (the run directory holds its inputs). The
others call the CLI in-process with the fake models of conftest's `lms` fixture.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import routing_examples
from dashboard_kit import INITIAL, cli_env, reasoner_respond, task_respond, write_task
from fake_openai_server import FakeOpenAI
from fakes import fake_lm

from reflex_dspy import Reflex
from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.cli import main
from reflex_dspy.errors import ReflexError
from reflex_dspy.run_status import CREATED, FAILURE, HEARTBEAT, TRIALS
from reflex_dspy.tracking import Tracker
from reflex_dspy.tracking.store import RunStore

FLAGS = ["-s", "iterative", "--max-iterations", "2", "--threshold", "1.0", "--val-split", "0"]


def cli(capsys, *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def reflex_cli(cwd: Path, env: dict[str, str], *argv: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reflex_dspy.cli", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_create_in_one_directory_then_check_and_run_from_another_process(tmp_path, capsys):
    """create (cwd A, relative paths) → dry-run and run (cwd B); the inputs live in the run dir."""
    one, two, shared = tmp_path / "one", tmp_path / "two", tmp_path / "shared"
    two.mkdir()
    data, prompt = write_task(one)
    with FakeOpenAI() as fake:
        env = cli_env(fake.base_url, tmp_path / "cache")
        made = reflex_cli(one, env, "optimize", "create", "data.jsonl", "prompt.md", "-m", "openai/fake-task",
                          "--reasoning-model", "openai/fake-reasoner", "--metric", "exact", "--run-dir",
                          "../shared", "--reasoning-api-key", "sk-never-written", *FLAGS)
        assert made.returncode == 0, made.stderr
        root = shared.resolve()
        assert f"Start it : reflex-dspy optimize run 001 --run-dir {root}" in made.stdout
        assert fake.requests == 0  # create calls no model
        run = RunStore(shared).get_run("1")
        assert run.status == "created" and not run.file("run.pid").exists()
        created = json.loads(run.file(CREATED).read_text())
        assert created["task"]["dataset"] == "inputs/dataset.jsonl" and created["config"]["max_iterations"] == 2
        data.unlink(), prompt.unlink()  # the run no longer needs them

        with pytest.MonkeyPatch.context() as mp:  # checked in this process, from a third directory
            mp.chdir(two)
            for key in ("OPENAI_API_BASE", "OPENAI_API_KEY"):
                mp.setenv(key, env[key])
            code, out, err = cli(capsys, "optimize", "dry-run", "001", "--run-dir", root)
        assert code == 0, err
        assert "dry run: no model was called" in out and "(created)" in out
        assert fake.requests == 0 and run.status == "created"

        ran = reflex_cli(two, env, "optimize", "run", "001", "--run-dir", root)
        assert ran.returncode == 0, ran.stdout + ran.stderr
    assert run.status == "completed" and len(run.load_iterations()) == 2
    assert "Starting run 001" in ran.stderr and "Final score" in ran.stdout
    trials = [json.loads(line) for line in run.file(TRIALS).read_text().splitlines()]
    assert {t["phase"] for t in trials} == {"evaluating baseline", "searching", "evaluating best"}
    assert all(t["score"] in (0.0, 1.0) and t["feedback"] for t in trials)
    for path in shared.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".md"):
            assert "sk-never-written" not in path.read_text(errors="replace"), path


def test_run_of_a_completed_run_is_a_new_attempt_that_names_it(capsys, task, lms):
    code, out, err = cli(capsys, "optimize", "create", task.data, task.prompt, "-m", "fake/task",
                         "--reasoning-model", "fake/reasoner", "--metric", "exact", *FLAGS, *task.flags)
    assert code == 0, err
    assert cli(capsys, "optimize", "run", "1", *task.flags)[0] == 0
    code, out, err = cli(capsys, "optimize", "run", "001", *task.flags)
    assert code == 0, err
    assert "Run 002 repeats run 001 (completed)" in err
    again = task.store.get_run("2")
    assert again.status == "completed"
    assert json.loads(again.file(CREATED).read_text())["repeats"] == {"run_id": "001", "status": "completed"}
    config = again.load_config()
    dataset = config.get("dataset_path") or (config.get("metadata") or {}).get("dataset_path")
    assert dataset.startswith(str(again.path.resolve()))  # the attempt's own captured inputs


def test_optimize_run_without_an_id_is_the_one_shot_optimize(capsys, task, lms):
    code, out, err = cli(capsys, "optimize", "run", task.data, task.prompt, "-m", "fake/task",
                         "--reasoning-model", "fake/reasoner", "--metric", "exact", *FLAGS, *task.flags)
    assert code == 0, err
    run = task.store.get_run("1")
    assert run.status == "completed" and not run.file(CREATED).exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["optimize", "dry-run"], "optimize dry-run needs a run ID"),
        (["optimize", "run", "7"], "no run 7"),
        (["optimize", "create", "DATA", "PROMPT", "--resume"], "--resume is not accepted"),
        (["optimize", "create", "DATA", "PROMPT", "-o", "best.md"], "-o (give it to optimize run)"),
        (["optimize", "create", "missing.jsonl", "PROMPT"], "missing.jsonl"),
    ],
)
def test_bad_lifecycle_commands_fail_in_one_line_and_write_nothing(capsys, task, lms, argv, message):
    argv = [task.data if a == "DATA" else task.prompt if a == "PROMPT" else a for a in argv]
    code, out, err = cli(capsys, *argv, *task.flags)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not task.store.runs()


def test_a_created_run_keeps_its_task_and_config(capsys, task, lms):
    assert cli(capsys, "optimize", "create", task.data, task.prompt, "-m", "fake/task", "--metric", "exact",
               *FLAGS, "--run-dir", task.run_dir)[0] == 0  # no tracking URI given: nothing published
    code, out, err = cli(capsys, "optimize", "run", "1", task.data, *task.flags)
    assert code == 2 and "give no DATA or PROMPT" in err
    code, out, err = cli(capsys, "optimize", "dry-run", "1", "--max-iterations", "9", *task.flags)
    assert code == 0 and "--max-iterations ignored" in err and "up to 2 iterations" in out
    assert task.store.get_run("1").status == "created"


# -- failed runs: the layout, the CLI, MLflow -----------------------------------------------------
class AuthenticationError(Exception):
    """Named like litellm's: classified as an auth error (401) by retries.classify_error."""

    status_code = 401


class Broken(Tracker):
    """A tracker with a bug: the run stops on its exception."""

    def on_iteration(self, record) -> None:
        raise RuntimeError("disk on fire\nsecond line")


def _compile(root: Path, task_lm, trackers=(), mlflow: bool = True) -> None:
    optimizer = Reflex("exact", strategy="iterative", task_lm=task_lm, run_dir=root, max_workers=1,
                       reasoning_lm=fake_lm(reasoner_respond, name="fake/reasoner"), max_iterations=2,
                       tracking_uri=f"sqlite:///{root / 'mlflow.db'}", score_threshold=1.0, trackers=list(trackers),
                       mlflow=mlflow)
    optimizer.compile(program_from_prompt(INITIAL), trainset=routing_examples(4))


@pytest.mark.parametrize(
    ("error", "trackers", "raised", "reason"),
    [
        (None, [Broken()], RuntimeError, "RuntimeError: disk on fire second line"),
        (lambda n: ValueError("unparseable"), [], ReflexError, "every test example failed"),
        (lambda n: AuthenticationError("key revoked") if n > 5 else None, [], ReflexError,
         "auth error: the provider refused"),
    ],
    ids=["exception", "every-example-failed", "auth-error"],
)
def test_a_run_that_stops_on_an_error_is_failed_with_its_reason(tmp_path, capsys, error, trackers, raised, reason):
    with pytest.raises(raised):
        _compile(tmp_path, fake_lm(task_respond, name="fake/task", error=error), trackers)
    run = RunStore(tmp_path).get_run("1")
    assert run.status == "failed"
    failure = json.loads(run.file(FAILURE).read_text())
    assert reason in failure["reason"] and "\n" not in failure["reason"]
    code, out, _ = cli(capsys, "runs", "--run-dir", tmp_path)
    assert code == 0 and "failed" in out.splitlines()[1]
    code, out, _ = cli(capsys, "show", "1", "--run-dir", tmp_path)
    assert "Status         : failed" in out and f"Failed         : {failure['reason']}" in out
    assert "Resume         : reflex-dspy optimize --resume-from 001" in out

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (parent,) = client.search_runs([client.get_experiment_by_name("reflex").experiment_id],
                                   "tags.`reflex.run_id` = '001'")
    assert parent.info.status == "FAILED" and parent.data.tags["reflex.status"] == "failed"
    assert parent.data.tags["reflex.failure_reason"] == failure["reason"]


def test_ctrl_c_is_interrupted_not_failed(tmp_path):
    def interrupt(n: int):
        return KeyboardInterrupt() if n == 8 else None

    with pytest.raises(KeyboardInterrupt):
        _compile(tmp_path, fake_lm(task_respond, name="fake/task", error=interrupt), mlflow=False)
    run = RunStore(tmp_path).get_run("1")
    assert run.status == "interrupted" and not run.file(FAILURE).exists()
    assert RunStore(tmp_path).find_incomplete_run().run_id == "001"  # --resume finds it


def test_heartbeat_file_is_written_while_running(tmp_path, monkeypatch):
    import reflex_dspy.lifecycle

    monkeypatch.setattr(reflex_dspy.lifecycle, "HEARTBEAT_SECONDS", 0.05)
    slow = fake_lm(lambda s, m: (__import__("time").sleep(0.02), task_respond(s, m))[1], name="fake/task")
    _compile(tmp_path, slow, mlflow=False)
    beat = json.loads(RunStore(tmp_path).get_run("1").file(HEARTBEAT).read_text())
    assert beat["interval"] == 0.05 and beat["phase"] and isinstance(beat["time"], float)


def test_a_machine_sharing_only_the_mlflow_store_starts_a_created_run(capsys, tmp_path, task, lms):
    """create in one run directory publishes the run to MLflow; another run directory (another
    machine: nothing shared but the tracking store) fetches it by its MLflow run id and runs it."""
    import mlflow

    store = f"sqlite:///{tmp_path / 'shared-mlflow.db'}"
    code, out, err = cli(capsys, "optimize", "create", task.data, task.prompt, "-m", "fake/task", "--metric", "exact",
                         *FLAGS, "--run-dir", tmp_path / "machine-a", "--mlflow-tracking-uri", store)
    assert code == 0, err
    command = next(line for line in out.splitlines() if "shares only the MLflow store" in line)
    ref = command.split("optimize run ")[1].split()[0]
    assert ref.startswith("mlflow:") and command.endswith(f"--mlflow-tracking-uri {store}")
    client = mlflow.MlflowClient(store)
    record = client.get_run(ref.removeprefix("mlflow:"))
    assert record.info.status == "SCHEDULED" and record.data.tags["reflex.status"] == "created"

    task.data.unlink()
    code, out, err = cli(capsys, "optimize", "run", ref, "--run-dir", tmp_path / "machine-b",
                         "--mlflow-tracking-uri", store)
    assert code == 0, err
    run = RunStore(tmp_path / "machine-b").get_run("1")
    assert run.status == "completed" and (run.path / "inputs" / "dataset.jsonl").exists()
    record = client.get_run(ref.removeprefix("mlflow:"))
    assert record.data.tags["reflex.status"] == "started" and str(run.path.resolve()) in record.data.tags[
        "reflex.started_as"]
    code, out, err = cli(capsys, "optimize", "run", ref, "--run-dir", tmp_path / "machine-b",
                         "--mlflow-tracking-uri", store)
    assert code == 2 and "already started" in err


def test_a_reader_that_stops_early_costs_no_output_file(tmp_path):
    """`reflex-dspy optimize ... | head` where head has gone before the summary: before, the summary
    was printed first, its BrokenPipeError ended the command with a traceback, and `-o` and
    `--results-json` were never written. Now they are, and the exit is quiet (141, as for SIGPIPE)."""
    data, prompt = write_task(tmp_path)
    with FakeOpenAI() as fake:
        env = cli_env(fake.base_url, tmp_path / "cache")
        proc = subprocess.Popen(
            [sys.executable, "-m", "reflex_dspy.cli", "optimize", data, prompt, "-m", "openai/fake-task", "--metric",
             "exact", *FLAGS, "--run-dir", tmp_path / "runs", "-o", tmp_path / "best.md", "--results-json",
             tmp_path / "results.json"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdout.close()  # the reader is gone before anything is printed
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and b"Traceback" not in err, err.decode()
    assert (tmp_path / "best.md").read_text().strip()
    assert json.loads((tmp_path / "results.json").read_text())["final"]["mean_score"] is not None
