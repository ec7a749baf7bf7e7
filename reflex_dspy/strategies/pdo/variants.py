"""Where PDO's prompts come from: the initial pool written with varied style tips, and mutants
of the prompts that keep winning.

A pool of near-identical prompts teaches a duel nothing, so each initial variant follows a
different tip. When the reasoning model's variant is refused (empty, unchanged, copied), the
tip's deterministic rewrite stands in, labelled as such, so the pool still has its spread and
the run never stops on a bad reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dspy

from reflex_dspy.candidate import Candidate
from reflex_dspy.evaluation import ExampleResult
from reflex_dspy.library_logs import worker_pool
from reflex_dspy.metrics import label_fields
from reflex_dspy.proposals import Proposal, ProposalRejected, TaskFacts, clip, example_blocks
from reflex_dspy.signatures import GenerateVariant, MutateWinner
from reflex_dspy.strategies.base import SearchContext


@dataclass(frozen=True)
class Tip:
    name: str
    text: str  # what the reasoning model is asked to do
    fallback: str  # the deterministic rewrite: "{current}" and "{facts}" are filled in


TIPS = (
    Tip("concise", "Make it concise: short, direct sentences, nothing the model does not need.",
        "{current}\n\nBe concise: give only what is asked for, with no extra words."),
    Tip("step-by-step", "Lay the task out as numbered steps the model follows in order.",
        "{current}\n\nWork through it step by step: 1. read the input; 2. decide; "
        "3. give the answer in the required format."),
    Tip("expert persona", "Open with an expert role suited to the task, then state the task.",
        "You are an expert at this task and answer as a careful specialist would.\n\n{current}"),
    Tip("format first", "State the exact output format and the allowed answers first, then the task.",
        "{facts}\n\n{current}"),
    Tip("rules checklist", "Turn the requirements into an explicit checklist of rules to follow.",
        "{current}\n\nRules:\n- Do exactly the task above.\n- Use the required output format.\n- Add nothing else."),
    Tip("edge cases", "Say how to handle ambiguous or unusual inputs.",
        "{current}\n\nIf the input is ambiguous or unusual, still give the single best answer in the required format."),
    Tip("plain language", "Use plain, simple words that a non-expert would understand.",
        "{current}\n\nRead the input carefully and answer plainly and simply."),
    Tip("emphasise constraints", "Emphasise the constraints: what must and must not appear in the answer.",
        "{current}\n\nIMPORTANT: follow the required output format exactly and never add anything outside it."),
)


@dataclass
class Variant:
    """A prompt for the pool and how it came to be (shown in rankings and iteration records)."""

    candidate: Candidate
    name: str
    origin: str
    predictor: str | None = None

    def record(self, born: list[Any], **extra: Any) -> dict[str, Any]:
        return {"fingerprint": self.candidate.fingerprint, "candidate": self.candidate.to_dict(),
                "name": self.name, "origin": self.origin, "predictor": self.predictor, "born": born, **extra}


def tip_for(i: int) -> Tip:
    """The i-th tip (0-based); past the catalogue, two tips are combined so variants stay distinct."""
    first = TIPS[i % len(TIPS)]
    if i < len(TIPS):
        return first
    second = TIPS[(i // len(TIPS) + i) % len(TIPS)]
    if second is first:
        second = TIPS[(i + 1) % len(TIPS)]
    return Tip(f"{first.name} + {second.name}", f"{first.text} Also: {second.text}",
               second.fallback.replace("{current}", first.fallback))


def fallback_text(tip: Tip, current: str, facts: TaskFacts | None) -> str:
    """The tip's deterministic rewrite of `current`, with the label set or format stated if it lacks it."""
    facts_text = facts.for_task_model() if facts else "Give the answer in the format the task requires."
    text = tip.fallback.replace("{facts}", facts_text).replace("{current}", current.strip()).strip()
    if facts is not None and (fix := facts.missing_from(text)):
        text = f"{text}\n\n{fix}"
    return text


