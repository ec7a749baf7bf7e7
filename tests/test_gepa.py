"""The gepa strategy: dspy.GEPA run under the run's splits, accounting and persistence.

The fake task model answers a message's team as a bare label only when the instructions name
that team (billing always), so each label GEPA's reflection adds to the instructions raises the
score. The fake reflection model is stateless: it reads the current instruction and the
metric's feedback from GEPA's reflection prompt and adds one team named in that feedback.
"""

from __future__ import annotations

import json
import re
import threading
import types

import dspy
import pytest
from conftest import LABELS, routing_examples, truth
from fakes import fake_lm
from strategy_kit import INITIAL, InterruptAt, comparable, run_strategy

from reflex_dspy import Reflex
from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.errors import BudgetExhausted, UsageError
from reflex_dspy.strategies.gepa import GEPA
from reflex_dspy.tracking.store import RunStore

EXTRA_TEXT_FEEDBACK = "(the answer is there, but with extra text)"  # the exact metric's feedback wording
UNREACHABLE = "greetings"  # messages no instruction makes the fake answer right: keeps scores below 1


def with_unreachable() -> list[dspy.Example]:
    """The routing examples plus two the fake always gets wrong, so no threshold stops the search."""
    extra = [dspy.Example(input=f"Customer {i}: {UNREACHABLE} from me ({i}).", output="general").with_inputs("input")
             for i in (90, 91)]
    return routing_examples(4) + extra


def named_teams(system: str, messages: list[dict]) -> str:
    """Bare label when the instructions name the message's team (billing always), else a sentence."""
    text = messages[-1]["content"]
    if UNREACHABLE in text:
        return "I cannot tell."
    label = truth(text)
    if label == "billing" or re.search(rf"\b{label}\b", system.lower()):
        return label
    return f"This is about {label}."


class Reflector:
    """The fake reflection model: adds one team the feedback says was expected but is not named yet."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, system: str, messages: list[dict]) -> str:
        text = messages[-1]["content"]
        with self._lock:
            self.prompts.append(text)
        current = text.split("[[ ## current_instruction ## ]]\n", 1)[1].split("\n\n[[ ## examples_with_feedback", 1)[0]
        expected = re.findall(r'expected \\"(\w+)\\"', text)
        missing = sorted({t for t in expected if t in LABELS and t not in current.lower()})
        addition = f" Messages about {missing[0]} go to {missing[0]}." if missing else " Be brief."
        return json.dumps({"new_instruction": current.strip() + addition + " Answer with the team name only."})


class CountingTask:
    """`named_teams`, counting every call the task model receives."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, system: str, messages: list[dict]) -> str:
        with self._lock:
            self.calls += 1
        return named_teams(system, messages)


SMALL = dict(examples=routing_examples(4), train_ratio=1.0, val_ratio=0.0, max_iterations=3, track=False)


def gepa_run(strategy: GEPA, reflector: Reflector | None = None, **kwargs):
    options = {**SMALL, "respond": named_teams, **kwargs}
    return run_strategy(strategy, reflector or Reflector(), **options).result


def test_finds_the_better_instruction_and_records_gepa_iterations():
    reflector = Reflector()
    result = gepa_run(GEPA(max_metric_calls=60), reflector)

    assert result.baseline.mean == pytest.approx(1 / 3)
    assert result.final.mean == pytest.approx(1.0)
    assert reflector.prompts, "GEPA never asked the reflection model"
    chosen = result.iterations[result.selected_iteration - 1]
    assert all(team in chosen.candidate["predictors"]["predict"]["instructions"] for team in ("shipping", "technical"))
    for record in result.iterations:
        assert (record.phase, record.strategy) == ("gepa", "gepa")
        assert record.change_summary.startswith("GEPA candidate ")
        assert record.delta == pytest.approx(record.score - 1 / 3)  # parent = the initial prompt on the batch
        assert record.candidate["predictors"]["predict"]["instructions"] != INITIAL
    first = result.iterations[0].details
    assert first["gepa"]["metric_calls"] <= 60
    assert first["gepa"]["pareto_examples"] + first["gepa"]["reflection_examples"] == 12  # the train split


