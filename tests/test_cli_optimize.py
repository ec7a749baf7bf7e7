"""`reflex-dspy optimize` (new, --resume, --resume-from) and `reflex-dspy branch`, on fake models.

`reflex_dspy.lm.resolve_lm` / `probe_lm` are replaced so no real model loads. Most tests also
replace `Reflex` with a recorder, to pin exactly what the CLI hands the optimizer (config,
metadata, resume run, branch point); the `real_reflex` tests run the whole flow end to end and
need the run layout in `Reflex` (`run_dir=`), so they skip until it is there.
"""

from __future__ import annotations

import json
import re
import types
from pathlib import Path

import pytest
from conftest import ScriptedReasoner, routing_respond
from fakes import fake_lm
from test_cli_runs import INITIAL, make_run

import reflex_dspy.lm
import reflex_dspy.reflex
from reflex_dspy.cli import main

GOOD = "Route the message. Answer with one word: billing, shipping or technical."


@pytest.fixture
def models(monkeypatch) -> types.SimpleNamespace:
    """resolve_lm → fakes by spec (the task for None / fake/task, a scripted reasoner otherwise)."""
    ns = types.SimpleNamespace(reasoner=ScriptedReasoner([GOOD]), resolved=[], probed=[])
    ns.task_lm = fake_lm(routing_respond, name="fake/task")
    ns.reasoning_lm = fake_lm(ns.reasoner, name="fake/reasoner")

    def resolve_lm(spec, **kwargs):
        ns.resolved.append((spec, kwargs))
        return ns.task_lm if spec in (None, "fake/task") else ns.reasoning_lm

    monkeypatch.setattr(reflex_dspy.lm, "resolve_lm", resolve_lm)
    monkeypatch.setattr(reflex_dspy.lm, "probe_lm", ns.probed.append)
    return ns


class _Result:
    best_prompt = GOOD
    promotion = None

    def summary(self) -> str:
        return "Final score    : 1.0000"

    def to_dict(self) -> dict:
        return {"best_prompt": GOOD}


@pytest.fixture
def recorder(monkeypatch) -> types.SimpleNamespace:
    """Replaces `Reflex`: records its keywords and the compile call, returns a finished program."""
    seen = types.SimpleNamespace(init=None, compile=None, program=None)

    class FakeReflex:
        def __init__(self, metric, **kwargs):
            seen.init = {"metric": metric, **kwargs}

        def compile(self, program, *, trainset, **kwargs):
            seen.program, seen.compile = program, {"trainset": trainset, **kwargs}
            return types.SimpleNamespace(result=_Result(), run_id="007")

    monkeypatch.setattr(reflex_dspy.reflex, "Reflex", FakeReflex)
    return seen


def cli(capsys, *argv: str | Path) -> tuple[int, str, str]:
    """Run the CLI in-process; a str argument may hold several space-separated words."""
    code = main([w for a in argv for w in ([str(a)] if isinstance(a, Path) else a.split())])
    out = capsys.readouterr()
    return code, out.out, out.err


def _meta(task, **extra) -> dict:
    return {
        "dataset_path": str(task.data.resolve()),
        "prompt_path": str(task.prompt.resolve()),
        "task_model": "fake/task",
        "task_models": ["fake/task"],
        "reasoning_model": None,
        "reasoning_base_url": None,
        "metric": ["exact"],
        "judge": None,
        "judge_criteria": None,
        "input_field": None,
        "output_field": None,
        "splits_file": None,
        **extra,
    }


# --------------------------------------------------------------------------- new runs


def test_dry_run_calls_no_model_and_writes_nothing(capsys, task, models, tmp_path):
    flags = "-m fake/task --metric exact --auto light --dry-run"
    code, out, _ = cli(capsys, "optimize", task.data, task.prompt, flags, *task.flags)
    assert code == 0 and "dry run: no model was called" in out
    n_search = sum(int(n) for n in re.search(r"train (\d+) / val (\d+)", out).groups())
    assert f"(budget {6 * n_search})" in out  # --auto light
    assert models.task_lm.fake_engine.calls == 0 and models.probed == []
    assert not task.run_dir.exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(("flags", "limit", "reasoning"), [
    ("--max-metric-calls 40", "auto, as many iterations as the budget allows", 9),
    ("--max-metric-calls 40 --max-iterations 3", "auto, up to 3 iterations", 9),
    ("", "auto, up to 10 iterations", 30),
])
def test_dry_run_says_what_limits_the_iterations(capsys, task, models, flags, limit, reasoning):
    """With a budget and no --max-iterations the budget is the limit; reasoning calls are estimated
    for the iterations the calls afford (train 9 / val 1: 19 calls an iteration, 3 fit in 40)."""
    code, out, _ = cli(capsys, "optimize", task.data, task.prompt, "-m fake/task --metric exact --dry-run",
                       flags, *task.flags)
    assert code == 0 and "train 9 / val 1" in out and limit in out, out
    assert f"about {reasoning} reasoning calls" in out


