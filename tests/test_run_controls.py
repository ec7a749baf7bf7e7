"""Budgets, promotion, splits files, dry runs, rate limits, several task models and the live status."""

from __future__ import annotations

import io
import json
import re
import threading
import time

import pytest
from conftest import LABELS, ScriptedReasoner, routing_examples, routing_respond, strong_respond
from dspy.lm15 import RateLimitError
from fakes import fake_lm
from test_cli_optimize import cli

import reflex_dspy.lifecycle
import reflex_dspy.lm
import reflex_dspy.progress
from reflex_dspy import Reflex
from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.candidate import Candidate
from reflex_dspy.data import example_id
from reflex_dspy.errors import UsageError
from reflex_dspy.evaluation import Evaluator
from reflex_dspy.metrics import resolve_metric
from reflex_dspy.retries import RetryPolicy
from reflex_dspy.tracking.base import Tracker

INITIAL = "Say which team should handle the message."
LABELLED = f"Answer with one word: {', '.join(LABELS)}."
PROPOSALS = [f"Be verbose ({i}). Explain which of billing, shipping, technical applies." for i in range(1, 6)]




def compile_run(proposals=(LABELLED,), *, examples=None, task_lm=None, trackers=(), splits=None, **config):
    config.setdefault("max_workers", 2)
    opt = Reflex("exact", strategy="iterative", task_lm=task_lm or fake_lm(routing_respond),
                 reasoning_lm=fake_lm(ScriptedReasoner(list(proposals))), trackers=trackers, track=False, **config)
    return opt.compile(program_from_prompt(INITIAL), trainset=examples or routing_examples(4), splits=splits)


# --------------------------------------------------------------------------- budgets


def test_the_search_stops_at_exactly_the_metric_call_budget():
    # An unbudgeted run shows what each step costs; a budget ending after iteration 2 must stop
    # there having spent exactly that many calls, and one call more cannot buy a third iteration.
    free = compile_run(PROPOSALS, max_iterations=3, early_stopping_patience=0, score_threshold=1.0).result
    assert len(free.iterations) == 3
    initial_val = free.usage["search_calls"] - sum(r.metric_calls for r in free.iterations)
    after_two = initial_val + sum(r.metric_calls for r in free.iterations[:2])
    for budget in (after_two, after_two + 1):
        run = compile_run(PROPOSALS, max_iterations=3, early_stopping_patience=0, score_threshold=1.0,
                          max_metric_calls=budget).result
        assert len(run.iterations) == 2
        if budget == after_two:
            assert run.stop_reason == "metric-call budget spent"
        else:  # one call too few for the third step: said, not "spent"
            assert re.fullmatch(r"metric-call budget: 1 call left, too few for the next evaluation \(\d+ needed\)",
                                run.stop_reason), run.stop_reason
        assert run.usage["search_calls"] == after_two <= budget == run.budget
        assert f"Budget         : {after_two} / {budget} search metric calls spent" in run.summary()


# --------------------------------------------------------------------------- promotion


def test_promotion_needs_the_required_lift_and_significance():
    examples = routing_examples(12)  # train_ratio 0.5 → 18 test examples, enough for a sign test
    promoted = compile_run(examples=examples, train_ratio=0.5, max_iterations=1, min_holdout_improvement=0.3)
    report = promoted.result.promotion
    assert report["promoted"] and report["significant"] and report["improvement"] > 0.3
    assert "Promotion      : promoted" in promoted.result.summary()

    too_high = compile_run(examples=examples, train_ratio=0.5, max_iterations=1, min_holdout_improvement=0.9)
    assert not too_high.result.promotion["promoted"]
    assert "< required +0.9000" in too_high.result.promotion["reason"]

    tiny = compile_run(examples=routing_examples(2), train_ratio=0.75, val_ratio=0.0, max_iterations=1,
                       min_holdout_improvement=0.1).result  # 6 examples → 2 test: never significant
    assert tiny.improvement > 0.1 and not tiny.promotion["promoted"]
    assert "not significant" in tiny.promotion["reason"]




RUN = "-m fake/task --reasoning-model fake/reasoner --metric exact -s iterative --max-iterations 1"


