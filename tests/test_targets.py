"""Target scores: verdict results files, benchmarked target models, and the threshold's precedence."""

from __future__ import annotations

import json
import re

import pytest
from conftest import LABELS, routing_examples, routing_respond, strong_respond
from fakes import fake_lm
from test_cli_optimize import cli

from reflex_dspy import Reflex
from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.errors import UsageError
from reflex_dspy.result import target_label
from reflex_dspy.targets import load_verdict_results, target_from_verdict

INITIAL = "Say which team should handle the message."
LABELLED = f"Answer with one word: {', '.join(LABELS)}."


def _write(tmp_path, data) -> str:
    path = tmp_path / "results.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


# --------------------------------------------------------------------------- verdict files


@pytest.mark.parametrize("data", [
    {"models": {"openai/gpt-4o-mini": {"mean_score": 0.82}, "local/llama3": 0.61}},
    {"results": [{"model": "openai/gpt-4o-mini", "mean": 0.82}, {"model": "local/llama3", "score": 0.61}]},
    [{"model": "local/llama3", "score": 0.61}, {"model": "openai/gpt-4o-mini", "score": 0.82}],
])
def test_every_documented_verdict_shape_gives_the_best_model(tmp_path, data):
    target = target_from_verdict(_write(tmp_path, data))
    assert (target.model, target.score, target.source) == ("openai/gpt-4o-mini", 0.82, "verdict_json")
    assert target.scores == {"openai/gpt-4o-mini": 0.82, "local/llama3": 0.61}


@pytest.mark.parametrize(("data", "message"), [
    ("{not json", "not valid JSON"),
    ({"scores": [1, 2]}, "not a verdict results file"),
    ({"models": {}}, "lists no models"),
    ({"models": {"a/b": {"accuracy": 0.8}}}, "models.a/b: no score"),
    ({"models": {"a/b": 82}}, "outside [0, 1]"),
    ({"results": [{"name": "a/b", "score": 0.8}]}, 'results[0]: expected an object with a "model"'),
    ([{"model": "a/b", "score": "high"}], "score must be a number"),
])
def test_a_malformed_verdict_file_is_one_line_naming_the_file_and_field(tmp_path, data, message):
    path = _write(tmp_path, data)
    with pytest.raises(UsageError) as err:
        load_verdict_results(path)
    assert message in str(err.value) and path in str(err.value) and "\n" not in str(err.value)


def test_target_label_shows_model_threshold_and_source():
    assert target_label({"model": "openai/gpt-4o", "source": "verdict_json", "threshold": 0.82}) == \
        "openai/gpt-4o @ 0.82 [json]"
    assert target_label({"model": "x/y", "source": "verdict_run", "threshold": 0.5}) == "x/y @ 0.5 [run]"
    assert target_label({"model": None, "source": "manual", "threshold": 0.9}) == "0.9 [manual]"


# --------------------------------------------------------------------------- Python API




def test_benchmark_and_set_target_uses_the_best_model_on_train_and_val_only(tmp_path):
    task_lm, strong = fake_lm(routing_respond), fake_lm(strong_respond)
    opt = Reflex("exact", task_lm=task_lm, strategy="iterative", track=False)
    examples = routing_examples(4)
    target = opt.benchmark_and_set_target(program_from_prompt(INITIAL), examples, {"strong": strong})
    assert target.model == "strong" and target.score == 1.0 and target.source == "verdict_run"
    assert 0 < target.scores[task_lm.model] < 1  # only billing is answered with the bare label
    assert (opt.config.score_threshold, opt.config.target_model, opt.config.target_source) == \
        (1.0, "strong", "verdict_run")
    # Held-out test is never used to set the threshold: 12 examples → 2 test, 10 train+val.
    assert strong.fake_engine.calls == 10
    # What benchmarking cost is said (no run's budget counts it): both models on the 10 examples.
    assert target.usage["metric_calls"] == target.usage["lm_calls"] == 20 and target.usage["eval_tokens"] > 0