def test_optimize_hands_reflex_the_run_layout_tracking_and_metadata(
    capsys, task, models, recorder, tmp_path, monkeypatch
):
    monkeypatch.setenv("REFLEX_REASONING_API_KEY", "sk-secret-123")
    out_file = tmp_path / "best.md"
    flags = "-m fake/task --reasoning-model fake/reasoner --metric exact --max-metric-calls 50 -p max_phases=3"
    code, out, _ = cli(
        capsys, "optimize", task.data, task.prompt, flags, "--mlflow-experiment exp -o", out_file, *task.flags
    )
    assert code == 0, _
    init = recorder.init
    assert init["run_dir"] == str(task.run_dir) and init["experiment"] == "exp"
    assert init["tracking_uri"] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert init["config"].max_metric_calls == 50 and init["config"].strategy == "auto"
    assert init["config"].extra_kwargs == {"max_phases": 3}
    assert init["config"].reasoning_api_key.get_secret_value() == "sk-secret-123"
    assert init["metadata"] == _meta(task, reasoning_model="fake/reasoner")
    assert "sk-secret" not in json.dumps(init["metadata"]) + json.dumps(init["config"].public_dict())
    assert set(recorder.compile) == {"trainset", "splits"} and len(recorder.compile["trainset"]) == 12
    assert recorder.compile["splits"] is None
    assert recorder.program.predict.signature.instructions == INITIAL
    assert set(models.probed) == {models.task_lm, models.reasoning_lm}
    assert "Run            : 007 (" in out and out_file.read_text() == GOOD + "\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["optimize"], "optimize needs DATASET and PROMPT"),
        (["optimize", "--resume"], "--resume needs DATASET"),
        (["optimize", "data.jsonl", "--resume", "--resume-from", "1"], "not allowed with argument"),
        (["optimize", "--resume-from", "abc"], "invalid run id 'abc'"),
        (["optimize", "--resume-from", "9"], "no run 9 in"),
    ],
)
def test_optimize_usage_errors(capsys, task, models, argv, message):
    code, out, err = cli(capsys, *argv, *task.flags)
    assert code == 2 and message in err and not out


# --------------------------------------------------------------------------- resume


def test_resume_from_rebuilds_the_recorded_task_and_config_and_names_ignored_flags(
    capsys, task, models, recorder, monkeypatch
):
    monkeypatch.setenv("REFLEX_REASONING_API_KEY", "sk-secret-123")
    run = make_run(task.store, status="interrupted", iterations=1, metadata=_meta(task))
    task.prompt.write_text("An edited prompt file.\n")  # the run continues with what it started from
    flags = "--resume-from 1 --max-iterations 9 --strategy iterative -m other/model"
    code, out, err = cli(capsys, "optimize", flags, *task.flags)
    assert code == 0, err
    assert recorder.compile["resume"].path == run.path
    config = recorder.init["config"]
    assert config.max_iterations == 5 and config.score_threshold == 0.9  # the recorded values
    assert config.reasoning_api_key.get_secret_value() == "sk-secret-123"
    assert recorder.init["metadata"] == _meta(task)
    assert recorder.program.predict.signature.instructions == INITIAL
    assert models.resolved[0][0] == "fake/task"
    assert "--max-iterations 9 ignored: run 001 keeps its recorded max_iterations = 5" in err
    assert "-m ignored" in err and "--strategy" not in err  # same value as recorded: no note


def test_resume_picks_the_latest_interrupted_run_of_this_dataset(capsys, task, models, recorder, tmp_path):
    other = tmp_path / "other.jsonl"
    other.write_text(task.data.read_text())
    make_run(task.store, status="interrupted", metadata=_meta(task))
    wanted = make_run(task.store, status="interrupted", metadata=_meta(task), minute=1)
    make_run(task.store, status="interrupted", metadata=_meta(task, dataset_path=str(other)), minute=2)
    make_run(task.store, status="completed", metadata=_meta(task), minute=3)
    code, _, err = cli(capsys, "optimize", task.data, "--resume", *task.flags)
    assert code == 0, err
    assert recorder.compile["resume"].run_id == wanted.run_id == "002"


