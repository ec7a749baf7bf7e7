"""A token budget for the embedded task model's answers when the expected outputs are short labels.

The embedded model decodes ~40 tokens/s on 2 CPU cores. Asked a vague question ("how does the
customer feel?") it answers in paragraphs, up to its 256-token default: 6 s per answer, most of a
README run spent on answers that are wrong anyway when the task wants one word. When every
optimized predictor answers with exactly the gold field and train's gold values form a small
label set (`TaskFacts.labels`), its answers are capped at a few times the longest label plus room
for the adapter's format: a right answer always fits, a ramble stops early (the summary counts
those as "model replies that hit the token limit").

Only the in-process embedded model is capped, and only when its max_tokens was left unset: a
remote model's rambling costs no local CPU time, and a reasoning model (o1, gpt-5, ...) spends
its hidden reasoning out of the same budget.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

import dspy

from reflex_dspy.llama_engine import LlamaCppEngine

if TYPE_CHECKING:
    from reflex_dspy.proposals import TaskFacts

# Room for what surrounds the label: JSON braces and key, ChatAdapter's field markers, a short
# "Answer:" preamble. Times the label's own length, for a label written with a little context.
FORMAT_TOKENS = 24
LABEL_FACTOR = 4
CHARS_PER_TOKEN = 3  # a conservative estimate for English (BPE tokenizers average ~4)


def estimated_tokens(text: str) -> int:
    """An upper-side guess at `text`'s token count without the model's tokenizer."""
    return max(len(text.split()), math.ceil(len(text) / CHARS_PER_TOKEN), 1)


def label_answer_budget(
    student: dspy.Module, predictor_names: Collection[str], facts: Mapping[str, TaskFacts]
) -> int | None:
    """max_tokens for answers that are one label each, or None when some answer is more than that."""
    longest = 0
    named = dict(student.named_predictors())
    for name in predictor_names:
        fact = facts.get(name)
        predictor = named.get(name)
        if fact is None or not fact.labels or predictor is None:
            return None
        if list(predictor.signature.output_fields) != [fact.field]:
            return None  # a reasoning or second output field is also written: its length is unknown
        longest = max(longest, *(estimated_tokens(label) for label in fact.labels))
    return FORMAT_TOKENS + LABEL_FACTOR * longest if longest else None


def _cap(lm: Any, budget: int) -> Any:
    if isinstance(lm, dspy.LM) and isinstance(lm.engine, LlamaCppEngine) and lm.kwargs.get("max_tokens") is None:
        return lm.copy(max_tokens=budget)
    return lm


def capped(task_lm: Any, budget: int | None) -> tuple[Any, int | None]:
    """`task_lm` (one LM or a {label: LM} mapping) with embedded models' answers capped at `budget`,
    and the budget if it was applied to any model (None otherwise: what the run reports)."""
    if budget is None:
        return task_lm, None
    if isinstance(task_lm, Mapping):
        lms = {label: _cap(lm, budget) for label, lm in task_lm.items()}
        changed = any(lms[label] is not lm for label, lm in task_lm.items())
        return lms, budget if changed else None
    lm = _cap(task_lm, budget)
    return lm, budget if lm is not task_lm else None
