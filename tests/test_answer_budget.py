"""Issue 21: the embedded task model's answers are capped when the expected outputs are short labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dspy
import pytest
from conftest import ScriptedReasoner, routing_examples
from fakes import fake_lm

from reflex_dspy import Reflex, answer_budget
from reflex_dspy import llama_engine as eng
from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.lm import embedded_lm
from reflex_dspy.proposals import TaskFacts


class LabelServer:
    """Stands in for xllamacpp.Server: answers every request with one label, records the payloads."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    def handle_chat_completions(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.payloads.append(payload)
        return {"choices": [{"message": {"content": "billing"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 1, "total_tokens": 21}}


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dspy.LM, LabelServer]:
    """An embedded LM on a stand-in GGUF, its model 'loaded' as a LabelServer."""
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 60)
    lm = embedded_lm(path=path, cache=False)
    server = LabelServer()
    monkeypatch.setitem(eng._MODELS, (lm.engine.model_path, lm.engine.n_ctx), eng._LoadedModel(server, 0.0))
    return lm, server


def _facts(examples: list[dspy.Example]) -> dict[str, TaskFacts]:
    return {"predict": TaskFacts.from_examples(examples, "output")}


def test_a_label_task_gets_a_budget_from_its_longest_label() -> None:
    program = program_from_prompt("Route the message.")
    budget = answer_budget.label_answer_budget(program, ["predict"], _facts(routing_examples()))
    # "technical" is the longest label: 9 characters → 3 estimated tokens.
    assert budget == answer_budget.FORMAT_TOKENS + answer_budget.LABEL_FACTOR * 3


def test_free_text_outputs_or_extra_output_fields_get_no_budget() -> None:
    free = [dspy.Example(input=f"q{i}", output=f"a different long answer number {i}").with_inputs("input")
            for i in range(10)]
    assert answer_budget.label_answer_budget(program_from_prompt("Answer."), ["predict"], _facts(free)) is None
    cot = dspy.ChainOfThought("input -> output")
    names = [name for name, _ in cot.named_predictors()]
    facts = {names[0]: TaskFacts.from_examples(routing_examples(), "output")}
    assert answer_budget.label_answer_budget(cot, names, facts) is None  # it writes its reasoning too


def test_only_an_embedded_model_without_max_tokens_is_capped(embedded: tuple[dspy.LM, LabelServer]) -> None:
    lm, _ = embedded
    capped, applied = answer_budget.capped(lm, 36)
    assert capped.kwargs["max_tokens"] == 36 and applied == 36 and lm.kwargs["max_tokens"] is None
    remote = fake_lm(lambda system, messages: "billing")
    assert answer_budget.capped(remote, 36) == (remote, None)
    explicit = lm.copy(max_tokens=200)
    assert answer_budget.capped(explicit, 36) == (explicit, None)
    both, applied = answer_budget.capped({"a": lm, "b": remote}, 36)
    assert both["a"].kwargs["max_tokens"] == 36 and both["b"] is remote and applied == 36


def test_a_run_on_the_embedded_model_sends_the_label_budget(embedded: tuple[dspy.LM, LabelServer]) -> None:
    lm, server = embedded
    reasoner = ScriptedReasoner(["Route the message. Answer with one word: billing, shipping or technical."])
    opt = Reflex("exact", strategy="iterative", task_lm=lm, reasoning_lm=fake_lm(reasoner), max_iterations=1,
                 track=False)
    result = opt.compile(program_from_prompt("Route the message."), trainset=routing_examples()).result
    expected = answer_budget.FORMAT_TOKENS + answer_budget.LABEL_FACTOR * 3
    assert server.payloads and {p["max_tokens"] for p in server.payloads} == {expected}
    assert result.final.mean is not None
