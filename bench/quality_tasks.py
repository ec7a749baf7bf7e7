"""The five tasks of the quality-per-budget benchmark: the embedded model's score on each depends
on the prompt, and every initial instruction leaves out what the metric checks.

- `routing`: 48 support messages, four teams; the instruction never names the teams.
- `dates`: 48 sentences with a date written in one of several styles; the metric wants ISO 8601,
  the instruction only says "find the date".
- `web_of_lies`: a balanced 48-question slice of `../shared/data/prompt-ops/web_of_lies.json`;
  the metric wants a bare Yes/No.
- `facility_urgency`: a balanced 48-email slice of `../shared/data/prompt-ops/facility_support.json`
  (16 each of low / medium / high urgency); the instruction never names the levels.
- `amounts`: 48 payment messages with an amount written in one of several styles ("$1,234.50",
  "1234.5 USD", "EUR 980"); the metric wants the number alone with two decimals ("1234.50"),
  the instruction only says "find the amount paid".

Held out (`HELD_OUT`), not in the headline: `facility_sentiment`, a balanced 48-email slice of the
same file (16 each of negative / neutral / positive sentiment); the instruction never names the labels.

Outputs are plain `str` fields (a `Literal` would state the label set in the JSON schema).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dspy

ROOT = Path(__file__).resolve().parent.parent
WEB_OF_LIES = ROOT.parent / "shared" / "data" / "prompt-ops" / "web_of_lies.json"
SIZE = 48  # examples per task
FACILITY = ROOT.parent / "shared" / "data" / "prompt-ops" / "facility_support.json"
SIZES = (16, 8, 24)  # train, val, test: a test split of 24 (the whole 48 used)


@dataclass(frozen=True)
class Task:
    name: str
    signature: type[dspy.Signature]
    load: Callable[[], list[dspy.Example]]
    output: str  # the output field the metric reads

    def program(self) -> dspy.Module:
        return dspy.Predict(self.signature)

    def score(self, example: dspy.Example, pred: dspy.Prediction) -> float:
        return float(normalize(getattr(pred, self.output, "")) == normalize(example[self.output]))

    def feedback(self, example: dspy.Example, pred: dspy.Prediction) -> str:
        got = getattr(pred, self.output, "")
        if self.score(example, pred):
            return f"Correct: {got!r}."
        return f"Wrong: the answer was {got!r}, expected exactly {example[self.output]!r}."


def normalize(text: object) -> str:
    return re.sub(r"[\s.!\"']+$", "", str(text).strip().lower())


class Routing(dspy.Signature):
    """You help the support team of a software company. Read the customer's message and say which team should handle it."""

    message: str = dspy.InputField()
    team: str = dspy.OutputField()


class Dates(dspy.Signature):
    """Find the date mentioned in the text."""

    text: str = dspy.InputField()
    date: str = dspy.OutputField()


