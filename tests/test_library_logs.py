"""Issue 21: DSPy's and LiteLLM's warnings are counted during a run, never printed between our
progress lines, and reported once in the summary."""

from __future__ import annotations

import logging
import os
import threading
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
    before = logging.getLogger("LiteLLM").filters[:]
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
    assert logging.getLogger("LiteLLM").filters == before  # LiteLLM prints again after the run


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


def test_overlapping_runs_count_their_own_warnings_and_the_last_one_puts_everything_back(
        capfd: pytest.CaptureFixture[str]) -> None:
    """Two runs in a user's threads, each inside the other's capture. Before: the first to finish
    restored the state it found, the second restored the first's counting handler, and DSPy's log
    lines were swallowed for the rest of the process (and each run could count the other's)."""
    dspy_logger, show = logging.getLogger("dspy"), warnings.showwarning
    before = (dspy_logger.handlers[:], dspy_logger.propagate)
    started, both_running, results = set(), threading.Event(), {}

    def run(name: str) -> None:
        def respond(system: str, messages: list[dict]) -> str:
            started.add(name)
            if started == {"a", "b"}:
                both_running.set()
            both_running.wait(timeout=30)  # each run's first answer waits until the other's run began
            logging.getLogger("dspy.adapters").warning(f"warning of run {name}")
            return routing_respond(system, messages)

        opt = Reflex("exact", strategy="iterative", task_lm=fake_lm(respond, name=f"fake/{name}"),
                     reasoning_lm=fake_lm(ScriptedReasoner(["Route it."])), max_iterations=1, max_workers=2,
                     track=False, progress=False)
        results[name] = opt.compile(program_from_prompt("Say which team."), trainset=routing_examples()).result

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert both_running.is_set()  # the two runs really overlapped
    for name in ("a", "b"):
        said = [w for w in results[name].warnings if w.startswith("DSPy warned")]
        assert said == [f"DSPy warned {results[name].usage['lm_calls']}×: warning of run {name}"], said
    assert (dspy_logger.handlers, dspy_logger.propagate) == before and warnings.showwarning is show
    logging.getLogger("dspy.adapters").warning("after both runs")
    assert "after both runs" in capfd.readouterr().err
