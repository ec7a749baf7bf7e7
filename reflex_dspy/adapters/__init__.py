"""Adapters between what users bring and DSPy: prompt files as programs, plain system prompts,
and pipeline mode's `pipeline_fn` contract, pipeline files and inputs files."""

from reflex_dspy.adapters.pipeline_file import load_inputs, load_pipeline_file, make_program
from reflex_dspy.adapters.pipeline_fn import PipelineFnProgram
from reflex_dspy.adapters.prompt_program import PromptProgram, load_prompt, program_from_prompt
from reflex_dspy.adapters.system_prompt import SystemPromptAdapter

__all__ = [
    "PipelineFnProgram", "PromptProgram", "SystemPromptAdapter", "load_inputs", "load_pipeline_file",
    "load_prompt", "make_program", "program_from_prompt",
]