def test_output_is_written_only_when_promoted_unless_forced(capsys, task, lms, tmp_path):
    out_file = tmp_path / "best.md"
    gate = "--min-holdout-improvement 0.5"  # 12 examples → 2 test examples: never significant
    code, out, err = cli(capsys, "optimize", task.data, task.prompt, RUN, gate, "-o", out_file, *task.flags)
    assert code == 0, err
    assert "Promotion      : not promoted" in out and "not written to" in out and not out_file.exists()
    code, out, err = cli(capsys, "optimize", task.data, task.prompt, RUN, gate, "--force-output", "-o", out_file,
                         *task.flags)
    assert code == 0, err
    assert out_file.read_text().strip() == LABELLED and "written because of --force-output" in out


# --------------------------------------------------------------------------- splits file


def _ids(examples):
    return [example_id(e) for e in examples]


def test_a_splits_file_pins_every_example_and_is_recorded(tmp_path):
    from reflex_dspy.data import assign_ids

    examples = assign_ids(routing_examples(4))
    ids = _ids(examples)
    pinned = {"train": ids[:6], "val": ids[6:8], "holdout": ids[8:11]}  # ids[11] is left out
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(pinned))
    result = compile_run(examples=examples, splits=str(path), max_iterations=1).result
    assert result.split_sizes == {"train": 6, "val": 2, "test": 3}
    assert sorted(result.baseline.scores) == sorted(ids[8:11])
    assert any("1 dataset examples are in no split" in w for w in result.warnings)


@pytest.mark.parametrize(("data", "message"), [
    ({"train": ["a"], "test": ["zz"]}, "not in the dataset"),
    ({"train": ["a", "b"], "test": ["b"]}, "pinned to both 'train' and 'test'"),
    ({"train": ["a"], "eval": ["b"]}, "unknown split 'eval'"),
    ({"train": ["a"]}, "the 'test' split is missing"),
    (["a"], "expected an object"),
])
def test_bad_splits_files_are_one_line_errors(capsys, task, lms, tmp_path, data, message):
    rows = [{"id": x, "input": f"my invoice {x}", "output": "billing"} for x in "abcd"]
    dataset = tmp_path / "ids.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(data))
    code, _, err = cli(capsys, "optimize", dataset, task.prompt, RUN, "--splits-file", path, *task.flags)
    assert code == 2 and message in err and err.count("\n") == 1
    assert lms["fake/task"].fake_engine.calls == 0 and not task.run_dir.exists()


def test_cli_splits_file_is_honoured_and_kept_for_resume(capsys, task, lms, tmp_path):
    rows = [{"id": f"e{i}", "input": e.input, "output": e.output} for i, e in enumerate(routing_examples(4))]
    dataset = tmp_path / "ids.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "splits.json"
    path.write_text(json.dumps({"train": [f"e{i}" for i in range(7)], "test": [f"e{i}" for i in range(7, 12)]}))
    code, out, err = cli(capsys, "optimize", dataset, task.prompt, RUN, "--splits-file", path, *task.flags)
    assert code == 0, err
    assert "Train/val/test : 7 / 0 / 5 samples" in out
    config = task.store.get_run(task.store.list_runs()[-1].run_id).load_config()
    assert config["split_ids"]["test"] == [f"e{i}" for i in range(7, 12)]
    assert config["metadata"]["splits_file"] == str(path.resolve())


# --------------------------------------------------------------------------- dry run


def test_dry_run_with_targets_calls_no_model_and_estimates_the_benchmark(capsys, task, lms):
    code, out, err = cli(capsys, "optimize", task.data, task.prompt, RUN, "--target fake/strong",
                         "--max-metric-calls 30 --min-holdout-improvement 0.05 --dry-run", *task.flags)
    assert code == 0, err
    assert all(lm.fake_engine.calls == 0 for lm in lms.values()) and not task.run_dir.exists()
    assert "the best of fake/task, fake/strong on train+val" in out
    assert "20 to benchmark targets" in out  # 2 models x 10 train+val examples
    assert "(budget 30)" in out and "held-out improvement ≥ +0.0500" in out


