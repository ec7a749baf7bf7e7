"""Structural search: the same instructions in different layouts, scored head to head.

Each round takes one predictor's current instructions and builds `variants_per_round` layouts
of them: catalogue transforms (`transforms.py`) plus one free-form restructure by the reasoning
model. All variants and the parent are scored on the same batch in one `evaluate_many`, and the
strictly best variant replaces the parent only if it strictly beats it. Content never changes,
only structure: catalogue transforms keep every word by construction and the agent's layout is
refused when it drops words.

Beyond the reference, which transforms to try is learnt on this task: each transform keeps how
often it beat its parent and its mean Δ, untried transforms go first, and the rest are ranked
by Thompson sampling (seeded per round, so a resumed run draws the same), so layouts that helped
are tried again on the new current text and ones that hurt are tried less.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import dspy

from reflex_dspy.candidate import Candidate
from reflex_dspy.proposals import ProposalRejected, TaskFacts
from reflex_dspy.search import fmt_score
from reflex_dspy.signatures import RestructureInstructions
from reflex_dspy.strategies.base import SearchContext, Step, Strategy
from reflex_dspy.strategies.transforms import CATALOGUE, content_text, lost_words, transform

AGENT = "agent_guided"
HISTORY_LINES = 12  # the most recent rounds shown to the reasoning model
# The agent may reword a little; it may not drop more than this share of the distinct content
# words (at least one), and never a word that carries a requirement.
AGENT_TOLERANCE = 0.1
KEEP_WORDS = frozenset({"not", "no", "never", "only", "must", "always", "without", "except", "exactly"})
STOPWORDS = frozenset({
    "a", "an", "the", "of", "to", "in", "on", "at", "for", "and", "or", "but", "is", "are", "be", "been", "it",
    "its", "this", "that", "these", "those", "as", "by", "from", "with", "your", "you", "each", "any", "then",
    "so", "if", "into", "which", "what", "will", "should", "can",
})


@dataclass
class ArmStats:
    """How one layout has done on this task: tries, times it beat / fell below its parent, summed Δ."""

    tries: int = 0
    wins: int = 0
    delta_sum: float = 0.0
    hurts: int = 0

    def draw(self, rng: random.Random) -> float:
        """A Thompson draw of "beats its parent"; a no-effect try counts half a loss, a hurt a full one."""
        return rng.betavariate(1 + self.wins, 1 + self.hurts + 0.5 * (self.tries - self.wins - self.hurts))

    @property
    def mean_delta(self) -> float:
        return self.delta_sum / self.tries if self.tries else 0.0

    def describe(self) -> str:
        return (f"tried {self.tries}×, beat the parent {self.wins}×, hurt {self.hurts}×, "
                f"mean Δ{self.mean_delta:+.3f}")


def choose_transforms(applicable: Sequence[str], stats: Mapping[str, ArmStats], k: int,
                      rng: random.Random) -> list[tuple[str, str]]:
    """Up to `k` of `applicable`, each with why: untried first (random order), then by a Thompson
    draw on "beats its parent" (`ArmStats.draw`), ties broken by mean Δ."""
    untried = [n for n in applicable if stats.get(n, ArmStats()).tries == 0]
    rng.shuffle(untried)
    tried = [n for n in applicable if n not in untried]
    draws = {n: stats[n].draw(rng) for n in tried}
    ranked = sorted(tried, key=lambda n: (-draws[n], -stats[n].mean_delta))
    chosen = [(n, "untried") for n in untried] + [
        (n, f"{stats[n].describe()}; Thompson draw {draws[n]:.2f}") for n in ranked
    ]
    return chosen[: max(k, 0)]


def _norm_words(text: str) -> set[str]:
    """Distinct content words, crudely singularised, so the agent may reword connectives."""
    words = {w.lower() for w in re.findall(r"\w+", text)}
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words if w not in STOPWORDS}


def agent_dropped(before: str, after: str) -> list[str]:
    """Content words of `before` the agent's layout dropped, when beyond the tolerance (else [])."""
    missing = sorted(_norm_words(before) - _norm_words(after))
    allowed = max(1, int(AGENT_TOLERANCE * len(_norm_words(before))))
    if any(w in KEEP_WORDS for w in missing) or len(missing) > allowed:
        return missing
    return []


@dataclass
class Variant:
    """One layout to score this round: which transform made it, its text, and why it was chosen."""

    name: str
    text: str
    why: str
    summary: str


@dataclass
class StructuralState:
    """What a resume needs: the candidate, the predictor turn, each transform's record, the round
    log, how many rounds in a row had nothing to try, and how many predictors there are."""

    current: Candidate | None = None
    turn: int = 0
    stats: dict[str, ArmStats] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)
    empty_rounds: int = 0  # consecutive rounds with nothing to try
    n_predictors: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"current": self.current.to_dict() if self.current else None, "turn": self.turn,
                "stats": {n: asdict(s) for n, s in self.stats.items()}, "log": self.log,
                "empty_rounds": self.empty_rounds, "n_predictors": self.n_predictors}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StructuralState:
        return cls(current=Candidate.from_dict(data["current"]) if data.get("current") else None,
                   turn=data.get("turn", 0), stats={n: ArmStats(**s) for n, s in data.get("stats", {}).items()},
                   log=list(data.get("log", [])), empty_rounds=data.get("empty_rounds", 0),
                   n_predictors=data.get("n_predictors", 1))


