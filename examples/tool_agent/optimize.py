"""Optimize the `answer` step of the shop assistant from Python (run it from this folder).

The metric is `faithful` (agent.py): it reads the lookup tool's result from the example's
execution trace and checks that the reply states that price and stock.
"""

import json
from pathlib import Path

import dspy
from agent import ShopAssistant, faithful

import reflex_dspy

agent = ShopAssistant()
agent.answer.signature = agent.answer.signature.with_instructions(Path("prompt.md").read_text().strip())
rows = [json.loads(line) for line in Path("inputs.jsonl").read_text().splitlines()]
examples = [
    dspy.Example(question=r["input"], answer=r["ideal"], id=r["id"]).with_inputs("question") for r in rows
]

lm = reflex_dspy.resolve_lm("embedded")
optimizer = reflex_dspy.Reflex(
    faithful, strategy="fewshot", task_lm=lm, reasoning_lm=lm, max_iterations=2, train_ratio=0.5
)
better = optimizer.compile(agent, trainset=examples)
print(better.result.summary())
