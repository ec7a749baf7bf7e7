"""Facts computed from the data reach a task prompt as instructions, never as analysis.

An unseen date task once ended with "Expected `output` values have a median length of 1 words."
in the user's prompt: `describe()` (written for the reasoning model) was pasted into a
deterministic fallback. Every grounded fallback must use `for_task_model()` instead.
"""

from __future__ import annotations

import json
import re

import dspy
import pytest
from fakes import fake_lm

from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.evaluation import Evaluator
from reflex_dspy.proposals import ProposalRejected, Proposer, TaskFacts, strip_analysis, strip_echo
from reflex_dspy.signatures import ProposeInstruction
from reflex_dspy.strategies.pdo.variants import TIPS, fallback_text, tip_for

ANALYSIS = re.compile(r"median|length of|training data|how often|expected `|values have|always exactly one of",
                      re.IGNORECASE)


def examples(outputs: list[str]) -> list[dspy.Example]:
    return [dspy.Example(input=f"item {i}", output=o).with_inputs("input") for i, o in enumerate(outputs)]


FACTS = {
    "dates": TaskFacts.from_examples(examples(["2024-01-02", "1999-12-31", "2030-06-15"]), "output"),
    "labels": TaskFacts.from_examples(examples(["billing", "shipping", "billing", "technical"] * 2), "output"),
    "numbers": TaskFacts.from_examples(examples(["12", "7.5", "300"]), "output"),
    "json": TaskFacts.from_examples(examples(['{"name": "a", "age": 1}', '{"name": "b", "age": 2}']), "output"),
    "one word": TaskFacts.from_examples(examples(["Paris", "Rome", "Oslo", "Lima"]), "output"),
    "free text": TaskFacts.from_examples(examples(["the cat sat on the mat today", "a long answer in words"]),
                                         "output"),
}


@pytest.mark.parametrize("kind", list(FACTS))
def test_facts_for_the_task_model_carry_no_analysis_wording(kind):
    facts = FACTS[kind]
    assert not ANALYSIS.search(facts.for_task_model()), facts.for_task_model()
    assert ANALYSIS.search(facts.describe())  # the reasoning model's version does: the check can fail


def test_the_date_task_gets_the_instruction_the_issue_asks_for():
    assert FACTS["dates"].for_task_model() == "Answer with the date only, as YYYY-MM-DD."
    assert FACTS["labels"].for_task_model() == ("Answer with exactly one of these labels and nothing else: "
                                                "billing, shipping, technical.")


@pytest.mark.parametrize("kind", list(FACTS))
def test_no_pdo_tip_fallback_pastes_analysis_into_the_prompt(kind):
    for i in range(len(TIPS) * 2):  # every tip, and the combined ones past the catalogue
        text = fallback_text(tip_for(i), "Find the date mentioned in the text.", FACTS[kind])
        assert not ANALYSIS.search(text), (tip_for(i).name, text)


@pytest.mark.parametrize("kind", list(FACTS))
def test_the_proposers_grounded_fallback_states_facts_as_instructions(kind):
    refusing = fake_lm(lambda system, messages: json.dumps(
        {"failure_patterns": "-", "change_summary": "-", "revised_instructions": ""}))
    evaluator = Evaluator(program_from_prompt("x"), lambda ex, pred: 1.0, task_lm=refusing)
    proposer = Proposer(refusing, evaluator)
    try:
        proposal = proposer.propose_instruction(current="Find the date mentioned in the text.", facts=FACTS[kind],
                                                failures="", differences="", history="", step_name="predict")
    except ProposalRejected as exc:  # nothing the data could state: the refusal stands
        assert FACTS[kind].missing_from("Find the date mentioned in the text.") is None, exc
        return
    assert not ANALYSIS.search(proposal.instructions), proposal.instructions


@pytest.mark.parametrize("kind", list(FACTS))
def test_analysis_the_reasoning_model_copies_into_its_instructions_is_dropped(kind):
    """Measured on the bench (dates, seed 0): the reasoning model pasted the facts it was given
    ("Expected `date` values have a median length of 1 words. ... Outputs are too long: median 3
    words ...") into the instructions it proposed, and they reached the task prompt."""
    facts = FACTS[kind]
    copied = f"Find the value in the text. {facts.describe()} Outputs are too long: median 3 words where the " \
             "expected median is 1.\nKeep it short."
    copying = fake_lm(lambda system, messages: json.dumps(
        {"failure_patterns": "-", "change_summary": "stated the format", "revised_instructions": copied}))
    evaluator = Evaluator(program_from_prompt("x"), lambda ex, pred: 1.0, task_lm=copying)
    proposal = Proposer(copying, evaluator).propose_instruction(
        current="Find the value in the text.", facts=facts, failures="", differences="", history="",
        step_name="predict")
    assert not ANALYSIS.search(proposal.instructions), proposal.instructions
    assert "Outputs are too long" not in proposal.instructions
    assert proposal.instructions.startswith("Find the value in the text.") and "Keep it short." in proposal.instructions
    assert "copied from the data analysis" in proposal.salvaged
    if fix := facts.missing_from("Find the value in the text."):
        assert fix in proposal.instructions  # what the analysis said, back in the task model's terms