class Structural(Strategy):
    """Layout search over catalogue transforms plus one agent-guided restructure per round.

    Parameters: `variants_per_round` (4): layouts scored per round, `variants_per_round - 1`
    from the catalogue and one from the reasoning model.
    """

    name = "structural"

    def __init__(self, metric: Any = None, *, variants_per_round: int = 4):
        if variants_per_round < 1:
            raise ValueError("variants_per_round must be at least 1")
        super().__init__(metric, variants_per_round=variants_per_round)
        self.state = StructuralState()

    def start(self, ctx: SearchContext, initial: Candidate) -> None:
        self.state = StructuralState(current=initial, n_predictors=len(ctx.predictor_names))

    def first_step_calls(self, train_n: int, batch_n: int, val_n: int) -> int | None:
        """The current prompt and at least one layout scored on the batch, the layout on validation
        (a round scores all of its layouts with the current prompt, so it usually needs more)."""
        return 2 * batch_n + val_n

    def done(self) -> str | None:
        # Nothing to try for any predictor: another round would score the same texts again.
        if self.state.empty_rounds and self.state.empty_rounds >= self.state.n_predictors:
            return ("no layout left to try: no transform changes the instructions and the reasoning model "
                    "offered none")
        return None

    # -- one round -----------------------------------------------------------------------
    def step(self, ctx: SearchContext, iteration: int, batch: Sequence[dspy.Example]) -> Step:
        parent = self.state.current
        predictor = ctx.predictor_names[self.state.turn % len(ctx.predictor_names)]
        self.state.turn += 1
        text = parent.predictors[predictor].instructions
        # A seed per round (not a shared stream): a resumed run draws exactly what the original drew.
        rng = random.Random(f"structural:{ctx.config.seed}:{iteration}:{predictor}")
        variants, skipped = self._catalogue(ctx, predictor, text, rng)
        agent, agent_note = self._agent(ctx, predictor, text)
        if agent is not None and all(agent.text.strip() != v.text.strip() for v in variants):
            variants.append(agent)
        elif agent is not None:
            agent_note = "agent-guided layout equals a catalogue variant (scored once)"

        candidates = [parent.with_instructions(predictor, v.text) for v in variants]
        label = f"iter {iteration}: {len(variants)} layouts + current"
        *results, parent_eval = ctx.evaluate_many([*candidates, parent], batch, label=label)
        parent_score = parent_eval.mean
        scores = [r.mean for r in results]
        self.state.empty_rounds = 0 if variants else self.state.empty_rounds + 1

        def beats(score: float | None, than: float | None) -> bool:
            return score is not None and (than is None or score > than)

        best = None
        for i, score in enumerate(scores):  # the strictly best; ties go to the earlier variant
            if best is None or beats(score, scores[best]):
                best = i
        won = best is not None and beats(scores[best], parent_score)
        self._learn(iteration, predictor, variants, scores, parent_score, best if won else None)

        rows = [{"transform": v.name, "score": s, "delta": _delta(s, parent_score), "why": v.why,
                 "instructions": v.text} for v, s in zip(variants, scores, strict=True)]
        details = {
            "predictor": predictor,
            "parent_score": parent_score,
            "variants": rows,
            "chosen": variants[best].name if won else None,
            "skipped": skipped,
            "agent": agent_note,
            "history": {n: {**asdict(s), "mean_delta": round(s.mean_delta, 6)} for n, s in self.state.stats.items()},
        }
        reasoning = self._reasoning(rows, parent_score, skipped, agent_note, details["chosen"])
        if won:
            winner = variants[best]
            self.state.current = candidates[best]
            summary = f"{winner.summary} ({scores[best] - (parent_score or 0.0):+.3f} over parent)"
            return Step(candidates[best], results[best], parent_score, reasoning, summary, predictor, details)
        summary = ("no layout beat the parent (parent kept)" if variants
                   else "no layout to try (parent kept)")
        return Step(parent, parent_eval, parent_score, reasoning, summary, predictor, details)

    def _catalogue(self, ctx: SearchContext, predictor: str, text: str,
                   rng: random.Random) -> tuple[list[Variant], dict[str, str]]:
        """The chosen catalogue variants, and why each transform not applicable was skipped."""
        inputs, outputs = _io_fields(ctx.student, predictor)
        applicable: dict[str, str] = {}
        skipped: dict[str, str] = {}
        content = content_text(text)
        for name in CATALOGUE:
            new = transform(name, text, inputs, outputs)
            same = next((other for other, t in applicable.items() if t == new), None)
            if new.strip() == text.strip():
                skipped[name] = "the instructions already have this layout"
            elif lost := lost_words(content, new):  # a safety net: transforms preserve words by design
                skipped[name] = f"would drop words: {', '.join(lost[:10])}"
            elif same is not None:
                skipped[name] = f"same text as {same}"
            else:
                applicable[name] = new
        chosen = choose_transforms(list(applicable), self.state.stats, self.variants_per_round - 1, rng)
        return [Variant(n, applicable[n], why, f"{n} layout") for n, why in chosen], skipped

    def _agent(self, ctx: SearchContext, predictor: str, text: str) -> tuple[Variant | None, str]:
        """The reasoning model's own layout, or None and why there is none this round."""
        facts: TaskFacts | None = ctx.facts.get(predictor)
        history = self._history()
        try:
            proposal = ctx.proposer.rewrite(
                RestructureInstructions,
                current=text,
                facts=facts,
                output_field="restructured_instructions",
                current_instructions=text,
                task_facts=ctx.proposer.grounding(facts),
                layout_history=history or "(no layouts tried yet)",
            )
        except ProposalRejected as exc:
            return None, f"no agent-guided layout this round: {exc}"
        if dropped := agent_dropped(content_text(text), proposal.instructions):
            return None, f"agent-guided layout refused: it dropped content ({', '.join(dropped[:10])})"
        note = "agent-guided layout scored" + (f" (repaired: {proposal.repaired})" if proposal.repaired else "")
        summary = f"agent-guided layout: {proposal.change_summary}"
        return Variant(AGENT, proposal.instructions, "one free-form restructure per round", summary), note

    def _learn(self, iteration: int, predictor: str, variants: Sequence[Variant], scores: Sequence[float | None],
               parent_score: float | None, winner: int | None) -> None:
        """Update each layout's record with its Δ over the parent it was built from."""
        for i, (variant, score) in enumerate(zip(variants, scores, strict=True)):
            delta = _delta(score, parent_score)
            if delta is None:
                continue
            arm = self.state.stats.setdefault(variant.name, ArmStats())
            arm.tries += 1
            arm.wins += delta > 0
            arm.hurts += delta < 0
            arm.delta_sum += delta
            self.state.log.append({"iteration": iteration, "predictor": predictor, "transform": variant.name,
                             "score": score, "delta": delta, "adopted": i == winner})

    def _history(self) -> str:
        """Layouts tried so far with their measured effect, for the reasoning model."""
        if not self.state.log:
            return ""
        table = [f"- {n}: {s.describe()}" for n, s in sorted(self.state.stats.items(), key=lambda x: -x[1].mean_delta)]
        recent = [f"Iter {e['iteration']} [{e['predictor']}] {e['transform']}: score {e['score']:.4f}, "
                  f"Δ{e['delta']:+.4f}{' (adopted)' if e['adopted'] else ''}" for e in self.state.log[-HISTORY_LINES:]]
        return "Layouts on this task:\n" + "\n".join(table) + "\nRecent rounds:\n" + "\n".join(recent)

    @staticmethod
    def _reasoning(rows: list[dict[str, Any]], parent_score: float | None, skipped: dict[str, str],
                   agent_note: str, winner: str | None) -> str:
        lines = [f"Parent: {fmt_score(parent_score, 4)} on this batch."]
        lines += [f"- {r['transform']}: {fmt_score(r['score'], 4)} (Δ{'n/a' if r['delta'] is None else format(r['delta'], '+.4f')})"
                  f" — chosen because: {r['why']}" for r in rows]
        lines.append(f"Agent: {agent_note}.")
        if skipped:
            lines.append("Not applicable: " + "; ".join(f"{n} ({why})" for n, why in skipped.items()))
        lines.append(f"Adopted {winner}: the best layout this round (ties go to the earlier one), strictly above the parent." if winner
                     else "Kept the parent: no layout strictly beat it.")
        return "\n".join(lines)

    # -- persistence -----------------------------------------------------------------------
    def memory(self) -> dict[str, Any]:
        """The state, of which a later search takes each transform's record: it draws the layouts that
        helped, not those that hurt."""
        return self.state.to_dict()

    def recall(self, memory: dict[str, Any]) -> None:
        if memory:
            self.state.stats = StructuralState.from_dict(memory).stats

    def state_dict(self) -> dict[str, Any]:
        return self.state.to_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = StructuralState.from_dict(state)


def _delta(score: float | None, parent: float | None) -> float | None:
    return None if score is None or parent is None else score - parent


def _io_fields(student: dspy.Module, predictor: str) -> tuple[list[str], list[str]]:
    """The predictor's input and output field names (the input-anchored layout names them)."""
    for name, pred in student.named_predictors():
        if name == predictor:
            return list(pred.signature.input_fields), list(pred.signature.output_fields)
    return [], []
