"""The structural strategy and its transform catalogue, on deterministic fake models."""

from __future__ import annotations

import json
import random
import re

import pytest
from conftest import LABELS, routing_examples, truth
from fakes import fake_lm
from strategy_kit import comparable, interrupted_then_resumed, run_strategy

from reflex_dspy.proposals import TaskFacts
from reflex_dspy.strategies import get_strategy
from reflex_dspy.strategies.structural import AGENT, ArmStats, Structural, agent_dropped, choose_transforms
from reflex_dspy.strategies.transforms import (
    CATALOGUE,
    content_text,
    content_words,
    lost_words,
    parse,
    transform,
)

ROUTER = (
    "You are a support router for an online shop.\n"
    "Say which team should handle the message. Never explain your answer.\n\n"
    "Answer with exactly one of these labels and nothing else: billing, shipping, technical."
)
LABEL_SET = TaskFacts.from_examples(routing_examples(), "output").missing_from("Route it.")
PROMPTS = [
    ROUTER,
    "Say which team should handle the message.",
    f"Route the customer message to a team.\n\n{LABEL_SET}",
    "Summarize the article in at most 3 sentences. You must keep names exact. Output plain text.",
    "# Instructions\nClassify the sentiment of the review.\n\nRules:\n- Only use the text of the review.\n"
    "- Do not guess when unsure; answer neutral.\n\nReturn JSON like:\n```json\n"
    '{"label": "positive", "confidence": 0.9}\n```\nFor example, "great phone" is positive.',
]


# -- the catalogue ---------------------------------------------------------------------------------
@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("name", CATALOGUE)
def test_every_transform_keeps_every_word_and_is_stable(name, prompt):
    out = transform(name, prompt, ["message"], ["team"])
    assert lost_words(prompt, out) == []
    assert transform(name, out, ["message"], ["team"]) == out  # re-applying it offers nothing new
    for other in CATALOGUE:  # composed with any other transform, the words still survive
        assert lost_words(prompt, transform(other, out, ["message"], ["team"])) == []


def test_the_computed_label_set_survives_every_layout():
    prompt = PROMPTS[2]
    for name in CATALOGUE:
        out = transform(name, prompt)
        assert LABEL_SET in out or all(label in out for label in LABELS), name
        assert "billing, shipping, technical" in out


def test_each_transform_gives_a_different_layout():
    outputs = {name: transform(name, ROUTER, ["message"], ["team"]) for name in CATALOGUE}
    assert ROUTER not in outputs.values()
    assert len(set(outputs.values())) == len(CATALOGUE)
    assert "<output_format>\nAnswer with exactly one" in outputs["xml_tags"]
    assert "## Output format\n- Answer with exactly one" in outputs["markdown_structure"]
    assert "\n" not in outputs["minimal_flat"]
    assert outputs["constraint_emphasis"].endswith("IMPORTANT: NEVER explain your answer.")
    assert "1. Work out what is asked: Say which team" in outputs["task_decomposition"]
    assert outputs["role_task_format"].startswith("Role: You are a support router")
    assert outputs["input_anchored"].endswith(
        "The input (message) comes after these instructions. Read it in full, then give the answer (team) "
        "in the format described above.")
    # task → constraints → format, whatever order the prompt used
    reordered = transform("section_reorder", "Answer with one label. Never explain. Route the message.")
    assert reordered == "Route the message.\n\nNever explain.\n\nAnswer with one label."


def test_transforms_compose_on_a_recognised_layout():
    xml = transform("xml_tags", ROUTER)
    assert parse(xml).style == "xml"
    both = transform("constraint_emphasis", xml)
    assert both.endswith("<constraints>\nIMPORTANT: NEVER explain your answer.\n</constraints>")
    assert "<role>" in both and "<output_format>" in both
    assert transform("xml_tags", both) == both
    # Scaffolding is not content: leaving the XML layout for another one drops only the tags.
    assert content_words(content_text(both)) == content_words(ROUTER)
    assert lost_words(content_text(both), transform("markdown_structure", both)) == []


def test_content_words_ignore_list_numbering_but_not_numbers():
    assert content_words("1. Answer in 3 words.\n- Never explain.") == content_words("Answer in 3 words. Never explain.")
    assert lost_words("Use at most 3 words.", "Use at most words.") == ["3"]