def test_gepa_and_dspy_progress_bars_stay_off_the_console(capfd):
    """DSPy's GEPA hard-wires two tqdm bars ("GEPA Optimization", and `bootstrap_trace_data`'s
    "Average Metric" on stdout, drawn from DSPy's worker threads): before, every reflective step
    printed them between the run's progress lines and into the user's stdout."""
    import sys

    stdout, stderr = sys.stdout, sys.stderr
    result = gepa_run(GEPA(max_metric_calls=60), max_workers=2)
    assert result.iterations and sys.stdout is stdout and sys.stderr is stderr
    out, err = capfd.readouterr()
    assert "Average Metric" not in out + err and "GEPA Optimization" not in out + err
    print("the user's own line")  # printing works as before after the run
    assert capfd.readouterr().out == "the user's own line\n"


def test_candidates_are_emitted_best_first_then_the_search_stops():
    result = gepa_run(GEPA(max_metric_calls=80), examples=with_unreachable(), max_iterations=10)

    scores = [r.details["gepa_score"] for r in result.iterations]
    assert len(scores) >= 2
    assert scores == sorted(scores, reverse=True)
    assert [r.details["rank"] for r in result.iterations] == list(range(1, len(scores) + 1))
    assert result.stop_reason == f"strategy finished: all {len(scores)} GEPA candidates emitted"


def test_every_gepa_call_is_in_the_run_usage():
    task, reflector = CountingTask(), Reflector()
    result = gepa_run(GEPA(max_metric_calls=60), reflector, respond=task)

    gepa = result.iterations[0].details["gepa"]
    assert 0 < gepa["metric_calls"] <= 60
    assert result.usage["lm_calls"] == task.calls  # GEPA's rollouts included, from every thread
    assert result.usage["reasoning_calls"] == len(reflector.prompts) > 0
    assert result.usage["reasoning_tokens"] > 0
    assert result.usage["search_calls"] >= gepa["metric_calls"]


def test_run_budget_caps_gepa_and_leaves_room_to_score_its_candidates():
    result = gepa_run(GEPA(), max_metric_calls=60, batch_size=4)  # GEPA's "light" alone would want hundreds

    assert result.usage["search_calls"] <= 60
    assert result.iterations, "GEPA spent the budget its candidates needed"
    gepa = result.iterations[0].details["gepa"]
    assert gepa["budget"] == "auto=light"
    assert gepa["metric_calls"] <= gepa["limit"] < 60


def test_a_small_budget_reserves_room_for_one_candidate_not_three():
    """40 calls cannot hold GEPA's step plus the scoring of 3 candidates; it can with 1 (it used to stop)."""
    result = gepa_run(GEPA(), max_metric_calls=40, batch_size=4)
    assert len(result.iterations) == 1
    assert result.usage["search_calls"] <= 40


def test_a_budget_too_small_for_one_gepa_step():
    task = CountingTask()
    with pytest.raises(UsageError, match="too small for one GEPA step"):
        gepa_run(GEPA(max_metric_calls=5), respond=task)
    # Before: the baseline was paid for, then "stopped: metric-call budget spent" with calls left.
    with pytest.raises(UsageError) as caught:
        gepa_run(GEPA(), max_metric_calls=20, respond=task)
    assert task.calls == 0  # both before any model call
    assert str(caught.value) == ("a budget of 20 metric calls is too small for strategy 'gepa' here: its first "
                                 "step needs at least 54 search calls after the starting prompt's 0 on validation; raise "
                                 "the budget (max_metric_calls) or lower batch_size")
    # Where the calls left run short all the same, the stop says why, not "budget spent".
    ctx = types.SimpleNamespace(budget_left=48, config=types.SimpleNamespace(max_iterations=10))
    with pytest.raises(BudgetExhausted) as short:
        GEPA()._limit(ctx, 1, 21, 10)
    assert short.value.stop_reason == ("metric-call budget too small for GEPA: 48 metric calls left: too few for "
                                       "one GEPA step (26) while keeping 42 to score its candidate")


