"""`reflex-dspy optimize --dry-run`: everything a run would do, checked without calling any model.

Data, splits, prompt, metric and rubric were already loaded by the caller; here the models are
checked for what can be known offline (resolvable, API keys present) and the run's cost is
estimated from the config, so a user sees the bill before paying it.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from reflex_dspy.errors import UsageError

if TYPE_CHECKING:
    import dspy

    from reflex_dspy.cli.task import TaskSpec
    from reflex_dspy.config import OptimizerConfig
    from reflex_dspy.splits import Splits
    from reflex_dspy.tracking.store import Run


def _line(label: str, text: str) -> None:
    print(f"{label:<15}: {text}")


def check_keys(models: dict[str, dspy.BaseLM]) -> None:
    """One line naming each model whose API key is missing from the environment."""
    from reflex_dspy.lm import describe_lm, missing_keys

    missing = {describe_lm(lm): keys for lm in models.values() if (keys := missing_keys(lm))}
    if missing:
        problems = "; ".join(f"{name} needs {', '.join(keys)}" for name, keys in missing.items())
        raise UsageError(f"missing API keys: {problems}")


def estimate(config: OptimizerConfig, splits: Splits, n_task_models: int, n_targets: int) -> dict[str, Any]:
    """Upper-bound LM calls: reporting evaluations, target benchmark, and the search (capped by the budget).

    `iterations` is the run's iteration limit (`OptimizerConfig.for_budget`); the reasoning calls
    are counted for the iterations the search calls afford, three each at most.
    """
    train, val, test = len(splits.train), len(splits.val), len(splits.test)
    budget = config.metric_call_budget(train + val)
    limit = config.for_budget(budget).max_iterations
    batch = min(config.batch_size or train, train)
    reporting = 2 * config.eval_runs * test * n_task_models
    benchmark = (n_task_models + n_targets) * (train + val) if n_targets else 0
    # Per iteration: the proposal scored on the batch (its parent is usually cached), plus val.
    per_iteration = (2 * batch + val) * n_task_models
    search = val * n_task_models + limit * per_iteration
    if budget is not None:
        search = min(search, budget)
    afforded = min(limit, max(1, -(-(search - val * n_task_models) // max(per_iteration, 1))))
    return {"reporting": reporting, "benchmark": benchmark, "search": search, "budget": budget,
            "iterations": limit, "reasoning": 3 * afforded}


def report(
    args: argparse.Namespace,
    spec: TaskSpec,
    config: OptimizerConfig,
    *,
    prompt: str,
    prompt_label: str | None,
    examples: list,
    splits: Splits,
    models: dict[str, Any],
    resume: Run | None,
    branch_from: tuple[str, int] | None,
) -> None:
    """Print what the run would do; raise `UsageError` for anything that would make it fail."""
    from reflex_dspy.budget_fit import check_first_step
    from reflex_dspy.lm import describe_lm
    from reflex_dspy.result import target_label
    from reflex_dspy.strategies import get_strategy

    task, targets = models["task"], models["targets"]
    check_keys({**task, "reasoning": models["reasoning"], **({"judge": models["judge"]} if models["judge"] else {}),
                **targets})
    cost = estimate(config, splits, len(task), len(targets))
    if resume is None and branch_from is None:  # as the run checks it (budget_fit.py)
        check_first_step(get_strategy(config.strategy, **config.extra_kwargs), cost["budget"], len(splits.train),
                         len(splits.val), config.batch_size, len(task))
    _line("dataset", f"{spec.dataset} ({len(examples)} examples)")
    pinned = f" (pinned by {spec.splits_file})" if spec.splits_file else ""
    _line("splits", f"train {len(splits.train)} / val {len(splits.val)} / test {len(splits.test)}{pinned}")
    _line("prompt", f"{prompt_label} ({len(prompt)} characters)")
    _line("task model" + ("s" if len(task) > 1 else ""), ", ".join(describe_lm(lm) for lm in task.values()))
    _line("reasoning model", describe_lm(models["reasoning"]))
    judge = models["judge"]
    _line("metric", f"judge {describe_lm(judge)}" if judge else ", ".join(spec.metric_spec))
    n = cost["iterations"]
    limit = "as many iterations as the budget allows" if config.budget_binds(cost["budget"]) else \
        f"up to {n} iteration{'' if n == 1 else 's'}"
    _line("strategy", f"{config.strategy}, {limit}")
    if targets:
        _line("target", f"the best of {', '.join([*task, *targets])} on train+val (benchmarked first)")
    else:
        _line("target", target_label({"model": config.target_model, "source": config.target_source,
                                      "threshold": config.score_threshold, "metric": config.target_metric}))
    if config.min_holdout_improvement is not None:
        gate = "" if getattr(args, "force_output", False) else "; -o is written only when promoted"
        _line("promotion", f"held-out improvement ≥ {config.min_holdout_improvement:+.4f}, significant{gate}")
    budget = f"budget {cost['budget']}" if cost["budget"] is not None else "no budget"
    _line("estimated calls", f"at most {cost['search']} search metric calls ({budget}), "
          f"{cost['reporting']} for baseline and final on test"
          + (f", {cost['benchmark']} to benchmark targets" if cost["benchmark"] else "")
          + f"; about {cost['reasoning']} reasoning calls")
    if resume is not None:
        _line("resume", f"run {resume.run_id} ({resume.path})")
    if branch_from is not None:
        _line("branch", f"from run {branch_from[0]}, iteration {branch_from[1]}")
    for warning in splits.warnings:
        _line("warning", warning)
    print("dry run: no model was called and nothing was written")