# -- choosing transforms from their history --------------------------------------------------------
def test_untried_transforms_come_first():
    stats = {"xml_tags": ArmStats(3, 3, 0.3)}
    chosen = choose_transforms(["xml_tags", "minimal_flat", "markdown_structure"], stats, 2, random.Random(0))
    assert {n for n, _ in chosen} == {"minimal_flat", "markdown_structure"}
    assert all(why == "untried" for _, why in chosen)


def test_a_transform_that_helped_is_chosen_again_and_one_that_hurt_is_avoided():
    stats = {"xml_tags": ArmStats(4, 3, 0.2), "minimal_flat": ArmStats(4, 0, -0.2, hurts=4),
             "markdown_structure": ArmStats(1, 0, 0.0), "role_task_format": ArmStats(1, 0, 0.0)}
    names = list(stats)
    firsts = [choose_transforms(names, stats, 1, random.Random(seed))[0][0] for seed in range(300)]
    picked = [{n for n, _ in choose_transforms(names, stats, 2, random.Random(seed))} for seed in range(300)]
    assert firsts.count("xml_tags") > 150 > 5 * firsts.count("minimal_flat")
    assert sum("xml_tags" in p for p in picked) > 2 * sum("minimal_flat" in p for p in picked)
    assert "beat the parent 3×" in choose_transforms(["xml_tags"], stats, 1, random.Random(0))[0][1]


def test_a_layout_that_hurt_ranks_below_one_that_had_no_effect():
    stats = {"hurt": ArmStats(3, 0, -0.3, hurts=3), "neutral": ArmStats(3, 0, 0.0)}
    firsts = [choose_transforms(list(stats), stats, 1, random.Random(seed))[0][0] for seed in range(300)]
    assert firsts.count("neutral") > 1.2 * firsts.count("hurt")


# -- the agent's layout -----------------------------------------------------------------------------
def test_agent_layout_may_reword_little_but_not_drop_requirements():
    assert agent_dropped(ROUTER, ROUTER.replace("Say which", "State which")) == []
    assert agent_dropped(ROUTER, ROUTER.replace("Never explain", "Explain")) == ["never"]
    assert agent_dropped(ROUTER, "Answer with one label.") != []


# -- runs on a fake task model that cares about layout ---------------------------------------------
def layout_respond(system: str, messages: list[dict]) -> str:
    """Bare labels for billing always, shipping too under an <output_format> section, and
    technical only when, in addition, the constraints are emphasised. Else a sentence."""
    label = truth(messages[-1]["content"])
    xml = "<output_format>" in system
    if label == "billing" or (xml and label == "shipping") or (xml and "IMPORTANT:" in system):
        return label
    return f"This is about {label}."


def field(messages: list[dict], name: str) -> str:
    match = re.search(rf"\[\[ ## {name} ## \]\]\n(.*?)\n\n(?:\[\[ ## |Respond with)", messages[-1]["content"], re.S)
    return match.group(1) if match else ""


def reverse_lines(system: str, messages: list[dict]) -> str:
    """A stateless agent: the current instructions with their lines in reverse order."""
    lines = [x for x in field(messages, "current_instructions").splitlines() if x.strip()]
    return json.dumps({"change_summary": "reversed the order", "restructured_instructions": "\n".join(lines[::-1])})


def run(strategy, reasoner=reverse_lines, **kwargs):
    kwargs.setdefault("max_iterations", 8)
    return run_strategy(strategy, reasoner, respond=layout_respond, initial=ROUTER, train_ratio=1.0,
                        val_ratio=0.0, **kwargs).result


def test_finds_the_layout_the_task_model_follows_by_composing_transforms():
    result = run(Structural(variants_per_round=4))
    assert result.baseline.mean == pytest.approx(1 / 3)
    assert result.final.mean == 1.0
    best = result.iterations[result.selected_iteration - 1]
    assert "<output_format>" in best.candidate["predictors"]["predict"]["instructions"]
    adopted = [r.details["chosen"] for r in result.iterations if r.details["chosen"]]
    assert adopted == ["xml_tags", "constraint_emphasis"]
    assert all(r.phase == r.strategy == "structural" for r in result.iterations)
    assert [r.change_summary for r in result.iterations if r.details["chosen"]][0] == "xml_tags layout (+0.333 over parent)"
    first = result.iterations[0].details
    assert len(first["variants"]) == 4 and first["variants"][-1]["transform"] == AGENT
    assert "xml_tags" in result.iterations[-1].details["history"]
    assert not any("drop" in why for r in result.iterations for why in r.details["skipped"].values())


