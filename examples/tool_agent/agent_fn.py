"""The same shop assistant through the `pipeline_fn(prompt, input) -> AgentTrace` contract.

This is the reference's way in, for agents not written as one DSPy program: wrap the agent in
a function that takes the prompt being optimized and one input, runs every step, and returns
the steps as an `AgentTrace` (`optimize=True` on the node the prompt drives). Reflex re-runs the
function for every candidate prompt and judges the whole trace.

    reflex-dspy optimize prompt.md --pipeline-file agent_fn.py --inputs-file inputs.jsonl \
        --judge embedded --judge-criteria rubric.md --sample-timeout 120

Keep every model call at temperature 0 (the embedded model's default), so that two prompts are
compared on the same inputs and not on sampling noise.
"""

from __future__ import annotations

import dspy
from agent import Answer, FindProduct, lookup  # this file's folder is on sys.path when reflex imports it

import reflex_dspy
from reflex_dspy import AgentTrace

LM = reflex_dspy.resolve_lm("embedded")
find = dspy.Predict(FindProduct)


def pipeline_fn(prompt: str, input: str) -> AgentTrace:
    trace = AgentTrace()
    with dspy.context(lm=LM, adapter=dspy.JSONAdapter()):
        product = find(question=input).product
        trace.add("find", inputs={"question": input}, outputs={"product": product})
        entry = lookup(product)
        trace.tool("lookup", {"product": product}, entry)
        answer = dspy.Predict(Answer.with_instructions(prompt))(question=input, catalogue_entry=entry).answer
        trace.add(
            "answer",
            inputs={"question": input, "catalogue_entry": entry},
            outputs={"answer": answer},
            optimize=True,
        )
    trace.final_answer = answer
    return trace