@pytest.mark.parametrize(("flags", "budget", "enough", "message"), [
    # Two task models: each validation example costs two calls. Before: not refused, the run
    # directory written, then "run failed: metric-call budget spent: 0/5 used, 6 more needed".
    ("-m fake/task -m fake/strong -s auto", 3, 4,
     "a budget of 3 metric calls cannot score the starting prompt on the 2 validation examples (2 task models "
     "each); raise the budget (max_metric_calls)"),
    # Before: the baseline and a reasoning call paid for, then "iterative (0 iterations; stopped:
    # metric-call budget: 16 calls left, too few for the next evaluation (21 needed))".
    # The current prompt and its rewrite on the batch (8 train examples), the rewrite on validation.
    ("-m fake/task -s iterative", 19, 20,
     "a budget of 19 metric calls is too small for strategy 'iterative' here: its first step needs at least 18 "
     "search calls after the starting prompt's 2 on validation; raise the budget (max_metric_calls) or lower "
     "batch_size"),
    ("-m fake/task -m fake/strong -s structural", 39, 40,
     "a budget of 39 metric calls is too small for strategy 'structural' here: its first step needs at least 36 "
     "search calls after the starting prompt's 4 on validation (2 task models each); raise the budget "
     "(max_metric_calls) or lower batch_size"),
])
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_budget_below_the_first_step_is_refused_before_any_call_and_by_the_dry_run(
        capsys, task, lms, flags, budget, enough, message, dry_run):
    run = f"--metric exact --val-split 0.2 {flags}"
    code, _, err = cli(capsys, "optimize", task.data, task.prompt, run, f"--max-metric-calls {budget}",
                       "--dry-run" if dry_run else "", *task.flags)
    assert code == 2 and err.strip() == f"reflex-dspy: error: {message}"
    assert all(lm.fake_engine.calls == 0 for lm in lms.values()) and not task.run_dir.exists()
    code, out, err = cli(capsys, "optimize", task.data, task.prompt, run, f"--max-metric-calls {enough}",
                         "--dry-run" if dry_run else "", *task.flags)
    assert code == 0, err
    if "iterative" in flags and not dry_run:  # the minimum is exact for a rewrite: it pays for one step
        assert "Iterations     : 1\n" in out and f"Budget         : {enough} / {enough} search" in out


