"""Prompt file → a one-predictor DSPy program, for users who have a prompt, not a program.

The program's single predictor `predict` has the signature `input: str -> output: str` whose
instructions are the prompt text, and it always runs through `SystemPromptAdapter`, so the
model sees exactly the prompt as its system message and the example's input as the user
message. Because the prompt lives in the predictor's instructions (and demos in its demos),
every optimizer and `Candidate.apply` edits it like any DSPy program, and `save()`/`load()`
round-trip it.
"""

from __future__ import annotations

from pathlib import Path

import dspy

from reflex_dspy.adapters.system_prompt import SystemPromptAdapter
from reflex_dspy.data import read_text_file
from reflex_dspy.errors import UsageError

PROMPT_SIGNATURE = "input: str -> output: str"


def load_prompt(path: str | Path) -> str:
    """The prompt text of a UTF-8 file, without surrounding whitespace.

    Surrounding whitespace is dropped because DSPy strips instructions anyway; returning the
    stripped text keeps "the prompt we loaded" and "the prompt the model sees" identical.
    """
    path = Path(path)
    text = read_text_file(path, "prompt")
    if not text.strip():
        raise UsageError(f"{path}: prompt file is empty")
    return text.strip()


class PromptProgram(dspy.Module):
    """A system prompt as a DSPy program: `forward(input) -> Prediction(output=...)`."""

    def __init__(self, prompt: str) -> None:
        super().__init__()
        if not prompt or not prompt.strip():
            # DSPy would silently substitute "Given the fields ..." for empty instructions.
            raise UsageError("the prompt is empty")
        self.predict = dspy.Predict(dspy.Signature(PROMPT_SIGNATURE).with_instructions(prompt))

    @property
    def prompt(self) -> str:
        """The current system prompt (the predictor's instructions, after any optimization)."""
        return self.predict.signature.instructions

    def forward(self, input: str) -> dspy.Prediction:
        # Forced per call, not configured globally: the user's other programs keep their adapter.
        with dspy.context(adapter=SystemPromptAdapter()):
            return self.predict(input=input)

    async def aforward(self, input: str) -> dspy.Prediction:
        with dspy.context(adapter=SystemPromptAdapter()):
            return await self.predict.acall(input=input)


def program_from_prompt(text: str) -> PromptProgram:
    """A `PromptProgram` whose instructions are exactly `text` (surrounding whitespace aside)."""
    return PromptProgram(text)
