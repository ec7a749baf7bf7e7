"""The one evaluator: cache, accounting, parallelism, retries, failures, budget."""

from __future__ import annotations

import time

import pytest
from conftest import routing_examples, routing_respond
from dspy.lm15 import AuthError, RateLimitError, ServerError
from fakes import fake_lm

from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.candidate import Candidate
from reflex_dspy.data import example_id
from reflex_dspy.errors import BudgetExhausted, ProviderAuthError
from reflex_dspy.evaluation import Evaluator, ReplayedFailure
from reflex_dspy.metrics import resolve_metric
from reflex_dspy.retries import RetryPolicy, classify_error

FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.002)
LABELLED = "Answer with one word: billing, shipping or technical."


def make(respond=routing_respond, **kwargs):
    program = program_from_prompt("Say which team should handle the message.")
    lm = fake_lm(respond, error=kwargs.pop("error", None))
    ev = Evaluator(program, resolve_metric("exact"), task_lm=lm, retry=FAST_RETRY, **kwargs)
    return ev, Candidate.from_program(program), lm


def test_scores_by_example_id_and_cache_never_pays_twice():
    ev, cand, lm = make()
    examples = routing_examples(4)
    first = ev.evaluate(cand, examples)
    assert first.n == 12 and first.mean == pytest.approx(1 / 3)
    assert list(first.results) == [example_id(ex) for ex in examples]
    calls = lm.fake_engine.calls
    again = ev.evaluate(cand, examples)
    assert lm.fake_engine.calls == calls  # nothing paid again
    assert again.cache_hits == 12 and again.scores == first.scores
    better = ev.evaluate(cand.with_instructions("predict", LABELLED), examples)
    assert better.mean == 1.0
    assert lm.fake_engine.calls == calls + 12
    assert ev.usage.metric_calls == 24 and ev.usage.cache_hits == 12
    assert ev.usage.lm_calls == 24 and ev.usage.eval_tokens > 0


def test_worst_examples_carry_outputs_and_feedback():
    ev, cand, _ = make()
    result = ev.evaluate(cand, routing_examples(2))
    worst = result.worst(2)
    assert all(r.score == 0.0 for r in worst)
    assert worst[0].output["output"].startswith("This is about")
    assert worst[0].feedback and "expected" in worst[0].feedback
    assert worst[0].trace and worst[0].trace[0]["predictor"] == "predict"


def test_transient_errors_are_retried_then_succeed():
    # With one worker, every odd-numbered call is rate-limited and its retry succeeds.
    def flaky(call_no):
        return RateLimitError("429 slow down") if call_no % 2 == 1 else None

    ev, cand, lm = make(error=flaky, max_workers=1)
    result = ev.evaluate(cand, routing_examples(2))
    assert result.n_failed == 0 and result.mean == pytest.approx(1 / 3)
    assert ev.usage.retries == 6


def test_persistent_failures_are_recorded_as_failed_not_zero():
    ev, cand, _ = make(error=lambda n: ServerError("503 unavailable"))
    result = ev.evaluate(cand, routing_examples(1))
    assert result.n_failed == 3 and result.mean is None and result.scores == {}
    assert all("ServerError" in r.error for r in result.results.values())
    assert ev.usage.failed == 3 and ev.usage.retries == 3 * (FAST_RETRY.max_attempts - 1)
    # Failures are not cached: a later evaluation tries again.
    assert ev.evaluate(cand, routing_examples(1)).n_failed == 3


def test_auth_errors_stop_the_run():
    ev, cand, _ = make(error=lambda n: AuthError("401 invalid api key"))
    with pytest.raises(ProviderAuthError, match="refused the credentials"):
        ev.evaluate(cand, routing_examples(1))


def test_classify_error_by_status_and_name():
    class Http(Exception):
        def __init__(self, status):
            self.status_code = status

    assert classify_error(Http(429)) == "transient"
    assert classify_error(Http(503)) == "transient"
    assert classify_error(Http(403)) == "auth"
    assert classify_error(ValueError("bad")) == "fatal"
    wrapped = RuntimeError("outer")
    wrapped.__cause__ = Http(401)
    assert classify_error(wrapped) == "auth"


def test_budget_refuses_to_overspend_and_excludes_reporting_calls():
    ev, cand, _ = make(budget=10)
    examples = routing_examples(4)  # 12 examples
    ev.evaluate(cand, examples, budgeted=False)  # reporting: not counted
    assert ev.budget_left == 10
    with pytest.raises(BudgetExhausted):
        ev.evaluate(cand.with_instructions("predict", LABELLED), examples)
    ev.evaluate(cand.with_instructions("predict", LABELLED), examples[:10])
    assert ev.budget_left == 0
    ev.evaluate(cand.with_instructions("predict", LABELLED), examples[:10])  # all cached: free


def test_parallel_workers_overlap_slow_calls():
    def slow(system, messages):
        time.sleep(0.05)
        return routing_respond(system, messages)

    ev, cand, _ = make(respond=slow, max_workers=8)
    start = time.perf_counter()
    ev.evaluate(cand, routing_examples(8))  # 24 calls of 50 ms
    assert time.perf_counter() - start < 24 * 0.05 / 2


