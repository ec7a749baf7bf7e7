"""Asking the reasoning model for better instructions, grounded in facts computed from the data.

Small reasoning models write poor instructions when left to guess; what helps them is facts
they cannot get wrong: the exact label set, the output's shape, how current outputs differ
from gold. `TaskFacts` computes those from the training data, `Proposer` sends them with every
request, and `repair()` puts back a label set or format a proposal dropped.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import dspy

from reflex_dspy.errors import ProviderAuthError
from reflex_dspy.evaluation import Evaluator, ExampleResult, ReplayedFailure
from reflex_dspy.metrics import label_fields
from reflex_dspy.retries import short_error
from reflex_dspy.signatures import ProposeInstruction
from reflex_dspy.trace import AgentTrace

# A label set is "small" when the gold outputs take at most this many distinct values and
# each value repeats on average: then we state the exact set rather than its shape.
MAX_LABELS = 12
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NUMBER = re.compile(r"^-?\d+(?:[.,]\d+)?$")
# Lines that copy the rewrite log back (small models do): never part of an instruction or summary.
_LOG_LINE = re.compile(r"^\s*(Rewrite history:|Iter \d+\b.*\(score)", re.IGNORECASE)
REASONING_MAX_TOKENS = 1024
T = TypeVar("T")


def strip_log_lines(text: str) -> str:
    """`text` without lines copied from the rewrite log."""
    return "\n".join(line for line in text.splitlines() if not _LOG_LINE.match(line)).strip()


_SENTENCE_END = re.compile(r"(?<=[.!?])(\s+)")


def salvage(text: str, truncated: bool) -> tuple[str, str | None]:
    """Drop repeated sentences and, when the reply hit max_tokens, its cut-off tail.

    Small models often loop on one sentence until the token limit; the sentences before the
    loop are usually a fine instruction. Returns the text and a note of what was dropped.
    """
    # Sentences with the whitespace that followed each, so line breaks and lists survive.
    parts = _SENTENCE_END.split(text.strip())
    sentences = [(parts[i], parts[i + 1] if i + 1 < len(parts) else "") for i in range(0, len(parts), 2) if parts[i]]
    dropped = []
    if truncated and sentences and not sentences[-1][0].rstrip().endswith((".", "!", "?", ":", ")")):
        sentences.pop()
        dropped.append("a truncated tail")
    kept, seen = [], set()
    for sentence, gap in sentences:
        key = " ".join(sentence.lower().split())
        if key not in seen:
            seen.add(key)
            kept.append((sentence, gap))
    if len(kept) < len(sentences):
        dropped.append(f"{len(sentences) - len(kept)} repeated sentences")
    text = "".join(sentence + gap for sentence, gap in kept).strip()
    return text, ("dropped " + " and ".join(dropped)) if dropped else None


# Sentences of our own analysis (`TaskFacts.describe`, `compare_outputs`) and of the failure report
# (`format_failures`: "program output ... score: 0.00" in one sentence), which small reasoning models copy into
# their instructions: written for the reasoning model, never for the task model, which sees no score.
_ANALYSIS = re.compile(
    r"median length of|median \d+(\.\d+)? words|how often each occurs|^\(?every expected `"
    r"|^\(?the expected `|^\(?expected `|^expected values are |^the json objects use the keys|^outputs are too long"
    r"|^some outputs are not"
    r"|\bprogram output\b.*\bscore\b\W*(is |was )?[01]\.\d\d\b", re.IGNORECASE)  # both of the report's labels


def strip_analysis(text: str, field: str | None = None) -> tuple[str, int]:
    """`text` without the sentences copied from our data analysis, and how many were dropped.

    An unseen date task ended with "Expected `date` values have a median length of 1 words." in
    the user's prompt: the reasoning model had pasted the facts it was given. What the facts say
    is put back in the task model's terms by `TaskFacts.missing_from` when the rest lacks it.
    With the gold `field`, the failure report's label for it goes too ("The program output
    urgency is always exactly one of: ..." reached a bench prompt).
    """
    label = re.compile(rf"\bprogram output {re.escape(field)}\b", re.IGNORECASE) if field else None
    return _drop_sentences(text, lambda sent: bool(_ANALYSIS.search(sent.strip().lstrip("-*• "))
                                                   or (label and label.search(sent))))


def strip_echo(text: str, request: str, current: str) -> tuple[str, int]:
    """`text` without the sentences that echo `request` (our meta-prompt), and how many were dropped.

    Measured on the bench (amounts, seed 0): the 0.5B model's proposal ended "Keep what works, do not
    repeat changes that the history shows had no effect or hurt, and do not copy specific examples
    verbatim. Write the instructions to the model that performs the task, in the second person."
    (`ProposeInstruction`'s own words), and it reached the picked prompt. A sentence sharing a run of
    `COPY_WORDS` words with the request, where the current instructions do not have that run, goes.
    """
    echoes = _shingles(request) - _shingles(current)
    return _drop_sentences(text, lambda sent: bool(_shingles(sent) & echoes))


def _drop_sentences(text: str, drop: Callable[[str], bool]) -> tuple[str, int]:
    """`text` without its sentences for which `drop` is true (line breaks kept), and how many went."""
    kept_lines, dropped = [], 0
    for line in text.splitlines():
        parts = _SENTENCE_END.split(line)
        sentences = [(parts[i], parts[i + 1] if i + 1 < len(parts) else "") for i in range(0, len(parts), 2)]
        kept = [(sent, gap) for sent, gap in sentences if not drop(sent)]
        dropped += len(sentences) - len(kept)
        if kept or not line.strip():
            kept_lines.append("".join(sent + gap for sent, gap in kept).rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept_lines)).strip(), dropped


COPY_WORDS = 8  # a run of this many words shared with the examples is copying, not instructing


def _shingles(text: str, n: int = COPY_WORDS) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def copies_data(proposal: str, data: str, current: str) -> bool:
    """Whether `proposal` copies a long run of words from the example data (not from `current`)."""
    return bool((_shingles(proposal) & _shingles(data)) - _shingles(current))


def derived_summary(before: str, after: str) -> str:
    """A factual one-line summary when the reasoning model gave none usable."""
    return f"rewrote the instructions ({len(before.split())} → {len(after.split())} words)"


def _gold_values(example: dspy.Example, fields: Sequence[str]) -> list[str]:
    return [str(example[f]) for f in fields if f in example]


def _as_json_keys(text: str) -> list[str] | None:
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        return None
    return sorted(value) if isinstance(value, dict) else None


def _casing(values: Iterable[str]) -> str | None:
    values = [v for v in values if any(c.isalpha() for c in v)]
    if not values:
        return None
    if all(v == v.lower() for v in values):
        return "all lowercase"
    if all(v == v.upper() for v in values):
        return "all uppercase"
    if all(v[:1].isupper() for v in values):
        return "capitalised"
    return None


@dataclass
class TaskFacts:
    """Facts about the expected outputs of one gold field, computed once from train."""

    field: str
    labels: dict[str, int] = field(default_factory=dict)
    median_words: float = 0.0
    casing: str | None = None
    pattern: str | None = None
    json_keys: list[str] | None = None

    @classmethod
    def from_examples(cls, examples: Sequence[dspy.Example], field_name: str) -> TaskFacts:
        values = [v.strip() for ex in examples for v in _gold_values(ex, [field_name])]
        facts = cls(field_name)
        if not values:
            return facts
        counts = Counter(values)
        if len(counts) <= MAX_LABELS and len(counts) <= len(values) / 2:
            facts.labels = dict(counts.most_common())
        facts.median_words = statistics.median(len(v.split()) for v in values)
        facts.casing = _casing(values)
        if all(_DATE.match(v) for v in values):
            facts.pattern = "a date in YYYY-MM-DD form"
        elif all(_NUMBER.match(v) for v in values):
            facts.pattern = "a number only"
        keys = [_as_json_keys(v) for v in values]
        if all(k is not None for k in keys):
            facts.json_keys = sorted({k for ks in keys for k in ks})
            facts.pattern = "a JSON object"
        return facts

    def describe(self) -> str:
        lines = []
        if self.labels:
            lines.append(f"The expected `{self.field}` is always exactly one of: {', '.join(self.labels)}.")
            counts = ", ".join(f"{label} {n}" for label, n in self.labels.items())
            lines.append(f"(How often each occurs in the training data: {counts}.)")
        else:
            lines.append(f"Expected `{self.field}` values have a median length of {self.median_words:g} words.")
        if self.pattern:
            lines.append(f"Every expected `{self.field}` is {self.pattern}.")
        if self.json_keys:
            lines.append(f"The JSON objects use the keys: {', '.join(self.json_keys)}.")
        if self.casing:
            lines.append(f"Expected values are {self.casing}.")
        return "\n".join(lines)

    def for_task_model(self) -> str:
        """The facts as instructions to the model that performs the task, for pasting into a prompt.

        `describe()` is analysis written for the reasoning model ("median length of 1 words", label
        counts): it must never reach a task prompt. Here every fact is an instruction ("Answer with
        the date only, as YYYY-MM-DD."), and a fact that makes no instruction is left out.
        """
        lines = []
        if self.labels:
            lines.append(f"Answer with exactly one of these labels and nothing else: {', '.join(self.labels)}.")
        elif self.json_keys:
            lines.append(f"Answer with a JSON object with exactly these keys: {', '.join(self.json_keys)}.")
        elif self.pattern and self.pattern.startswith("a date"):
            lines.append("Answer with the date only, as YYYY-MM-DD.")
        elif self.pattern == "a number only":
            lines.append("Answer with the number only.")
        elif self.median_words and self.median_words <= 1:
            lines.append("Answer with a single word.")
        elif self.median_words and self.median_words <= 5:
            lines.append("Keep the answer short: a few words, no full sentences.")
        if self.casing and not self.pattern and not self.labels:
            lines.append({"all lowercase": "Write the answer in lowercase.",
                          "all uppercase": "Write the answer in uppercase.",
                          "capitalised": "Start the answer with a capital letter."}[self.casing])
        return " ".join(lines) or "Give the answer in the format the task requires."

    def missing_from(self, instructions: str) -> str | None:
        """A sentence stating what `instructions` fail to state (label set or JSON keys), if any."""
        text = instructions.lower()
        if self.labels and not all(label.lower() in text for label in self.labels):
            labels = ", ".join(self.labels)
            return f"Answer with exactly one of these labels and nothing else: {labels}."
        if self.json_keys and not all(k.lower() in text for k in self.json_keys):
            return f"Answer with a JSON object with exactly these keys: {', '.join(self.json_keys)}."
        if self.pattern and self.pattern.startswith("a date") and "yyyy-mm-dd" not in text:
            return "Answer with the date only, in YYYY-MM-DD form."
        return None


def with_fact(instructions: str, sentence: str) -> str:
    """`instructions` with the data-stated `sentence` (`TaskFacts.missing_from`) appended as its own paragraph."""
    return f"{instructions.rstrip()}\n\n{sentence}".strip()


def compare_outputs(facts: TaskFacts, failures: Sequence[ExampleResult], gold: dict[str, str]) -> str:
    """How the current outputs differ from gold, in words (too long, labels outside the set, ...)."""
    outputs = [str(r.output.get(facts.field, "")).strip() for r in failures if facts.field in r.output]
    if not outputs:
        return ""
    notes = []
    out_words = statistics.median(len(o.split()) for o in outputs)
    gold_words = facts.median_words or 0
    if gold_words and out_words > 2 * gold_words:
        notes.append(f"Outputs are too long: median {out_words:g} words where the expected median is {gold_words:g}.")
    if facts.labels:
        wrong = sorted({o for o in outputs if o not in facts.labels})
        if wrong:
            shown = "; ".join(f'"{w[:60]}"' for w in wrong[:5])
            notes.append(f"Some outputs are not one of the allowed labels: {shown}.")
    if facts.json_keys and any(_as_json_keys(o) is None for o in outputs):
        notes.append("Some outputs are not valid JSON objects.")
    return "\n".join(notes)


def clip(value: Any, limit: int = 300) -> str:
    """`value` as text (non-strings as JSON) of at most `limit` characters, `…` where it was cut."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def example_blocks(blocks: Sequence[Sequence[str]]) -> str:
    """Numbered `<example n>` blocks in one `<data>` wrapper: how examples reach a meta-prompt."""
    if not blocks:
        return ""
    body = "\n".join("\n".join([f"<example {n}>", *lines, f"</example {n}>"]) for n, lines in enumerate(blocks, 1))
    return f"<data>\n{body}\n</data>"


TRACE_CHARS, TRACES_CHARS = 1200, 3600  # one execution trace, and all of them in one report


def format_failures(
    failures: Sequence[ExampleResult],
    examples: dict[str, dspy.Example],
    predictor: str | None = None,
    per_field: int = 300,
) -> str:
    """The worst examples as delimited data: inputs, the program's output, gold, feedback.

    In pipeline mode each example also shows its execution trace (every step, tool calls, which
    step is being optimized) so the reasoning model sees which node failed, while the traces fit
    in `TRACES_CHARS` (the worst examples come first).
    """
    blocks = []
    budget = TRACES_CHARS
    for r in failures:
        ex = examples[r.example_id]
        parts = [f"input {k}: {clip(v, per_field)}" for k, v in ex.inputs().items()]
        agent = AgentTrace.from_dict(r.agent_trace) if r.agent_trace else None
        if agent is not None and agent.is_pipeline and budget > 200:
            text = agent.render(value_chars=200, max_chars=min(TRACE_CHARS, budget), delimit=False)
            budget -= len(text)
            parts.append(f"execution trace ([optimize] marks the step being improved):\n{text}")
        elif predictor is not None:
            for step in r.trace:
                if step["predictor"] == predictor:
                    parts.append(f"this step's output: {clip(json.dumps(step['outputs']), per_field)}")
        for k in label_fields(ex):
            parts.append(f"program output {k}: {clip(r.output.get(k, ''), per_field)}")
            parts.append(f"expected {k}: {clip(ex[k], per_field)}")
        parts.append(f"score: {r.score:.2f}")
        if r.feedback:
            parts.append(f"feedback: {clip(r.feedback, per_field)}")
        blocks.append(parts)
    return example_blocks(blocks)


class ProposalRejected(Exception):
    """Every attempt produced an empty, unchanged or unparseable proposal."""


@dataclass
class Proposal:
    instructions: str
    change_summary: str
    failure_patterns: str
    repaired: str | None = None
    attempts: int = 1
    salvaged: str | None = None
    rejected: str | None = None  # why the model's replies were refused, when this is a fallback


class Proposer:
    """Calls the reasoning model through DSPy signatures, with retries and grounding repair."""

    def __init__(self, lm: dspy.LM, evaluator: Evaluator, *, source_model: str | None = None, attempts: int = 3,
                 max_tokens: int = REASONING_MAX_TOKENS):
        # A full instruction plus a diagnosis needs more room than a task answer.
        self.lm = lm.copy(max_tokens=max_tokens)
        self.evaluator = evaluator
        self.source_model = source_model
        self.attempts = attempts

    def _run(self, signature: type[dspy.Signature], attempt: int, **inputs: Any) -> tuple[dspy.Prediction, bool]:
        """One reply and whether it was cut off at max_tokens (JSON repair hides that otherwise)."""
        # A retry must really ask again: vary the rollout id (and warm the temperature) so
        # neither DSPy's cache nor greedy decoding hands back the rejected reply.
        lm = self.lm if attempt == 0 else self.lm.copy(rollout_id=attempt, temperature=0.7)

        def call() -> tuple[dict[str, Any], bool]:
            own = lm.copy()  # its own history: replies asked in parallel (PDO) never read each other's
            with dspy.context(lm=own, adapter=dspy.JSONAdapter()):
                reply = dspy.Predict(signature)(**inputs)
            truncated = any(getattr(h.get("response"), "finish_reason", None) == "length" for h in own.history)
            return {k: reply.get(k) for k in signature.output_fields}, truncated

        key = {"signature": signature.__name__, "attempt": attempt, "model": str(lm.model), "inputs": inputs}
        fields, truncated = self.evaluator.reasoned(key, call)
        return dspy.Prediction(**fields), truncated

    def ask(self, signature: type[dspy.Signature], check: Callable[[dspy.Prediction, bool, int], T] | None = None,
            **inputs: Any) -> T | dspy.Prediction:
        """Ask `signature` up to `attempts` times; the first reply `check` accepts wins.

        `check(reply, truncated, attempt)` returns what the caller wants from the reply or raises
        `ProposalRejected` with the reason it is unusable. Parse and provider failures are
        retried too; when every attempt fails, `ProposalRejected` lists every reason.
        """
        reasons = []
        for attempt in range(self.attempts):
            try:
                reply, truncated = self._run(signature, attempt, **inputs)
            except ProviderAuthError:
                raise
            except Exception as exc:  # parse failures, truncation, provider errors: retry, then reject
                # A `ReplayedFailure` is the same failure, paid before a resume: same reason text.
                reasons.append(str(exc) if isinstance(exc, ReplayedFailure) else short_error(exc, 120))
                continue
            if check is None:
                return reply
            try:
                return check(reply, truncated, attempt)
            except ProposalRejected as exc:
                reasons.append(str(exc))
        raise ProposalRejected("; ".join(reasons))

    def rewrite(
        self,
        signature: type[dspy.Signature],
        *,
        current: str,
        facts: TaskFacts | None,
        data: str = "",
        output_field: str = "revised_instructions",
        **inputs: Any,
    ) -> Proposal:
        """New instructions from `signature`, refused when empty, unchanged or copied from `data`.

        A proposal that drops the label set or format computed from the data gets it back.
        """

        def check(reply: dspy.Prediction, truncated: bool, attempt: int) -> Proposal:
            text, salvaged = salvage(strip_log_lines(reply.get(output_field) or ""), truncated)
            text, copied = strip_analysis(text, facts.field if facts is not None else None)
            text, echoed = strip_echo(text, signature.instructions, current)
            for n, what in ((copied, "copied from the data analysis"), (echoed, "echoing our request")):
                if n:
                    note = f"dropped {n} sentence{'s' * (n != 1)} {what}"
                    salvaged = f"{salvaged}; {note}" if salvaged else note
            if not text:
                raise ProposalRejected("empty instructions" + (" (once copied sentences were dropped)"
                                                               * bool(copied or echoed)))
            if text == current.strip():
                raise ProposalRejected("unchanged instructions")
            if data and copies_data(text, data, current):
                raise ProposalRejected("copied example text instead of writing instructions")
            summary = " ".join(strip_log_lines(reply.get("change_summary") or "").split())
            patterns = salvage(reply.get("failure_patterns") or "", truncated)[0]
            proposal = Proposal(text, summary or derived_summary(current, text), patterns, attempts=attempt + 1,
                                salvaged=salvaged)
            if facts is not None and (fix := facts.missing_from(text)):
                proposal.instructions = f"{text}\n\n{fix}"
                proposal.repaired = fix
                if proposal.instructions.strip() == current.strip():  # it only dropped the data's sentence
                    raise ProposalRejected("unchanged instructions once the dropped fact was restored")
            return proposal

        return self.ask(signature, check, **inputs)

    def grounding(self, facts: TaskFacts | None, differences: str = "") -> str:
        """The facts sent with every rewrite request (plus migration context for `source_model`)."""
        grounded = "\n".join(x for x in (facts.describe() if facts else "", differences) if x)
        if self.source_model:
            grounded += (
                f"\nThe instructions were written for {self.source_model}; adapt idioms of that model "
                "family to the model being optimized."
            )
        return grounded or "(none computed)"

    def propose_instruction(
        self,
        *,
        current: str,
        facts: TaskFacts | None,
        failures: str,
        differences: str,
        history: str,
        step_name: str,
    ) -> Proposal:
        try:
            return self.rewrite(
                ProposeInstruction,
                current=current,
                facts=facts,
                data=f"{failures}\n{history}",
                step_name=step_name,
                current_instructions=current,
                task_facts=self.grounding(facts, differences),
                failures=failures,
                rewrite_history=history or "(no earlier changes)",
            )
        except ProposalRejected as exc:
            fix = facts.missing_from(current) if facts is not None else None
            if fix is None:
                raise
            # Every reply was rejected, but the data tells us what the instructions lack: state it.
            return Proposal(
                f"{current.strip()}\n\n{fix}",
                "stated the output format computed from the data (the reasoning model's proposals were rejected)",
                "",
                repaired=fix,
                attempts=self.attempts,
                rejected=str(exc),
            )
