"""What a run records about itself besides scores: the info document written at its start
(settings, splits, models, the initial prompt, all redacted) and one line of the live trials feed.

Apart from the lifecycle because both are plain descriptions built from the run's inputs; the
lifecycle decides when they are written, the trackers where.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from reflex_dspy.candidate import Candidate
from reflex_dspy.config import OptimizerConfig
from reflex_dspy.data import example_id
from reflex_dspy.metrics import metric_names
from reflex_dspy.splits import Splits
from reflex_dspy.trace import AgentTrace, clip
from reflex_dspy.tracking.redact import redact_uri

TRIAL_TEXT_CHARS = 600  # feedback and output in a trials.jsonl line are clipped to this


def describe_lm(lm: Any) -> str:
    if isinstance(lm, Mapping):  # several task models
        return ", ".join(lm)
    return str(getattr(lm, "model", lm))


def run_info(config: OptimizerConfig, strategy: Any, splits: Splits, initial: Candidate, metric: Any,
             lms: tuple[Any, Any], budget: int | None, answer_max_tokens: int | None, warnings: list[str],
             metadata: dict[str, Any]) -> dict[str, Any]:
    """The run's info document; `lms` is (task model, reasoning model)."""
    return {
        "config": {**config.public_dict(), "reasoning_base_url": redact_uri(config.reasoning_base_url),
                   "extra_kwargs": redacted(config.extra_kwargs)},
        "strategy_params": redacted({k: v for k, v in strategy.get_params().items()
                                     if k != "metric" and _jsonable(v)}),
        "split_sizes": {k: len(getattr(splits, k)) for k in ("train", "val", "test")},
        "split_ids": {k: [example_id(e) for e in getattr(splits, k)] for k in ("train", "val", "test")},
        "initial_candidate": initial.to_dict(),
        "initial_prompt": initial.render(),
        "metrics": metric_names(metric),
        "models": {"task": describe_lm(lms[0]), "reasoning": describe_lm(lms[1])},
        "budget": budget,
        "answer_max_tokens": answer_max_tokens,
        "warnings": warnings,
        "metadata": redacted(metadata),
    }


def trial_line(key: tuple, result: Any, phase: str, iteration: int | None, split: str | None) -> dict[str, Any]:
    """One scored (candidate, example) pair for the live trials feed (trials.jsonl).

    The trace is kept only when it says more than input and answer (pipeline mode: several nodes
    or tool calls), so the dashboard can link to it.
    """
    fingerprint, eid, _, eval_pass = key
    trace = result.agent_trace
    if trace and not AgentTrace.from_dict(trace).is_pipeline:
        trace = None
    output = result.output if len(result.output) != 1 else next(iter(result.output.values()))
    return {
        "time": round(time.time(), 3), "phase": phase, "iteration": iteration,
        "candidate": fingerprint, "example_id": eid, "split": split, "pass": eval_pass,
        "score": result.score, "by_metric": result.by_metric,
        "feedback": clip(result.feedback, TRIAL_TEXT_CHARS) if result.feedback else None,
        "output": clip(output if isinstance(output, str) else json.dumps(output, default=str), TRIAL_TEXT_CHARS)
        if result.output else None,
        "error": result.error, "trace": trace,
    }


def redacted(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters safe to record: a URL such as PDO's `storage` loses its credentials."""
    return {k: redact_uri(v) if isinstance(v, str) else v for k, v in params.items()}


def _jsonable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | type(None) | list | dict)