def test_metric_feedback_reaches_the_reflection_prompt():
    reflector = Reflector()
    gepa_run(GEPA(max_metric_calls=60), reflector)

    assert any(EXTRA_TEXT_FEEDBACK in prompt for prompt in reflector.prompts)
    assert not any("This trajectory got a score of" in prompt for prompt in reflector.prompts)


@pytest.mark.parametrize("at", [1, 2])
def test_resume_does_not_run_gepa_again(tmp_path, at):
    """at=2: resumed from the checkpoint after GEPA ran; at=1: before it, so GEPA's own log resumes."""
    options = {**SMALL, "track": True, "respond": named_teams, "max_iterations": 4, "examples": with_unreachable()}
    reference = run_strategy(GEPA(max_metric_calls=80), Reflector(), run_dir=tmp_path / "a", **options).result
    assert len(reference.iterations) >= 2
    first = Reflector()
    with pytest.raises(KeyboardInterrupt):
        run_strategy(GEPA(max_metric_calls=80), first, run_dir=tmp_path / "b", trackers=(InterruptAt(at),),
                     **options)
    (run,) = RunStore(tmp_path / "b").list_runs()
    again = Reflector()
    resumed = run_strategy(GEPA(max_metric_calls=80), again, run_dir=tmp_path / "b", resume=run.run_id,
                           **options).result

    assert first.prompts and not again.prompts
    assert (run.path / "strategy" / "gepa" / "gepa_state.bin").is_file()
    if at == 2:
        assert comparable(resumed) == comparable(reference)
        return
    # GEPA resuming from its log scores the seed on its Pareto set again before noticing it is
    # done: paid again, so counted again, and nothing else.
    pareto = resumed.iterations[0].details["gepa"]["pareto_examples"]
    assert resumed.iterations[0].details["gepa"]["resumed_rescoring"] == pareto
    usage = dict(reference.usage)
    for key in ("metric_calls", "search_calls", "lm_calls"):
        usage[key] += pareto
    assert resumed.usage["eval_tokens"] > usage.pop("eval_tokens")
    assert comparable(resumed) == {**comparable(reference), "usage": {**usage, "eval_tokens": resumed.usage["eval_tokens"]}}


def test_budget_parameters():
    assert GEPA().get_params()["auto"] == "light"
    assert GEPA(auto="heavy").auto == "heavy"
    only_calls = GEPA(max_metric_calls=40)
    assert (only_calls.auto, only_calls.max_metric_calls) == (None, 40)
    with pytest.raises(ValueError, match="not both"):
        GEPA(auto="light", max_metric_calls=40)
    with pytest.raises(ValueError, match="needs a budget"):
        GEPA(auto=None)
    with pytest.raises(ValueError, match="auto must be one of"):
        GEPA(auto="extreme")
    assert json.dumps(GEPA().get_params()) and isinstance(GEPA().get_params()["auto"], str)


class Pipeline(dspy.Module):
    """Two prompts in a row: a fixed copier, then the router being optimized."""

    def __init__(self) -> None:
        super().__init__()
        self.copy = program_from_prompt("Copy the message exactly.")
        self.route = program_from_prompt(INITIAL)

    def forward(self, input: str) -> dspy.Prediction:
        return self.route(input=self.copy(input=input).output)


def pipeline_respond(system: str, messages: list[dict]) -> str:
    if system == "Copy the message exactly.":
        return messages[-1]["content"]
    return named_teams(system, messages)


def test_gepa_only_changes_the_predictors_the_run_optimizes():
    reflector = Reflector()
    opt = Reflex("exact", strategy=GEPA(max_metric_calls=60), task_lm=fake_lm(pipeline_respond),
                 reasoning_lm=fake_lm(reflector), optimize=["route.predict"], max_workers=2,
                 train_ratio=1.0, val_ratio=0.0, max_iterations=2, track=False, score_threshold=1.0)
    program = opt.compile(Pipeline(), trainset=routing_examples(4))

    assert program.result.final.mean == pytest.approx(1.0)
    assert program.copy.predict.signature.instructions == "Copy the message exactly."
    assert all("Copy the message exactly." not in p.split("[[ ## examples_with_feedback")[0]
               for p in reflector.prompts)
