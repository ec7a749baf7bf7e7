"""A small tool-using shop assistant in DSPy, for pipeline mode (see README.md).

Three steps: `find` (a predictor) names the product a customer asks about, `lookup` (a tool)
reads it from the shop's catalogue, `answer` (a predictor, marked with `reflex_dspy.optimize`)
writes the reply. Only `answer` is optimized; `find` and the tool are context the judge sees.
The catalogue is invented, so a model cannot know these prices: a reply is right only if it
uses what the tool returned.
"""

from __future__ import annotations

import re
from typing import Literal

import dspy

import reflex_dspy

CATALOGUE = {
    "desk lamp": (34, 5),
    "office chair": (129, 0),
    "monitor stand": (45, 12),
    "keyboard": (59, 3),
    "mouse pad": (9, 40),
    "webcam": (72, 0),
    "headset": (88, 7),
    "laptop sleeve": (25, 18),
    "usb hub": (19, 0),
    "cable tray": (14, 9),
}
Product = Literal[tuple(CATALOGUE)]


def lookup(product: str) -> str:
    """The catalogue entry of a product: its price and how many are in stock."""
    if product not in CATALOGUE:
        return f"{product}: not in the catalogue"
    price, stock = CATALOGUE[product]
    return f"{product}: price {price} dollars, {stock} in stock"


class FindProduct(dspy.Signature):
    """Which product of the shop is the customer asking about?"""

    question: str = dspy.InputField()
    product: Product = dspy.OutputField()


class Answer(dspy.Signature):
    """Reply to the customer."""

    question: str = dspy.InputField()
    catalogue_entry: str = dspy.InputField(desc="what the lookup tool returned for the product")
    answer: str = dspy.OutputField()


class ShopAssistant(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.find = dspy.Predict(FindProduct)
        self.lookup = dspy.Tool(lookup)
        self.answer = reflex_dspy.optimize(dspy.Predict(Answer))

    def forward(self, question: str) -> dspy.Prediction:
        # JSONAdapter with typed outputs: a small local model's replies then always parse.
        with dspy.context(adapter=dspy.JSONAdapter()):
            product = self.find(question=question).product
            entry = self.lookup(product=product)
            return self.answer(question=question, catalogue_entry=entry)


def build_program() -> ShopAssistant:
    """The factory `reflex-dspy optimize --pipeline-file agent.py` calls."""
    return ShopAssistant()


_ENTRY = re.compile(r"price (\d+) dollars, (\d+) in stock")
_SOLD_OUT = re.compile(
    r"out of stock|not (?:currently )?(?:in stock|available)|unavailable|sold out|\b0 in stock"
)


def faithful(example: dspy.Example, prediction: dspy.Prediction, trace: object = None) -> float:
    """A metric over the whole trace: does the reply state the price and stock the lookup tool returned?

    Half a point for the price, half for the stock (the count when there are some, "out of
    stock" when there are none). It reads the tool's result from `reflex_dspy.current_trace()`,
    which the evaluator sets while a metric runs, so it checks the answer against what the tool
    said rather than against a fixed reference.
    """
    run = reflex_dspy.current_trace()
    results = [n.outputs.get("result", "") for n in run.nodes if n.kind == "tool"] if run else []
    found = _ENTRY.search(str(results[-1])) if results else None
    if found is None:
        return 0.0  # no catalogue entry was looked up: nothing the reply says can be trusted
    price, stock = found.groups()
    reply = str(prediction.answer).lower()
    says_price = re.search(rf"(?<![\d.]){price}(?:\.00)?(?!\d)", reply) is not None
    sold_out = _SOLD_OUT.search(reply) is not None
    says_stock = (
        sold_out
        if stock == "0"
        else (not sold_out and re.search(rf"(?<!\d){stock}(?!\d)", reply) is not None)
    )
    return (says_price + says_stock) / 2
