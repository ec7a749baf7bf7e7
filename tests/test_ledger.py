"""Issue 20 item 3: the run's accounts (`Ledger`) apart from the Evaluator, shared with the
Proposer, and read by strategies only through `SearchContext` (`metric`, `budget_left`, `spent`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import routing_examples, routing_respond
from fakes import fake_lm

from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.candidate import Candidate
from reflex_dspy.errors import BudgetExhausted
from reflex_dspy.evaluation import Evaluator
from reflex_dspy.ledger import Ledger
from reflex_dspy.metrics import resolve_metric
from reflex_dspy.proposals import Proposer
from reflex_dspy.search import SearchContext

STRATEGIES = Path(__file__).resolve().parent.parent / "reflex_dspy" / "strategies"


def _context(budget: int | None) -> tuple[SearchContext, Candidate]:
    program = program_from_prompt("Say which team should handle the message.")
    metric = resolve_metric("exact")
    evaluator = Evaluator(program, metric, task_lm=fake_lm(routing_respond), budget=budget)
    ctx = SearchContext(student=program, trainset=routing_examples(4), evaluator=evaluator,
                        proposer=Proposer(fake_lm(lambda _: "{}"), evaluator), config=None,
                        predictor_names=["predict"])
    return ctx, Candidate.from_program(program)


def test_search_context_reads_metric_budget_and_spent_from_the_one_ledger():
    ctx, cand = _context(budget=10)
    assert ctx.metric is ctx.evaluator.metric and (ctx.budget_left, ctx.spent) == (10, 0)
    ctx.evaluate(cand, routing_examples(2)[:2])  # 2 examples, one task model: 2 calls
    assert (ctx.budget_left, ctx.spent) == (8, 2) and ctx.evaluator.ledger.usage.search_calls == 2
    ctx.count_external(metric_calls=5, lm_calls=5)  # an optimizer we delegate to (GEPA)
    assert (ctx.budget_left, ctx.spent) == (3, 7) and ctx.evaluator.usage.lm_calls == 7
    with pytest.raises(BudgetExhausted, match="7/10 used, 4 more needed"):
        ctx.evaluate(cand, routing_examples(2)[2:6])


def test_the_ledger_alone_replays_counts_pending_once_and_settles():
    paid = [{"key": ["fp", "a", 0.0, 0], "result": {"example_id": "a", "score": 1.0}, "calls": 1, "tokens": 7},
            {"kind": "reasoning", "key": "d1", "fields": {"x": 1}, "truncated": False, "error": None,
             "calls": 1, "tokens": 30}]
    ledger = Ledger(budget=None)
    ledger.replay(paid, {"usage": {}, "paid_entries": 0})
    assert ledger.usage.metric_calls == 0 and set(ledger.pending) == {("fp", "a", 0.0, 0), "d1"}
    assert ledger.reply("d1")["fields"] == {"x": 1}  # used: counted now, once
    assert ledger.reply("d1") is not None and ledger.usage.reasoning_calls == 1
    ledger.settle()  # the unused scored pair counts at the checkpoint
    assert (ledger.usage.metric_calls, ledger.usage.eval_tokens, ledger.pending) == (1, 7, {})
    assert ledger.paid_entries == 2 and ledger.budget_left is None


def test_the_proposer_files_reasoning_replies_in_the_evaluators_ledger():
    ctx, _ = _context(budget=None)
    journal: list[dict] = []
    ctx.evaluator.on_paid = journal.append
    fields, _ = ctx.evaluator.reasoned({"k": 1}, lambda: ({"answer": "x"}, False))
    assert fields == {"answer": "x"} and journal[0]["kind"] == "reasoning"
    assert journal[0]["key"] in ctx.evaluator.ledger.replies and ctx.evaluator.ledger.paid_entries == 1


def test_no_strategy_reaches_into_the_evaluator():
    offenders = [f"{path.relative_to(STRATEGIES)}:{n}" for path in sorted(STRATEGIES.rglob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if re.search(r"\bevaluator\.[A-Za-z_]", line.split("#")[0])]
    assert offenders == []