def test_resume_refuses_completed_running_and_api_runs(capsys, task, models, recorder):
    make_run(task.store, status="completed", metadata=_meta(task))
    make_run(task.store, status="running", metadata=_meta(task), minute=1)
    make_run(task.store, status="interrupted", metadata={}, minute=2)
    cases = {
        "1": "run 001 is completed; nothing to resume",
        "2": "run 002 is still running",
        "3": "run 003 was not started by the CLI",
    }
    for run_id, message in cases.items():
        code, _, err = cli(capsys, "optimize", "--resume-from", run_id, *task.flags)
        assert code == 2 and message in err and err.count("\n") == 1
    code, _, err = cli(capsys, "optimize", task.data, "--resume", *task.flags)
    assert code == 2 and "no interrupted run of" in err
    assert recorder.init is None


def test_resume_from_with_another_dataset_is_refused(capsys, task, models, recorder, tmp_path):
    make_run(task.store, status="interrupted", metadata=_meta(task))
    code, _, err = cli(capsys, "optimize", tmp_path / "x.jsonl", "--resume-from", "1", *task.flags)
    assert code == 2 and "optimizes" in err and recorder.init is None


# --------------------------------------------------------------------------- branch


def test_branch_keeps_the_parents_task_and_config_except_the_overrides(capsys, task, models, recorder):
    parent = {
        "reasoning_model": "fake/reasoner",
        "reasoning_base_url": "http://localhost:8080/v1",
        "batch_size": 4,
        "max_metric_calls": 99,
    }
    make_run(task.store, metadata=_meta(task, reasoning_model="fake/reasoner"), config=parent)
    flags = "001 2 --strategy iterative --max-iterations 3 --auto medium"
    code, out, err = cli(capsys, "branch", flags, *task.flags)
    assert code == 0, err
    assert recorder.compile["branch_from"] == ("001", 2) and "resume" not in recorder.compile
    config = recorder.init["config"]
    assert (config.max_iterations, config.auto_budget, config.max_metric_calls) == (3, "medium", None)
    assert (config.score_threshold, config.batch_size, config.reasoning_model) == (0.9, 4, "fake/reasoner")
    assert config.reasoning_base_url == "http://localhost:8080/v1"
    assert recorder.init["metadata"] == _meta(
        task, reasoning_model="fake/reasoner", reasoning_base_url="http://localhost:8080/v1"
    )
    assert recorder.program.predict.signature.instructions == INITIAL
    assert "Run            : 007" in out


def test_branch_with_another_reasoning_model_drops_the_parents_server(capsys, task, models, recorder):
    parent = {
        "reasoning_model": "fake/old",
        "reasoning_base_url": "http://localhost:8080/v1",
        "extra_kwargs": {"k": 1},
        "strategy": "other",
    }
    run = make_run(task.store, metadata=_meta(task), config={"reasoning_model": "fake/old"})
    config = json.loads(run.file("config.json").read_text())
    config["config"].update(parent)  # a strategy with parameters this version does not have
    run.file("config.json").write_text(json.dumps(config))
    code, _, err = cli(
        capsys, "branch", "1", "1", "-s", "iterative", "--reasoning-model", "fake/reasoner", *task.flags
    )
    assert code == 0, err
    config = recorder.init["config"]
    assert (config.reasoning_model, config.reasoning_base_url) == ("fake/reasoner", None)
    assert config.strategy == "iterative" and config.extra_kwargs == {}


def test_branch_dry_run_names_the_branch_point_and_writes_nothing(capsys, task, models, recorder):
    make_run(task.store, metadata=_meta(task))
    before = sorted(p.name for p in task.store.runs_dir.iterdir())
    code, out, _ = cli(capsys, "branch", "1", "0", "-s", "iterative", *task.flags, "--dry-run")
    assert code == 0 and "branch         : from run 001, iteration 0" in out
    assert recorder.init is None and sorted(p.name for p in task.store.runs_dir.iterdir()) == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["branch", "1", "7", "-s", "iterative"], "run 001 has no iteration 7 (recorded: 0-2)"),
        (
            ["branch", "2", "1", "-s", "iterative"],
            "branch it from Python with compile(branch_from=('002', ITER))",
        ),
        (["branch", "1", "1", "-s", "nope"], "nope"),
        (["branch", "1", "one", "-s", "iterative"], "ITER 'one'"),
        (["branch", "1", "1"], "the following arguments are required: -s/--strategy"),
    ],
)
def test_branch_usage_errors(capsys, task, models, recorder, argv, message):
    make_run(task.store, metadata=_meta(task))
    make_run(task.store, metadata={}, minute=1)
    code, out, err = cli(capsys, *argv, *task.flags)
    assert code == 2 and message in err and not out and recorder.init is None


