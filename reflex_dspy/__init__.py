"""reflex_dspy: optimize the prompts of DSPy programs, with an auditable record of every step.

Heavy modules (dspy, litellm, llama.cpp) are imported lazily so that `reflex-dspy --help`
stays instant; the public names below resolve on first access.
"""

from reflex_dspy._env import apply_env_defaults

apply_env_defaults()

__version__ = "0.1.0"

_LAZY = {
    "Reflex": "reflex_dspy.reflex",
    "OptimizerConfig": "reflex_dspy.config",
    "Candidate": "reflex_dspy.candidate",
    "Evaluator": "reflex_dspy.evaluation",
    "RunResult": "reflex_dspy.result",
    "RunStore": "reflex_dspy.tracking.store",  # reads .reflex/runs: ours and aevyra-reflex's
    "register_strategy": "reflex_dspy.strategies",
    "list_strategies": "reflex_dspy.strategies",
    "get_strategy": "reflex_dspy.strategies",
    "embedded_lm": "reflex_dspy.lm",
    "resolve_lm": "reflex_dspy.lm",
    # pipeline mode
    "AgentTrace": "reflex_dspy.trace",
    "TraceNode": "reflex_dspy.trace",
    "current_trace": "reflex_dspy.trace",
    "optimize": "reflex_dspy.marking",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'reflex_dspy' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
