"""Adapters between what users bring and DSPy: prompt files as programs, plain system prompts."""

from reflex_dspy.adapters.prompt_program import PromptProgram, load_prompt, program_from_prompt
from reflex_dspy.adapters.system_prompt import SystemPromptAdapter

__all__ = ["PromptProgram", "SystemPromptAdapter", "load_prompt", "program_from_prompt"]
