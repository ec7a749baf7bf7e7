"""What one compile runs with, resolved once: the run lifecycle's only input besides the data.

`Reflex.compile` resolves its options here (the task model from `dspy.settings` when none was
given, the reasoning model, the metric with its judge, the strategy instance) and hands the
frozen result to `RunLifecycle`. The lifecycle therefore never reads the `Reflex` object (nor
imports `reflex.py`), and a `Reflex` stays reusable: each compile resolves afresh.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dspy

from reflex_dspy.config import OptimizerConfig
from reflex_dspy.errors import UsageError
from reflex_dspy.metrics import resolve_metric

if TYPE_CHECKING:
    from reflex_dspy.strategies.base import Strategy
    from reflex_dspy.tracking import Tracker


@dataclass(frozen=True)
class RunInputs:
    """Everything a run needs besides its data: models, metric, strategy, and where it is recorded.

    The record options (`track`, `run_dir`, `tracking_uri`, `experiment`, `mlflow`, `metadata`)
    keep the names of the `Reflex` arguments they come from.
    """

    config: OptimizerConfig
    metric: Callable[..., Any]  # resolved: a built-in name is already a metric, with its judge
    task_lm: dspy.LM | Mapping[str, dspy.LM]
    reasoning_lm: dspy.LM
    strategy: Strategy
    optimize: list[str] | None = None
    trackers: tuple[Tracker, ...] = ()
    track: bool = True
    run_dir: str | os.PathLike[str] | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    mlflow: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def resolve(
        cls,
        *,
        metric: Any,
        config: OptimizerConfig,
        make_strategy: Callable[[Callable[..., Any]], Strategy],
        task_lm: dspy.LM | Mapping[str, dspy.LM] | None = None,
        reasoning_lm: dspy.LM | None = None,
        optimize: Sequence[str] | None = None,
        trackers: Sequence[Tracker] = (),
        **record: Any,
    ) -> RunInputs:
        """Resolve the models, the metric and the strategy, in that order (the metric's judge is the
        reasoning model; the strategy is built with the resolved metric). Bad input is a `UsageError`."""
        if metric is None:
            raise UsageError("a metric is required: pass metric= (a function or a built-in name such as 'exact')")
        task = task_lm or dspy.settings.lm
        if task is None:
            raise UsageError("no task model: pass task_lm= or call dspy.configure(lm=...) first")
        primary = next(iter(task.values())) if isinstance(task, Mapping) else task
        reasoner = resolve_reasoning_lm(config, reasoning_lm, primary)
        resolved = resolve_metric(metric, judge_lm=reasoner)
        return cls(config=config, metric=resolved, task_lm=task, reasoning_lm=reasoner,
                   strategy=make_strategy(resolved), optimize=list(optimize) if optimize is not None else None,
                   trackers=tuple(trackers), **record)


def resolve_reasoning_lm(config: OptimizerConfig, reasoning_lm: dspy.LM | None, task_lm: dspy.LM) -> dspy.LM:
    """`reasoning_lm` when given, else `config.reasoning_model` (with its key and base URL), else the task model."""
    if reasoning_lm is not None:
        return reasoning_lm
    if config.reasoning_model:
        from reflex_dspy.lm import resolve_lm

        key = config.reasoning_api_key
        return resolve_lm(config.reasoning_model, api_key=key.get_secret_value() if key else None,
                          base_url=config.reasoning_base_url)
    return task_lm