def test_set_target_from_verdict_sets_the_threshold_and_the_result_reports_it(tmp_path):
    from conftest import ScriptedReasoner

    opt = Reflex("exact", task_lm=fake_lm(routing_respond), reasoning_lm=fake_lm(ScriptedReasoner([LABELLED])),
                 strategy="iterative", max_iterations=1, track=False)
    opt.set_target_from_verdict(_write(tmp_path, {"models": {"openai/gpt-4o-mini": 0.7}}))
    program = opt.compile(program_from_prompt(INITIAL), trainset=routing_examples(4))
    assert program.result.target == {"model": "openai/gpt-4o-mini", "source": "verdict_json", "threshold": 0.7,
                                     "metric": None}
    assert "Target         : openai/gpt-4o-mini @ 0.7 [json]" in program.result.summary()


# --------------------------------------------------------------------------- CLI precedence




RUN = "-m fake/task --reasoning-model fake/reasoner --metric exact -s iterative --max-iterations 1"


def _config(task) -> dict:
    run = task.store.list_runs()[-1]
    return task.store.get_run(run.run_id).load_config()["optimizer_config"]


def test_target_models_are_benchmarked_first_and_the_best_score_is_the_threshold(capsys, task, lms):
    code, out, err = cli(capsys, "optimize", task.data, task.prompt, RUN, "--target fake/strong", *task.flags)
    assert code == 0, err
    assert "fake/strong" in err and "← target" in err
    assert re.search(r"\(20 metric calls, 20 LM calls / \d+ tokens; not part of the run's budget or LM usage\)", err)
    config = _config(task)
    assert (config["score_threshold"], config["target_model"], config["target_source"]) == \
        (1.0, "fake/strong", "verdict_run")
    assert "Target         : fake/strong @ 1 on exact [run]" in out
    comparison = json.loads((task.store.get_run(task.store.list_runs()[-1].run_id).path
                             / "verdict_results.json").read_text())  # aevyra-verdict's format, reusable
    assert comparison["metrics"] == ["exact"] and comparison["models"]["fake/strong"]["exact_mean"] == 1.0
    assert config["target_metric"] == "exact"
    assert lms["fake/strong"].fake_engine.calls == 10  # train+val of 12 examples, nothing from test


def test_verdict_results_beat_target_and_threshold_beats_both(capsys, task, lms, tmp_path):
    verdict = _write(tmp_path, {"models": {"openai/gpt-4o": 0.8}})
    code, out, err = cli(capsys, "optimize", task.data, task.prompt, RUN, "--target fake/strong",
                         "--verdict-results", verdict, *task.flags)
    assert code == 0, err
    assert "--target ignored: --verdict-results sets the target" in err
    assert lms["fake/strong"].fake_engine.calls == 0
    config = _config(task)
    assert (config["score_threshold"], config["target_model"], config["target_source"]) == \
        (0.8, "openai/gpt-4o", "verdict_json")

    code, out, err = cli(capsys, "optimize", task.data, task.prompt, RUN, "--target fake/strong",
                         "--verdict-results", verdict, "--threshold 0.95", *task.flags)
    assert code == 0, err
    assert "--verdict-results ignored" in err and "--target ignored" in err
    config = _config(task)
    assert (config["score_threshold"], config["target_model"], config["target_source"]) == (0.95, None, "manual")


def test_default_threshold_without_any_target_source(capsys, task, lms):
    code, _, err = cli(capsys, "optimize", task.data, task.prompt, RUN, *task.flags)
    assert code == 0, err
    config = _config(task)
    assert (config["score_threshold"], config["target_model"], config["target_source"]) == (0.85, None, None)


def test_a_bad_verdict_file_fails_before_any_model_or_file(capsys, task, lms, tmp_path):
    verdict = _write(tmp_path, {"models": {"a/b": 85}})
    code, _, err = cli(capsys, "optimize", task.data, task.prompt, RUN, "--verdict-results", verdict, *task.flags)
    assert code == 2 and err.count("\n") == 1 and "outside [0, 1]" in err
    assert lms["fake/task"].fake_engine.calls == 0 and not task.run_dir.exists()