def test_dry_run_names_a_missing_api_key(capsys, task, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code, _, err = cli(capsys, "optimize", task.data, task.prompt, "-m openai/gpt-4o-mini --dry-run", *task.flags)
    assert code == 2 and "missing API keys: openai/gpt-4o-mini needs OPENAI_API_KEY" in err


# --------------------------------------------------------------------------- rate limits


def test_a_429_storm_slows_the_run_down_and_never_scores_zero():
    lock, active, peaks = threading.Lock(), [0], []

    def respond(system, messages):
        with lock:
            active[0] += 1
            peaks.append(active[0])
        time.sleep(0.01)
        with lock:
            active[0] -= 1
        return routing_respond(LABELLED, messages)

    storm = 8
    lm = fake_lm(respond, error=lambda n: RateLimitError("429 slow down") if n <= storm else None)
    program = program_from_prompt(INITIAL)
    notices = []
    ev = Evaluator(program, resolve_metric("exact"), task_lm=lm, max_workers=4,
                   retry=RetryPolicy(max_attempts=8, base_delay=0.005, max_delay=0.02))
    ev.on_notice = notices.append
    result = ev.evaluate(Candidate.from_program(program), routing_examples(8))
    assert result.n_failed == 0 and result.mean == 1.0  # every example scored, none as a 0
    assert ev.usage.rate_limits == storm and ev.usage.retries == storm
    assert ev.limit.lowest == 1 and notices[0] == "provider rate-limited (429): concurrency 4 → 2, retrying with backoff"
    assert max(peaks[: len(peaks) // 2]) <= 2  # after the storm, fewer calls run at once


# --------------------------------------------------------------------------- several task models


def test_several_task_models_are_scored_per_model_and_overall():
    models = {"weak": fake_lm(routing_respond), "strong": fake_lm(strong_respond)}
    result = compile_run(task_lm=models, max_iterations=1).result
    assert result.baseline.scores_by_model["strong"] == 1.0
    assert result.baseline.scores_by_model["weak"] < 1.0
    assert result.baseline.mean == pytest.approx(sum(result.baseline.scores_by_model.values()) / 2)
    assert result.final.scores_by_model == {"weak": 1.0, "strong": 1.0}
    assert result.models["task"] == "weak, strong"
    assert "  weak         : " in result.summary() and "→ 1.0000" in result.summary()
    # Every example ran on both models: metric calls count one per (example, model).
    assert models["weak"].fake_engine.calls == models["strong"].fake_engine.calls


def test_cli_repeatable_model_flag(capsys, task, lms):
    code, out, err = cli(capsys, "optimize", task.data, task.prompt, RUN, "-m fake/strong", *task.flags)
    assert code == 0, err
    assert "  fake/task" in out and "  fake/strong" in out
    config = task.store.get_run(task.store.list_runs()[-1].run_id).load_config()
    assert config["optimizer_config"]["_cli_models"] == ["fake/task", "fake/strong"]


# --------------------------------------------------------------------------- live status


class Recorder(Tracker):
    def __init__(self):
        self.phases, self.beats = [], []

    def on_status(self, phase, detail=""):
        self.phases.append(phase)

    def on_heartbeat(self, state):
        self.beats.append(state)


def slow_reasoner(system, messages):
    time.sleep(0.4)
    return ScriptedReasoner([LABELLED])(system, messages)


def test_status_heartbeat_shows_phase_budget_and_a_slow_reasoning_model(monkeypatch):
    monkeypatch.setattr(reflex_dspy.lifecycle, "HEARTBEAT_SECONDS", 0.05)
    monkeypatch.setattr(reflex_dspy.progress, "QUIET_SECONDS", 0.2)
    recorder = Recorder()
    stream = io.StringIO()
    from rich.console import Console

    console = reflex_dspy.progress.ConsoleTracker(Console(file=stream, force_terminal=False, width=200))
    opt = Reflex("exact", strategy="iterative", task_lm=fake_lm(routing_respond), reasoning_lm=fake_lm(slow_reasoner),
                 trackers=[recorder, console], track=False, max_iterations=1, max_metric_calls=100)
    opt.compile(program_from_prompt(INITIAL), trainset=routing_examples(4))
    assert recorder.phases == ["evaluating baseline", "searching", "evaluating best", "finalizing"]
    # The slow reasoning model's wait (a task call in flight can be caught too on a loaded machine).
    waiting = [b for b in recorder.beats if b["waiting_on"] == "reasoning model"]
    assert waiting and all(b["phase"] == "searching" and b["budget"] == 100 for b in waiting)
    assert max(b["waiting_seconds"] for b in waiting) >= 0.2
    text = stream.getvalue()
    assert "… searching · calls" in text and "/100" in text and "reasoning model thinking" in text


def test_optimize_help_documents_every_flag_grouped_by_purpose(capsys):
    code, out, _ = cli(capsys, "optimize --help")
    assert code == 0
    groups = ["models:", "target score", "scoring:", "search:", "budget:", "data and splits:", "resume:",
              "run record and tracking:", "promotion and output:"]
    positions = [out.index(g) for g in groups]
    assert positions == sorted(positions)
    flags = ("-m", "--target", "--verdict-results", "--threshold", "--metric", "--judge", "--judge-criteria",
             "-s", "--reasoning-model", "--reasoning-base-url", "--reasoning-api-key", "--source-model",
             "--max-iterations", "--train-split", "--val-split", "--early-stopping-patience", "--batch-size",
             "--full-eval-steps", "--eval-runs", "--max-workers", "--input-field", "--output-field", "--run-dir",
             "--resume", "--resume-from", "-o", "--results-json", "--mlflow-tracking-uri", "--mlflow-experiment",
             "--max-metric-calls", "--auto", "--min-holdout-improvement", "--splits-file", "--dry-run",
             "--force-output")
    missing = [f for f in flags if f"{f} " not in out and f"{f}," not in out]
    assert not missing


def test_config_rejects_a_negative_promotion_bar():
    with pytest.raises(UsageError, match="min_holdout_improvement"):
        Reflex("exact", min_holdout_improvement=-0.1)


def test_a_budget_that_cannot_score_the_starting_prompt_on_validation_is_refused_before_any_call():
    """Before: the baseline was paid for, then `BudgetExhausted` came out of compile."""
    task = fake_lm(routing_respond)
    opt = Reflex("exact", task_lm=task, reasoning_lm=fake_lm(lambda s, m: "x"), track=False, progress=False,
                 max_metric_calls=1, val_ratio=0.25)
    with pytest.raises(UsageError) as caught:
        opt.compile(program_from_prompt("Route it."), trainset=routing_examples())
    assert str(caught.value).startswith("a budget of 1 metric call cannot score the starting prompt on the ")
    assert task.fake_engine.calls == 0
