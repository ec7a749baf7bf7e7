"""`--verdict-results` reads what aevyra-verdict 0.2.0 really writes (issue 22).

The real `aevyra-verdict run` compares two models served by the fake OpenAI server
(`openai/fake-strong` answers every message with its bare label; `openai/fake-task` only the
billing ones), and its results file sets the target of a real `reflex-dspy optimize` run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dashboard_kit import cli_env, cli_optimize, write_task
from fake_openai_server import FakeOpenAI
from fakes import routing_examples

from reflex_dspy import Reflex
from reflex_dspy.errors import UsageError
from reflex_dspy.targets import read_verdict, target_from_verdict
from reflex_dspy.tracking.store import RunStore

VERDICT = Path(sys.executable).with_name("aevyra-verdict")


@pytest.fixture(scope="module")
def verdict_run(tmp_path_factory):
    """results.json of `aevyra-verdict run` on the routing task for two models, and the server."""
    server = FakeOpenAI().start()
    folder = tmp_path_factory.mktemp("verdict")
    chat = folder / "chat.jsonl"  # aevyra-verdict's dataset format: OpenAI messages + ideal
    chat.write_text("".join(json.dumps({"messages": [{"role": "user", "content": e.input}], "ideal": e.output})
                            + "\n" for e in routing_examples(4)))
    results = folder / "results.json"
    env = {**os.environ, "OPENAI_API_KEY": "test"}
    done = subprocess.run([str(VERDICT), "run", str(chat), "-m", "openai/fake-task", "-m", "openai/fake-strong",
                           "--base-url", server.base_url, "--metric", "exact", "-o", str(results)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    yield results, server, folder
    server.stop()


def test_the_real_results_file_has_the_shape_we_read(verdict_run):
    results = json.loads(verdict_run[0].read_text())
    assert results["metrics"] == ["exact_match"]
    models = results["models"]
    assert models["openai/fake-strong"]["exact_match_mean"] == 1.0
    assert models["openai/fake-task"]["exact_match_mean"] < 1.0 and models["openai/fake-task"]["success_rate"] == 1.0
    found = read_verdict(verdict_run[0], run_metrics=["exact"])
    assert found.metric == "exact_match" and found.scores["openai/fake-strong"] == 1.0


def test_dry_run_targets_the_best_other_model_and_names_the_metric(verdict_run):
    results, server, folder = verdict_run
    data, prompt = write_task(folder / "task")
    env = cli_env(server.base_url, folder / "cache")
    argv = [sys.executable, "-m", "reflex_dspy.cli", "optimize", str(data), str(prompt), "-m", "openai/fake-task",
            "--metric", "exact", "--verdict-results", str(results), "--run-dir", str(folder / "dry"), "--dry-run"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "target         : openai/fake-strong @ 1 on exact_match [json]" in done.stdout
    assert not (folder / "dry").exists()

    # The best model is the user's own: the target is the best *other* model, and the CLI says so.
    argv[argv.index("openai/fake-task")] = "openai/fake-strong"
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = json.loads(results.read_text())["models"]["openai/fake-task"]["exact_match_mean"]
    assert f"target         : openai/fake-task @ {expected:.4g} on exact_match [json]" in done.stdout
    assert "your own model openai/fake-strong scores best (1.0000)" in done.stderr


def test_a_real_run_gets_the_threshold_and_the_target_line(verdict_run):
    results, server, folder = verdict_run
    data, prompt = write_task(folder / "run")
    env = cli_env(server.base_url, folder / "cache2")
    root = folder / ".reflex"
    done = cli_optimize(root, data, prompt, env, "-s", "iterative", "--max-iterations", "1", "--verdict-results",
                        str(results), "--no-mlflow")
    assert "Target         : openai/fake-strong @ 1 on exact_match [json]" in done.stdout
    settings = RunStore(root).get_run("001").load_config()["optimizer_config"]
    assert (settings["score_threshold"], settings["target_model"], settings["target_metric"]) == (
        1.0, "openai/fake-strong", "exact_match")


def test_verdict_metric_and_the_python_api(verdict_run, tmp_path):
    results = json.loads(verdict_run[0].read_text())
    results["metrics"].append("bleu")  # a second metric, as `--metric exact --metric bleu` writes
    results["models"]["openai/fake-task"]["bleu_mean"] = 0.9
    results["models"]["openai/fake-strong"]["bleu_mean"] = 0.4
    results["models"]["openai/fake-strong"]["success_rate"] = 0.75
    path = tmp_path / "two.json"
    path.write_text(json.dumps(results))
    target = target_from_verdict(path, metric="bleu")
    assert (target.model, target.score, target.metric) == ("openai/fake-task", 0.9, "bleu")
    assert any("openai/fake-strong answered 75.0%" in note for note in target.notes)
    with pytest.raises(UsageError, match=r"--verdict-metric rouge: not in the results \(metrics: exact_match, bleu\)"):
        target_from_verdict(path, metric="rouge")

    optimizer = Reflex("exact", track=False)
    chosen = optimizer.set_target_from_verdict(path)  # matches this optimizer's metric: exact → exact_match
    assert (chosen.metric, chosen.model) == ("exact_match", "openai/fake-strong")
    assert optimizer.config.target_metric == "exact_match" and optimizer.config.score_threshold == 1.0
    optimizer.set_target_from_verdict(path, metric="bleu")
    assert (optimizer.config.target_model, optimizer.config.score_threshold) == ("openai/fake-task", 0.9)


@pytest.mark.parametrize(("models", "message"), [
    ({"a/b": {"accuracy_mean": 0.8}}, "models.a/b: no exact_match_mean (the file lists metrics exact_match)"),
    ({"a/b": {"exact_match_mean": 1.5}}, "score 1.5 is outside [0, 1]"),
    ({"a/b": 0.5}, "models.a/b: expected an object with exact_match_mean"),
])
def test_a_malformed_verdict_file_is_one_line(tmp_path, models, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"metrics": ["exact_match"], "models": models}))
    with pytest.raises(UsageError) as err:
        target_from_verdict(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