# --------------------------------------------------------------------------- end to end (needs reflex.py)


def test_optimize_runs_show_diff_branch_end_to_end(capsys, task, models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # so a stray default .reflex / mlruns would show up here
    base = ["--metric exact --max-iterations 1 --max-workers 2", *task.flags]
    flags = "-m fake/task --reasoning-model fake/reasoner -s iterative"
    code, out, err = cli(
        capsys, "optimize", task.data, task.prompt, flags, *base, "--results-json", tmp_path / "r.json"
    )
    assert code == 0, err
    run = task.store.get_run("001")
    assert f"Run            : 001 ({run.path})" in out and run.status == "completed"
    assert run.load_config()["dataset_path"] == str(task.data.resolve())
    assert (tmp_path / "mlflow.db").exists() and not (tmp_path / ".reflex").exists()
    assert not (tmp_path / "mlruns").exists()

    code, out, _ = cli(capsys, "runs", "--run-dir", task.run_dir)
    assert code == 0 and "completed" in out
    code, out, _ = cli(capsys, "show", "1", "--run-dir", task.run_dir)
    assert code == 0 and "Final score" in out
    code, out, _ = cli(capsys, "diff", "1", "0", "1", "--run-dir", task.run_dir)
    assert code == 0 and f"-{INITIAL}" in out and f"+{GOOD}" in out

    code, out, err = cli(capsys, "branch 1 1 -s iterative --max-iterations 1", *task.flags)
    assert code == 0, err
    assert task.store.get_run("002").load_config()["branched_from"] == {"run_id": "001", "iteration": 1}
    code, out, _ = cli(capsys, "runs", "--run-dir", task.run_dir)
    assert "└─ ⎇ 001/1 → 002" in out


def test_an_interrupted_run_resumes_without_paying_again(capsys, task, models):
    calls = {"n": 0}

    def reasoner(system, messages):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return json.dumps(
            {
                "failure_patterns": "sentences",
                "change_summary": f"proposal {calls['n']}",
                "revised_instructions": "Be verbose." if calls["n"] == 1 else GOOD,
            }
        )

    models.reasoning_lm = fake_lm(reasoner, name="fake/reasoner")
    argv = [
        "-m fake/task --reasoning-model fake/reasoner --metric exact --max-iterations 3 -s iterative",
        "--early-stopping-patience 0 --threshold 1.0 --max-workers 2",
        *task.flags,
    ]
    code, _, err = cli(capsys, "optimize", task.data, task.prompt, *argv)
    assert code == 130 and "interrupted (the same command with --resume continues a run it started)" in err
    assert task.store.get_run("1").status == "interrupted"
    paid = models.task_lm.fake_engine.calls

    code, out, err = cli(capsys, "optimize", task.data, "--resume", *argv)
    assert code == 0, err
    run = task.store.get_run("1")
    assert run.status == "completed" and [r.iteration for r in run.load_iterations()][0] == 1
    assert calls["n"] == 3  # iteration 1's proposal was not asked for again
    assert models.task_lm.fake_engine.calls - paid < paid  # the baseline was not paid again


def test_the_api_key_given_to_the_cli_is_written_nowhere(capsys, task, models, tmp_path):
    secret = "sk-cli-test-SECRET-9876543210"
    code, out, err = cli(
        capsys, "optimize", task.data, task.prompt, "-m fake/task --reasoning-model fake/reasoner -s iterative",
        "--reasoning-api-key", secret, "--metric exact --max-iterations 1", *task.flags,
        "--results-json", tmp_path / "r.json", "-o", tmp_path / "best.md",
    )
    assert code == 0, err
    assert ("fake/reasoner", {"api_key": secret, "base_url": None}) in models.resolved  # really used
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in written) and any(p.name == "journal.jsonl" for p in written)
    for path in written:  # layout, journal, MLflow database and artifacts, -o and --results-json
        assert secret.encode() not in path.read_bytes(), path
    assert secret not in out + err


def test_resume_takes_back_the_credentials_of_a_recorded_server_url(capsys, task, models, recorder, monkeypatch):
    from reflex_dspy.cli.optimize import resumed_config

    url = "https://user:pw@llm.example.com/v1"
    run = make_run(task.store, config={"reasoning_base_url": "https://***@llm.example.com/v1"})
    args = types.SimpleNamespace(reasoning_base_url=url, reasoning_api_key=None)
    assert resumed_config(run, args).reasoning_base_url == url
    other = types.SimpleNamespace(reasoning_base_url="https://x:y@elsewhere.example.com/v1", reasoning_api_key=None)
    assert resumed_config(run, other).reasoning_base_url == "https://***@llm.example.com/v1"