def test_failure_report_wording_the_reasoning_model_copies_is_dropped():
    """Measured on the bench (web_of_lies, seed 0): the final prompt read "To answer the question, the
    expected answer is No. The program output answer is Yes, and the score is 0.00." — the failure
    report's own words (`format_failures`), which mean nothing to the task model (it sees no score);
    facility_urgency's read "The program output urgency is always exactly one of: low, high, medium."."""
    copied = ("Decide whether the last person tells the truth. The program output answer is Yes, and the score is "
              "0.00.\nAnswer Yes or No.")
    text, dropped = strip_analysis(copied)
    assert dropped == 1 and text == "Decide whether the last person tells the truth.\nAnswer Yes or No."
    copied = "The program output urgency is always exactly one of: low, high, medium.\nRate how urgent it is."
    assert strip_analysis(copied, "urgency") == ("Rate how urgent it is.", 1)
    assert strip_analysis(copied) == (copied, 0)  # without the field, "program output" alone is a task's words
    for kept in ("Rate the answer. A score of 0.50 means partly right; the score is 1.00 only when it is complete.",
                 "Given the Python code, predict the program output exactly as printed."):
        assert strip_analysis(kept) == (kept, 0)  # an instruction may speak of scores, or of a program's output


def test_a_proposal_that_only_drops_the_data_s_sentence_is_unchanged_and_refused():
    """Measured on the bench (routing, seed 0): the 0.5B model's "rewrite" was the current instructions
    without the label-set sentence; restored, it was the current candidate again, scored from the
    cache, and the iteration changed nothing. It is refused, so the retry (warmer) asks again."""
    facts = FACTS["labels"]
    base = "Say which team should handle the message."
    current = f"{base}\n\n{facts.for_task_model()}"
    replies = [base, "Name the team that handles the message."]

    def dropping(system: str, messages: list[dict]) -> str:
        return json.dumps({"failure_patterns": "-", "change_summary": "-", "revised_instructions": replies.pop(0)})

    reasoner = fake_lm(dropping)
    evaluator = Evaluator(program_from_prompt("x"), lambda ex, pred: 1.0, task_lm=reasoner)
    proposal = Proposer(reasoner, evaluator).propose_instruction(
        current=current, facts=facts, failures="", differences="", history="", step_name="predict")
    assert proposal.instructions == f"Name the team that handles the message.\n\n{facts.for_task_model()}"
    assert proposal.attempts == 2


def test_sentences_echoing_our_request_to_the_reasoning_model_are_dropped():
    """Measured on the bench (amounts, seed 0): the picked prompt ended with `ProposeInstruction`'s own
    guidance ("Keep what works, do not repeat changes that the history shows had no effect or hurt,
    and do not copy specific examples verbatim. Write the instructions to the model that performs the
    task, in the second person."), written for the reasoning model, meaningless to the task model."""
    echo = ("Find the amount paid in the message. Keep what works, do not repeat changes that the history shows "
            "had no effect or hurt, and do not copy specific examples verbatim. Write the instructions to the "
            "model that performs the task, in the second person.\nAnswer with the number only.")
    echoing = fake_lm(lambda system, messages: json.dumps(
        {"failure_patterns": "-", "change_summary": "kept what works", "revised_instructions": echo}))
    evaluator = Evaluator(program_from_prompt("x"), lambda ex, pred: 1.0, task_lm=echoing)
    proposal = Proposer(echoing, evaluator).propose_instruction(
        current="Find the amount.", facts=None, failures="", differences="", history="", step_name="predict")
    assert proposal.instructions == "Find the amount paid in the message.\nAnswer with the number only."
    assert "dropped 2 sentences echoing our request" in proposal.salvaged
    # The user's own words stay even where they happen to read like our request.
    kept = "Keep what works, do not repeat changes that the history shows had no effect or hurt."
    assert strip_echo(f"{kept} Be brief.", ProposeInstruction.instructions, current=kept) == (f"{kept} Be brief.", 0)