def initial_variants(ctx: SearchContext, initial: Candidate, size: int) -> list[Variant]:
    """The starting prompt plus up to `size - 1` variants, each rewriting one predictor with one tip.

    Predictors take turns (round robin), so every step of a pipeline gets variants. The variants
    are independent, so the reasoning model writes them in parallel (up to `max_workers`); they
    join the pool in tip order. A variant identical to one already in the pool is dropped rather
    than dueling itself.
    """
    names = ctx.predictor_names
    jobs = [(tip_for(i), names[i % len(names)]) for i in range(size - 1)]
    workers = min(ctx.config.max_workers, len(jobs))
    if workers <= 1:
        written = [_variant_text(ctx, initial, tip, predictor) for tip, predictor in jobs]
    else:
        with worker_pool(workers, "reflex-variants") as pool:
            written = list(pool.map(lambda job: _variant_text(ctx, initial, *job), jobs))
    variants = [Variant(initial, "initial", "the starting prompt")]
    seen = {initial.fingerprint}
    for i, ((_, predictor), (text, origin)) in enumerate(zip(jobs, written, strict=True)):
        candidate = initial.with_instructions(predictor, text)
        if candidate.fingerprint in seen:
            continue
        seen.add(candidate.fingerprint)
        variants.append(Variant(candidate, f"v{i + 1}", origin, predictor))
    return variants


def _variant_text(ctx: SearchContext, initial: Candidate, tip: Tip, predictor: str) -> tuple[str, str]:
    """(instructions, origin) of one variant: the reasoning model's, or the tip's deterministic rewrite."""
    current = initial.predictors[predictor].instructions
    facts = ctx.facts.get(predictor)
    where = f", {predictor}" if len(ctx.predictor_names) > 1 else ""
    try:
        proposal = ctx.proposer.rewrite(GenerateVariant, current=current, facts=facts,
                                        current_instructions=current, task_facts=ctx.proposer.grounding(facts),
                                        tip=tip.text)
    except ProposalRejected as exc:
        return (fallback_text(tip, current, facts),
                f"tip: {tip.name}{where}, deterministic fallback (the reasoning model's variants were refused: {exc})")
    origin = f"tip: {tip.name}{where}"
    if proposal.repaired:
        origin += "; stated the label set or format it dropped"
    return proposal.instructions, origin


def format_losses(examples: Sequence[dspy.Example], winner: dict[str, ExampleResult],
                  rival: dict[str, ExampleResult]) -> str:
    """Examples the winner lost to the rival, as delimited data: input, both outputs, the reference."""
    from reflex_dspy.data import example_id

    blocks = []
    for ex in examples:
        eid = example_id(ex)
        lines = [f"input {k}: {clip(v)}" for k, v in ex.inputs().items()]
        lines.append(f"winner's output: {clip(winner[eid].output) if eid in winner else '(none)'}")
        lines.append(f"rival's output: {clip(rival[eid].output) if eid in rival else '(none)'}")
        lines += [f"expected {k}: {clip(v)}" for k, v in label_fields(ex).items()]
        blocks.append(lines)
    return example_blocks(blocks)


def mutate(ctx: SearchContext, winner: Candidate, rival: Candidate, predictor: str, losses: str) -> Proposal:
    """A variation of `winner`'s instructions for `predictor` that fixes where it lost to `rival`.

    Raises `ProposalRejected` when no usable reply came back; the caller records that and moves on.
    """
    current = winner.predictors[predictor].instructions
    facts = ctx.facts.get(predictor)
    return ctx.proposer.rewrite(
        MutateWinner, current=current, facts=facts, data=losses,
        winner_instructions=current, rival_instructions=rival.predictors[predictor].instructions,
        task_facts=ctx.proposer.grounding(facts),
        losses=losses or "(none: the winner has not lost an example to this rival)",
    )
