"""Issue 20's pieces: a PDO round scored in one evaluation, the sampler aware of duels in flight,
the run's inputs resolved once, one records reader."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
from conftest import routing_examples, routing_respond
from fakes import fake_lm

from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.candidate import Candidate
from reflex_dspy.config import OptimizerConfig
from reflex_dspy.data import example_id, read_records
from reflex_dspy.errors import BudgetExhausted, UsageError
from reflex_dspy.evaluation import Evaluator
from reflex_dspy.metrics import resolve_metric
from reflex_dspy.run_inputs import RunInputs
from reflex_dspy.strategies.pdo.ranking import Duel, WinMatrix
from reflex_dspy.strategies.pdo.sampler import double_thompson


def _evaluator(budget: int | None = None):
    program = program_from_prompt("Say which team should handle the message.")
    lm = fake_lm(routing_respond)
    ev = Evaluator(program, resolve_metric("exact"), task_lm=lm, max_workers=4, budget=budget)
    return ev, Candidate.from_program(program), lm


def test_evaluate_jobs_scores_each_candidate_on_its_own_examples_paying_each_pair_once():
    ev, a, lm = _evaluator()
    b = a.with_instructions("predict", "Answer with one word: billing, shipping or technical.")
    examples = routing_examples(2)  # 6
    first, second = examples[:4], examples[2:]  # overlap: examples 2 and 3
    ra1, rb, ra2 = ev.evaluate_jobs([(a, first), (b, second), (a, second)])
    assert lm.fake_engine.calls == 6 + 4  # a on all six (once each), b on its four
    assert list(ra1.results) == [example_id(e) for e in first]
    assert list(ra2.results) == [example_id(e) for e in second]
    assert list(rb.results) == [example_id(e) for e in second] and rb.mean == 1.0
    # The overlap is counted once, with the request that asked for it first.
    assert (ra1.new_calls, ra2.new_calls, ra2.cache_hits) == (4, 2, 0)
    assert ev.evaluate_many([a], first)[0].cache_hits == 4  # and the run cache has it all


def test_evaluate_jobs_checks_the_budget_for_the_whole_round_first():
    ev, a, lm = _evaluator(budget=5)
    b = a.with_instructions("predict", "Be brief.")
    examples = routing_examples(1)  # 3
    with pytest.raises(BudgetExhausted, match="6 more needed"):
        ev.evaluate_jobs([(a, examples), (b, examples)])
    assert lm.fake_engine.calls == 0  # nothing spent past the check


def test_duels_in_flight_are_not_asked_again_and_their_prompts_are_not_fresh():
    ids = ["p0", "p1", "p2", "p3"]
    empty = WinMatrix(ids, [])
    rng = random.Random(0)
    first, second = double_thompson(ids, empty, 1.2, rng)
    assert first == "p0"  # never dueled: goes first
    nxt = double_thompson(ids, empty, 1.2, rng, pending=[(first, second)])
    assert nxt[0] not in (first, second)  # the pending duel's prompts are no longer fresh
    # All played: a pending pair is avoided while another rival is allowed.
    played = WinMatrix(ids, [Duel(a, b, 2, 2, 0) for i, a in enumerate(ids) for b in ids[i + 1:]])
    pending = [("p0", b) for b in ("p1", "p2")]
    for seed in range(20):
        a, b = double_thompson(ids, played, 1.2, random.Random(seed), pending=pending)
        assert a != b and not (a == "p0" and b in ("p1", "p2"))


def test_run_inputs_resolve_once_with_the_lifecycles_errors():
    lm = fake_lm(routing_respond)
    config = OptimizerConfig.build(strategy="iterative")
    made = []

    def make(metric):
        made.append(metric)
        return "strategy"

    inputs = RunInputs.resolve(metric="exact", config=config, make_strategy=make, task_lm=lm, run_dir="x")
    assert inputs.reasoning_lm is lm and inputs.task_lm is lm  # no reasoning model: the task model
    assert made == [inputs.metric] and callable(inputs.metric) and inputs.strategy == "strategy"
    assert (inputs.run_dir, inputs.track, inputs.trackers) == ("x", True, ())
    with pytest.raises(dataclasses.FrozenInstanceError):  # a run cannot change what it started with
        inputs.track = False  # type: ignore[misc]
    with pytest.raises(UsageError, match="a metric is required"):
        RunInputs.resolve(metric=None, config=config, make_strategy=make, task_lm=lm)


def test_read_records_names_where_each_record_came_from(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"input": "x"}\n\n{"input": "y"}\n')
    array = tmp_path / "b.json"
    array.write_text(json.dumps([{"input": "x"}]))
    table = tmp_path / "c.csv"
    table.write_text("input,output\nx,1\n")
    assert read_records(jsonl, "inputs") == [(f"{jsonl}:1", {"input": "x"}), (f"{jsonl}:3", {"input": "y"})]
    assert read_records(array, "inputs") == [(f"{array}[0]", {"input": "x"})]
    assert read_records(table, "dataset") == [(f"{table}:2", {"input": "x", "output": "1"})]
    with pytest.raises(UsageError, match=r"c\.csv:1: invalid JSON"):  # inputs files are JSON only
        read_records(table, "inputs", tables=False)


def test_evaluate_groups_shares_one_pool_and_charges_only_the_budgeted_group():
    """The baseline on test (reporting) and the initial candidate on val (search) in one call."""
    from reflex_dspy.eval_requests import Group

    ev, a, lm = _evaluator(budget=3)
    test, val = routing_examples(2)[:4], routing_examples(2)[4:]  # 4 and 2
    (on_test,), (on_val,) = ev.evaluate_groups([Group([(a, test)], budgeted=False), Group([(a, val)])])
    assert list(on_test.results) == [example_id(e) for e in test] and list(on_val.results) == [example_id(e) for e in val]
    assert (lm.fake_engine.calls, ev.usage.metric_calls, ev.usage.search_calls) == (6, 6, 2)
    with pytest.raises(BudgetExhausted):  # 2 + 2 more > 3: refused before anything runs
        ev.evaluate_groups([Group([(a.with_instructions("predict", "Be brief."), val)])])
    assert ev.usage.search_calls == 2 and lm.fake_engine.calls == 6


def test_work_beside_an_evaluation_sees_its_budget_reserved_and_its_error_waits_for_the_accounts():
    from reflex_dspy.eval_requests import Group

    ev, a, lm = _evaluator(budget=10)
    examples = routing_examples(1)  # 3
    seen = []
    ev.evaluate_groups([Group([(a, examples)])], beside=lambda: seen.append(ev.budget_left))
    assert seen == [7]  # the start of a strategy reads the budget as it will be after the evaluation

    def fails():
        raise UsageError("the strategy could not start")

    b = a.with_instructions("predict", "Be brief.")
    with pytest.raises(UsageError, match="could not start"):
        ev.evaluate_groups([Group([(b, examples)])], beside=fails)
    assert ev.usage.search_calls == 6 and lm.fake_engine.calls == 6  # what was paid still counts


def test_concurrent_evaluations_never_spend_past_the_budget_together():
    import threading

    ev, a, lm = _evaluator(budget=4)
    examples = routing_examples(1)  # 3 each: one of the two fits
    candidates = [a, a.with_instructions("predict", "Be brief.")]
    outcomes = []

    def run(c):
        try:
            ev.evaluate(c, examples)
            outcomes.append("ok")
        except BudgetExhausted:
            outcomes.append("refused")

    threads = [threading.Thread(target=run, args=(c,)) for c in candidates]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok", "refused"] and ev.usage.search_calls == 3 == lm.fake_engine.calls


def test_a_pdo_round_scores_its_champion_on_val_too_so_the_lifecycle_pays_no_val_call():
    from reflex_dspy import Reflex
    from reflex_dspy.tracking.base import Tracker

    class Jobs(Tracker):  # each evaluation's label and the calls it had to make
        def __init__(self):
            self.planned = {}

        def on_progress(self, label, done, total):
            if done == 0:
                self.planned[label] = total

    jobs = Jobs()
    reasoner = fake_lm(lambda s, m: json.dumps({
        "failure_patterns": "-", "change_summary": "-",
        "revised_instructions": f"Answer with one word: billing, shipping or technical ({len(m[-1]['content'])})."}))
    opt = Reflex("exact", strategy="pdo", task_lm=fake_lm(routing_respond), reasoning_lm=reasoner, max_workers=4,
                 max_iterations=2, early_stopping_patience=0, score_threshold=1.0, track=False, trackers=[jobs])
    result = opt.compile(program_from_prompt("Say which team should handle the message."),
                         trainset=routing_examples(8)).result
    first = result.iterations[0]
    assert first.change_summary.startswith("new champion") and first.val_score is not None
    assert "baseline on test, pass 1 + val: initial" in jobs.planned  # one pool for both
    assert jobs.planned["iter 1: val"] == 0, jobs.planned  # scored with the champion's batch