def test_journal_replay_pays_nothing_twice_and_counts_pending_entries_once():
    ev, cand, lm = make()
    journal: list[dict] = []
    ev.on_paid = journal.append
    ev.evaluate(cand, routing_examples(1))
    state = ev.state_dict()  # a checkpoint after the first three examples
    ev.evaluate(cand, routing_examples(2))  # three more, paid after the checkpoint
    assert len(journal) == 6 and state["paid_entries"] == 3

    ev2, _, lm2 = make()
    ev2.replay(journal, state)
    assert ev2.usage.metric_calls == 3  # the checkpoint's totals
    again = ev2.evaluate(cand, routing_examples(2))
    assert lm2.fake_engine.calls == 0
    # The three entries past the checkpoint were paid by the interrupted process: they count
    # as paid calls, once, and the totals end equal to the uninterrupted evaluator's.
    assert again.cache_hits == 3
    assert ev2.usage.metric_calls == ev.usage.metric_calls == 6
    assert ev2.usage.eval_tokens == ev.usage.eval_tokens


def test_settle_counts_replayed_entries_that_were_never_used():
    ev, cand, _ = make()
    journal: list[dict] = []
    ev.on_paid = journal.append
    ev.evaluate(cand, routing_examples(1))
    ev2, _, _ = make()
    ev2.replay(journal, {"usage": {}, "paid_entries": 0})
    ev2.settle()
    assert ev2.usage.metric_calls == 3 and ev2.usage.eval_tokens == ev.usage.eval_tokens


def test_reasoned_replies_are_journaled_and_replayed_including_failures():
    ev, _, _ = make()
    journal: list[dict] = []
    ev.on_paid = journal.append
    calls = []

    def good():
        calls.append(1)
        return {"answer": "x"}, False

    def bad():
        calls.append(1)
        raise ValueError("could not parse the reply")

    assert ev.reasoned({"q": 1}, good) == ({"answer": "x"}, False)
    with pytest.raises(ValueError):
        ev.reasoned({"q": 2}, bad)
    assert ev.reasoned({"q": 1}, good) == ({"answer": "x"}, False)  # cached within the run
    assert len(calls) == 2 and [e["kind"] for e in journal] == ["reasoning", "reasoning"]

    ev2, _, _ = make()
    ev2.replay(journal, {"usage": {}, "paid_entries": 0})
    assert ev2.reasoned({"q": 1}, good) == ({"answer": "x"}, False)
    with pytest.raises(ReplayedFailure, match="ValueError: could not parse"):
        ev2.reasoned({"q": 2}, bad)
    assert len(calls) == 2


def test_evaluate_many_shares_one_pool_dedups_identical_candidates_and_checks_the_budget_first():
    lm = fake_lm(routing_respond)
    evaluator = Evaluator(program_from_prompt("Answer."), resolve_metric("exact"), task_lm=lm, max_workers=4,
                          budget=30)
    examples = routing_examples(4)  # 12
    a = Candidate.from_program(program_from_prompt("Answer."))
    b = a.with_instructions("predict", "Answer with billing, shipping or technical.")
    ra, rb, ra2 = evaluator.evaluate_many([a, b, a], examples)
    assert lm.fake_engine.calls == 24 and ra is ra2  # the duplicate ran once
    assert rb.mean == 1.0 and ra.mean == pytest.approx(1 / 3)
    c = a.with_instructions("predict", "Be verbose.")
    with pytest.raises(BudgetExhausted, match="30 used|24/30 used"):
        evaluator.evaluate_many([c, c.with_instructions("predict", "x")], examples)
    assert lm.fake_engine.calls == 24  # nothing spent past the check


def test_a_prompt_file_written_from_a_candidate_keeps_its_demos():
    plain = Candidate.from_program(program_from_prompt("Route the message."))
    assert plain.render() == "Route the message."
    shown = plain.with_demos("predict", [{"input": "my invoice", "output": "billing"}]).render()
    assert shown == "Route the message.\n\nExamples:\n\ninput: my invoice\noutput: billing"


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_each_measurement_pass_asks_the_model_again(temperature):
    """Before: at temperature 0, passes 2..N of `eval_runs` read pass 1's replies from DSPy's cache
    (no call made) and the summary printed "0.5000 ± 0.0000 (3 runs)" for one run."""
    import uuid

    import dspy
    from fakes import FakeEngine

    from reflex_dspy.measurement import measure

    engine = FakeEngine(lambda system, messages: "billing" if engine.calls % 2 else "shipping")
    lm = dspy.LM(f"fake/cached-{uuid.uuid4().hex[:8]}", engine=engine, cache=True, num_retries=0)
    program = program_from_prompt("Say which team should handle the message.")
    evaluator = Evaluator(program, resolve_metric("exact"), task_lm=lm, max_workers=1, temperature=temperature)
    examples = [e for e in routing_examples(3) if e.output == "billing"]  # 3 examples, all "billing"
    measurement, _ = measure(evaluator, Candidate.from_program(program), "baseline", "test", examples, 3)
    assert engine.calls == 3 * len(examples)  # every pass asked the model
    assert measurement.n_runs == 3 and measurement.std > 0  # the answers flip call by call: passes differ