class WebOfLies(dspy.Signature):
    """Answer the question."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


def _routing() -> list[dspy.Example]:
    rows = [json.loads(line) for line in (ROOT / "examples" / "support_routing" / "data.jsonl").open()]
    return [dspy.Example(id=f"r{i}", message=r["input"], team=r["ideal"]).with_inputs("message")
            for i, r in enumerate(rows)]


MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
EVENTS = ["The contract was signed", "Our office reopened", "The parcel arrived", "She was born",
          "The invoice is due", "The concert takes place", "We moved house", "The trial started"]


def _ordinal(d: int) -> str:
    return f"{d}{'th' if 10 <= d % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(d % 10, 'th')}"


def _dates() -> list[dspy.Example]:
    rng = random.Random(7)
    styles = [
        lambda d, m, y: f"on {MONTHS[m - 1]} {_ordinal(d)}, {y}",
        lambda d, m, y: f"on {d} {MONTHS[m - 1]} {y}",
        lambda d, m, y: f"on the {_ordinal(d)} of {MONTHS[m - 1]} {y}",
        lambda d, m, y: f"on {MONTHS[m - 1][:3]}. {d}, {y}",
    ]
    out = []
    for i in range(SIZE):
        d, m, y = rng.randint(1, 28), rng.randint(1, 12), rng.randint(1990, 2030)
        text = f"{EVENTS[i % len(EVENTS)]} {styles[i % len(styles)](d, m, y)}."
        out.append(dspy.Example(id=f"d{i}", text=text, date=f"{y:04d}-{m:02d}-{d:02d}").with_inputs("text"))
    return out


def _web_of_lies() -> list[dspy.Example]:
    rows = json.loads(WEB_OF_LIES.read_text())
    yes = [r for r in rows if r["answer"] == "Yes"][: SIZE // 2]
    no = [r for r in rows if r["answer"] == "No"][: SIZE // 2]
    return [dspy.Example(id=f"w{i}", question=r["input"].removeprefix("Question: "), answer=r["answer"])
            .with_inputs("question") for i, r in enumerate(yes + no)]


class FacilityUrgency(dspy.Signature):
    """Read the email sent to a facility services company and rate how urgent it is."""

    email: str = dspy.InputField()
    urgency: str = dspy.OutputField()


class FacilitySentiment(dspy.Signature):
    """Read the email sent to a facility services company and say what its sentiment is."""

    email: str = dspy.InputField()
    sentiment: str = dspy.OutputField()


class Amounts(dspy.Signature):
    """Find the amount paid in the message."""

    message: str = dspy.InputField()
    amount: str = dspy.OutputField()


def _facility_slice(key: str, levels: tuple[str, ...], prefix: str) -> list[dspy.Example]:
    """A balanced slice of facility_support.json: the first SIZE / len(levels) emails of each level of `key`."""
    rows = json.loads(FACILITY.read_text())
    by_level: dict[str, list[dict]] = {level: [] for level in levels}
    for r in rows:
        level = json.loads(r["answer"])[key]
        if len(by_level[level]) < SIZE // len(levels):
            by_level[level].append(r)
    picked = [r for level in by_level.values() for r in level]
    return [dspy.Example(id=f"{prefix}{i}", email=r["fields"]["input"], **{key: json.loads(r["answer"])[key]})
            .with_inputs("email") for i, r in enumerate(picked)]


def _facility() -> list[dspy.Example]:
    return _facility_slice("urgency", ("low", "medium", "high"), "f")


def _facility_sentiment() -> list[dspy.Example]:
    return _facility_slice("sentiment", ("negative", "neutral", "positive"), "s")


PAYERS = ["Anna", "The Lopez family", "Our school", "Mr. Chen", "The bakery", "A neighbour", "Dr. Okafor", "The club"]
ITEMS = ["the plumbing repair", "last month's rent", "two concert tickets", "the new laptop", "the catering",
         "a used bicycle", "the annual membership", "the car service"]


def _amounts() -> list[dspy.Example]:
    rng = random.Random(11)
    styles = [
        lambda v: f"${v:,.2f}",
        lambda v: f"{v:g} USD",
        lambda v: f"EUR {v:,.2f}",
        lambda v: f"{v:,.2f} dollars",
    ]
    out = []
    for i in range(SIZE):
        value = round(rng.uniform(5, 5000), rng.choice([0, 1, 2]))
        other = rng.randint(2, 99)  # a second number in the text that is not the amount
        text = (f"{PAYERS[i % len(PAYERS)]} paid {styles[i % len(styles)](value)} for {ITEMS[(i * 3) % len(ITEMS)]} "
                f"(reference {other}).")
        out.append(dspy.Example(id=f"a{i}", message=text, amount=f"{value:.2f}").with_inputs("message"))
    return out


TASKS = {
    "routing": Task("routing", Routing, _routing, "team"),
    "dates": Task("dates", Dates, _dates, "date"),
    "web_of_lies": Task("web_of_lies", WebOfLies, _web_of_lies, "answer"),
    "facility_urgency": Task("facility_urgency", FacilityUrgency, _facility, "urgency"),
    "amounts": Task("amounts", Amounts, _amounts, "amount"),
}
# Held out: never looked at while auto was changed; measured once, after, to see whether what
# auto does carries over to a task it was not adjusted on (results in bench/results/held-out).
HELD_OUT = {
    "facility_sentiment": Task("facility_sentiment", FacilitySentiment, _facility_sentiment, "sentiment"),
}
ALL_TASKS = {**TASKS, **HELD_OUT}  # what a single run may name
SHARED_DATA = {"web_of_lies": WEB_OF_LIES, "facility_urgency": FACILITY, "facility_sentiment": FACILITY}


def available() -> list[str]:
    """The tasks whose data is present (two need the shared data folder beside the repo)."""
    return [n for n in TASKS if n not in SHARED_DATA or SHARED_DATA[n].exists()]


def split(examples: list[dspy.Example], seed: int, sizes: tuple[int, int, int] = SIZES):
    """The seed's train / val / test split: the same for every optimizer at that seed."""
    pool = sorted(examples, key=lambda e: e.id)
    random.Random(seed).shuffle(pool)
    a, b, c = sizes
    return pool[:a], pool[a:a + b], pool[a + b:a + b + c]
