"""The parent run's closing numbers: each one measures what its name says.

`score` / `val_score` on the parent are trajectories (one point per iteration, step 0 the
starting prompt); what was *selected* is `selected_train_score` / `selected_val_score`; the
held-out test numbers are `baseline_test` and `final_test` (and their old names
`baseline_score` / `final_score`); what the run cost is `usage.*` (calls and tokens).
`improvement` is rounded, so the UI shows 0.2, not 0.19999999. With too little data for a test,
`p_value` is absent and a tag says why.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from reflex_dspy.result import target_label

if TYPE_CHECKING:
    from reflex_dspy.result import RunResult

ROUND = 6
# What the run cost, as the summary's "LM usage" and "Metric calls" lines count it: `usage.NAME`.
USAGE_METRICS = ("metric_calls", "lm_calls", "eval_tokens", "metric_lm_calls", "metric_tokens", "reasoning_calls",
                 "reasoning_tokens", "failed", "retries")


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), ROUND)


def selected_scores(result: RunResult) -> tuple[float | None, float | None]:
    """(train, val) score of the selected candidate, from the records (iteration 0 = the start)."""
    if result.selected_iteration == 0:
        first = result.iterations[0] if result.iterations else None
        train = first.score - first.delta if first and first.score is not None and first.delta is not None else None
        return train, result.initial_val_score
    record = next((r for r in result.iterations if r.iteration == result.selected_iteration), None)
    return (record.score, record.val_score) if record else (None, None)


def summary_metrics(result: RunResult) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, tags) of the parent at the end of a run."""
    sig = result.significance
    train, val = selected_scores(result)
    metrics: dict[str, Any] = {
        "final_score": result.final.mean, "final_std": result.final.std, "final_test": result.final.mean,
        "baseline_test": result.baseline.mean, "improvement": _round(result.improvement),
        "p_value": sig.p_value, "selected_iteration": result.selected_iteration,
        "selected_train_score": _round(train), "selected_val_score": _round(val),
        "duration_seconds": round(result.duration_seconds, 3),
    }
    tags: dict[str, Any] = {
        "reflex.significant": "n/a" if sig.significant is None else str(sig.significant).lower(),
        "reflex.stop_reason": result.stop_reason, "reflex.selected_by": result.selected_by,
    }
    if sig.p_value is None:
        tags["reflex.p_value"] = f"not computed: {sig.describe()}"
    if result.budget is not None:
        metrics["metric_call_budget"] = result.budget
        metrics["search_metric_calls"] = result.usage.get("search_calls")
    metrics.update({f"usage.{key}": result.usage[key] for key in USAGE_METRICS
                    if isinstance(result.usage.get(key), int)})
    metrics.update({"final_score." + re.sub(r"[^\w\-./ ]", "_", label): score  # MLflow's allowed characters
                    for label, score in result.final.scores_by_model.items()})
    if result.target:
        tags["reflex.target"] = target_label(result.target)
    if result.promotion:
        tags["reflex.promoted"] = str(result.promotion["promoted"]).lower()
    return metrics, tags