def test_all_variants_of_a_round_are_scored_on_the_same_batch():
    task = fake_lm(layout_respond, name="fake/task")
    from reflex_dspy import Reflex
    from reflex_dspy.adapters import program_from_prompt

    program = Reflex("exact", strategy=Structural(variants_per_round=4), task_lm=task,
                     reasoning_lm=fake_lm(reverse_lines), max_iterations=1, batch_size=6, train_ratio=1.0,
                     val_ratio=0.0, score_threshold=1.0, max_workers=2).compile(
        program_from_prompt(ROUTER), trainset=routing_examples())
    (record,) = program.result.iterations
    texts = [v["instructions"] for v in record.details["variants"]]
    seen: dict[str, set[str]] = {t: set() for t in texts}
    for system, messages in task.fake_engine.requests:
        if system in seen:
            seen[system].add(messages[-1]["content"])
    batches = [seen[t] for t in texts if t != record.candidate["predictors"]["predict"]["instructions"]]
    assert len(batches) >= 3 and all(len(b) == 6 for b in batches) and all(b == batches[0] for b in batches)


def test_ties_keep_the_parent():
    result = run_strategy(Structural(variants_per_round=4), reverse_lines, initial=ROUTER, max_iterations=2,
                          train_ratio=1.0, val_ratio=0.0).result  # routing_with_demos: layout is irrelevant
    assert all(r.details["chosen"] is None for r in result.iterations)
    assert all(r.candidate == result.iterations[0].candidate for r in result.iterations)
    assert result.iterations[0].change_summary == "no layout beat the parent (parent kept)"
    assert all(v["delta"] == 0 for r in result.iterations for v in r.details["variants"])
    assert result.selected_iteration == 0


def wrap_in_output_format(system: str, messages: list[dict]) -> str:
    current = field(messages, "current_instructions")
    return json.dumps({"change_summary": "everything as the output format",
                       "restructured_instructions": f"<output_format>\n{current}\n</output_format>"})


def test_the_agent_layout_is_scored_and_can_win():
    result = run(Structural(variants_per_round=1), reasoner=wrap_in_output_format, max_iterations=1)
    (record,) = result.iterations
    assert [v["transform"] for v in record.details["variants"]] == [AGENT]
    assert record.details["chosen"] == AGENT
    assert record.change_summary == "agent-guided layout: everything as the output format (+0.333 over parent)"


def test_an_agent_layout_that_drops_content_is_refused():
    def lossy(system, messages):
        return json.dumps({"change_summary": "shorter", "restructured_instructions": "Route it. Be brief."})

    result = run(Structural(variants_per_round=2), reasoner=lossy, max_iterations=1)
    details = result.iterations[0].details
    assert AGENT not in [v["transform"] for v in details["variants"]]
    assert details["agent"].startswith("agent-guided layout refused: it dropped content")
    assert "never" in details["agent"]


def test_no_usable_agent_reply_and_no_layout_left_stops_the_search_honestly():
    result = run(Structural(variants_per_round=1), reasoner=lambda s, m: "not json", max_iterations=5)
    (record,) = result.iterations
    assert record.details["agent"].startswith("no agent-guided layout this round")
    assert record.change_summary == "no layout to try (parent kept)"
    assert result.stop_reason.startswith("strategy finished: no layout left to try")


def test_state_survives_a_resume(tmp_path):
    ref, resumed = interrupted_then_resumed(lambda: Structural(variants_per_round=2), reverse_lines, tmp_path,
                                            at=2, respond=layout_respond, initial=ROUTER, max_iterations=6,
                                            batch_size=9, train_ratio=1.0, val_ratio=0.0)
    assert len(ref.iterations) >= 3
    assert comparable(ref) == comparable(resumed)
    assert [r.details for r in ref.iterations] == [r.details for r in resumed.iterations]


def test_registered_with_its_parameters():
    strategy = get_strategy("structural", variants_per_round=3)
    assert isinstance(strategy, Structural) and strategy.get_params()["variants_per_round"] == 3
    with pytest.raises(ValueError):
        Structural(variants_per_round=0)
