"""Issue 21: DSPy's and LiteLLM's warnings are counted during a run, never printed between our
progress lines, and reported once in the summary."""

from __future__ import annotations

import logging
import os
import warnings

import dspy
import pytest
from conftest import ScriptedReasoner, routing_examples, routing_respond
from fakes import FakeEngine, fake_lm

from reflex_dspy import Reflex, library_logs
from reflex_dspy.adapters import program_from_prompt


class TruncatingEngine(FakeEngine):
    """Answers like FakeEngine, but reports that every reply ran into max_tokens."""

    def complete(self, request):
        response = super().complete(request)
        return dspy.lm15.Response(id=response.id, model=response.model, message=response.message,
                                  finish_reason="length", usage=response.usage)


def truncating_lm(respond) -> dspy.LM:
    return dspy.LM("fake/truncating", engine=TruncatingEngine(respond), cache=False, num_retries=0)


def test_dspy_truncation_warnings_are_counted_not_printed(capfd: pytest.CaptureFixture[str]) -> None:
    lm = truncating_lm(lambda system, messages: "a reply cut short")
    before = logging.getLogger("dspy").handlers[:]
    with library_logs.captured() as logs:
        for _ in range(3):
            lm("hello")
    assert logs.truncated == 3
    assert logs.summary() == ["3 model replies hit the token limit (max_tokens)"]
    assert "truncated" not in capfd.readouterr().err
    assert logging.getLogger("dspy").handlers == before  # DSPy prints again after the run
    lm("hello")
    assert "LM response was truncated" in capfd.readouterr().err


def test_litellm_and_other_dspy_warnings_are_grouped_by_message(capfd: pytest.CaptureFixture[str]) -> None:
    with library_logs.captured() as logs:
        for _ in range(2):
            logging.getLogger("LiteLLM").warning("Provider List: https://docs.litellm.ai/docs/providers")
        logging.getLogger("dspy.adapters.json_adapter").warning("Failed to build structured output schema")
        logging.getLogger("dspy.teleprompt").info("Iteration 1: chatter nobody asked for")
    assert logs.summary() == [
        "LiteLLM warned 2×: Provider List: https://docs.litellm.ai/docs/providers",
        "DSPy warned: Failed to build structured output schema",
    ]
    assert capfd.readouterr().err == ""
    assert logs not in logging.getLogger("LiteLLM").filters  # LiteLLM prints again after the run


def test_python_warnings_from_dspy_are_counted_others_still_shown() -> None:
    inside = os.path.join(os.sep, "site-packages", "dspy", "adapters", "decision.py")
    shown: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *rest: shown.append(str(message))
        with library_logs.captured() as logs:
            warnings.warn_explicit("a DSPy deprecation", UserWarning, inside, 58)
            warnings.warn_explicit("the user's own warning", UserWarning, "/home/me/script.py", 3)
        warnings.warn_explicit("after the run", UserWarning, inside, 58)
    assert logs.summary() == ["DSPy warned: a DSPy deprecation"]
    assert shown == ["the user's own warning", "after the run"]


def test_a_run_reports_truncated_answers_once_in_its_summary(capfd: pytest.CaptureFixture[str]) -> None:
    reasoner = ScriptedReasoner(["Route the message. Answer with one word: billing, shipping or technical."])
    task = truncating_lm(routing_respond)
    opt = Reflex("exact", strategy="iterative", task_lm=task, reasoning_lm=fake_lm(reasoner), max_iterations=1,
                 max_workers=2, track=False)
    result = opt.compile(program_from_prompt("Say which team should handle the message."),
                         trainset=routing_examples()).result
    answers = result.usage["lm_calls"]
    assert answers > 0
    assert f"{answers} model replies hit the token limit (max_tokens)" in result.warnings
    assert "Warning        : " + f"{answers} model replies hit the token limit" in result.summary()
    assert "LM response was truncated" not in capfd.readouterr().err
