"""Deterministic fake LM engines for fast unit tests (never used by the product).

A fake engine answers from the text it receives, so a better prompt really scores better:
`respond(system, messages) -> str` sees the system prompt (the instructions) and the turns.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage

Respond = Callable[[str, list[dict]], str]
_ids = itertools.count()


class FakeEngine:
    """A dspy 3.4 custom engine: `complete(Request) -> Response` from a Python function."""

    supports_response_schema = False

    def __init__(self, respond: Respond, error: Callable[[int], Exception | None] | None = None):
        self.respond = respond
        self.error = error  # error(call_number) -> exception to raise, for fault tests
        self.calls = 0
        self.requests: list[tuple[str, list[dict]]] = []
        self._lock = threading.Lock()

    def complete(self, request):
        system = request.system if isinstance(request.system, str) or request.system is None else "".join(
            p.text for p in request.system
        )
        messages = [{"role": m.role, "content": m.text or ""} for m in request.messages]
        with self._lock:
            self.calls += 1
            number = self.calls
            self.requests.append((system or "", messages))
        if self.error is not None and (exc := self.error(number)) is not None:
            raise exc
        text = self.respond(system or "", messages)
        n_in = sum(len(m["content"].split()) for m in messages) + len((system or "").split())
        return Response(
            id=None,
            model="fake",
            message=Message.assistant((TextPart(text),)),
            finish_reason="stop",
            usage=Usage(input_tokens=n_in, output_tokens=len(text.split()), total_tokens=n_in + len(text.split())),
        )

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self):
        pass


def fake_lm(respond: Respond, name: str | None = None, **engine_kwargs) -> dspy.LM:
    """A `dspy.LM` backed by `FakeEngine`, with DSPy's cache off and no inner retries."""
    engine = FakeEngine(respond, **engine_kwargs)
    lm = dspy.LM(name or f"fake/model-{next(_ids)}", engine=engine, cache=False, num_retries=0)
    lm.fake_engine = engine
    return lm


# -- the routing task most tests share (conftest.py re-exports it; bench/ uses it too) ----------
KEYWORDS = {
    "billing": ["charged", "invoice", "refund", "price", "card"],
    "shipping": ["delivery", "package", "parcel", "courier", "order"],
    "technical": ["crash", "error", "slow", "broken", "freezes"],
}
LABELS = list(KEYWORDS)


def truth(text: str) -> str:
    text = text.lower()
    return next(label for label, words in KEYWORDS.items() if any(w in text for w in words))


def routing_examples(n_per_label: int = 8, ask: str = " needs help") -> list[dspy.Example]:
    """Distinct messages per label; the fake task model routes them by keyword. `ask` is part of
    the wording (bench/ leaves it out: see `workloads.examples`)."""
    out = []
    for i in range(n_per_label):
        for label, words in KEYWORDS.items():
            text = f"Customer {i}: my {words[i % len(words)]} issue number {i}{ask} ({label[:2]}{i})."
            out.append(dspy.Example(input=text, output=label).with_inputs("input"))
    return out


def bangs_respond(system: str, messages: list[dict]) -> str:
    """A task model that answers right for customers numbered below 4 plus the "!" in the
    instructions: on `bangs_splits`' validation each "!" wins exactly one example."""
    text = messages[-1]["content"]
    number = int(re.search(r"Customer (\d+)", text).group(1))
    return truth(text) if number < 4 + system.count("!") else "unsure"


def bangs_splits() -> tuple[list[dspy.Example], list[dspy.Example]]:
    """(train, val) of the routing examples: val is the billing ones, customers 0..7, one each."""
    examples = routing_examples(8)
    return [ex for ex in examples if ex.output != "billing"], [ex for ex in examples if ex.output == "billing"]
