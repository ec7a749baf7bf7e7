"""Every strategy in pipeline mode, on the fake shop agent: only the marked node ever changes."""

from __future__ import annotations

import json

import pytest
from test_pipeline import EXTRACT, GOOD, ShopAgent, compile_shop, predictor_states

from reflex_dspy.tracking.store import RunStore


def reasoner(system: str, messages: list[dict]) -> str:
    """A stateless fake reasoning model that answers every meta-prompt the strategies send."""
    text = system + "\n".join(m["content"] for m in messages)
    reply = {
        "failure_patterns": "the answer ignores the tool",
        "change_summary": "quote the tool result",
        "revised_instructions": GOOD,
        "restructured_instructions": GOOD,
        "variant_instructions": GOOD,
        "mutated_instructions": GOOD,
        "instructions": GOOD,
        "new_instruction": GOOD,
        "winner": "A",
        "reasoning": "A quotes the tool",
        "next_axis": "fewshot",
        "axis": "fewshot",
        "selected": [1, 2],
        "explanation": "diverse",
    }
    fields = [f for f in reply if f"`{f}`" in text or f'"{f}"' in text]
    return json.dumps({k: reply[k] for k in fields} or reply)


CASES = {
    "iterative": {},
    "structural": {"variants_per_round": 3},
    "fewshot": {"max_examples": 2, "candidate_pool_size": 4},
    "pdo": {"initial_pool_size": 3, "duels_per_round": 1, "samples_per_duel": 4, "mutation_frequency": 0},
    "auto": {"max_phases": 2, "min_phases": 1},
    "gepa": {"max_metric_calls": 40},
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_strategy_changes_only_the_marked_node(name, tmp_path):
    if name == "gepa":
        pytest.importorskip("gepa")
    program = ShopAgent(mark=True)
    before = predictor_states(program)
    optimized = compile_shop(
        program, tmp_path, strategy=name, reasoner=reasoner, extra_kwargs=CASES[name], max_iterations=2
    )
    result = optimized.result
    assert result.iterations and result.final.mean is not None
    assert predictor_states(optimized)["extract"] == before["extract"] == (EXTRACT, [])
    records = RunStore(tmp_path).get_run(result.run_id).load_iterations()
    for record in records:
        assert set(record.candidate["predictors"]) == {"answer"}
        assert set(record.details["changed_predictors"]) <= {"answer"}
    assert any(r.details["changed_predictors"] == ["answer"] for r in records)  # the strategy did change it
    for entry in optimized.candidate_programs:
        assert predictor_states(entry["program"])["extract"] == (EXTRACT, [])


def test_fewshot_demos_come_from_the_marked_nodes_traces(tmp_path):
    optimized = compile_shop(
        ShopAgent(mark=True),
        tmp_path,
        strategy="fewshot",
        reasoner=reasoner,
        extra_kwargs=CASES["fewshot"],
        max_iterations=1,
    )
    record = optimized.result.iterations[0]
    demos = record.candidate["predictors"]["answer"]["demos"]
    assert demos, record.reasoning
    for demo in demos:  # the answer step's own inputs and output, as the trace recorded them
        assert set(demo) == {"question", "tool_result", "answer"} and demo["answer"] == demo["tool_result"]
    assert record.details["changed_predictors"] == ["answer"]
