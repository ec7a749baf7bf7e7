"""The selected prompts in MLflow's prompt registry (`register_prompt=` / `--register-prompt`).

Each optimized predictor's prompt (instructions, and demos as the prompt file shows them)
becomes a new version of a registered prompt, linked to the run, with a commit message that
says where it came from. The alias (`reflex-best` unless told otherwise) moves to the new
version only when the run's promotion report promoted it (or no gate was set, as for `-o`):
a version that did not pass stays registered, without the alias.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from reflex_dspy.candidate import PredictorState

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from reflex_dspy.result import RunResult

DEFAULT_ALIAS = "reflex-best"


def prompt_names(base: str, predictors: list[str]) -> dict[str, str]:
    """`{predictor: registered name}`: `base` for a single predictor, `base.<predictor>` for several."""
    if len(predictors) == 1:
        return {predictors[0]: base}
    return {p: f"{base}.{re.sub(r'[^A-Za-z0-9_.-]', '_', p)}" for p in predictors}


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def commit_message(result: RunResult, mlflow_run_id: str, selected_val: float | None) -> str:
    return (f"reflex {result.strategy}, run {result.run_id or '-'} (MLflow {mlflow_run_id}): iteration "
            f"{result.selected_iteration} selected on {result.selected_by}, val {_score(selected_val)}; "
            f"test {_score(result.baseline.mean)} -> {_score(result.final.mean)}")


def promoted(result: RunResult) -> bool:
    return result.promotion is None or bool(result.promotion.get("promoted"))


def register_prompts(
    client: MlflowClient, run_id: str, base: str, alias: str, result: RunResult, selected_val: float | None
) -> dict[str, Any]:
    """Register the selected candidate's prompts; returns `{registered name: version}` plus whether
    the alias moved, for the run's tags."""
    predictors = result.candidate.get("predictors", result.candidate)
    states = {name: PredictorState.from_dict(data) for name, data in predictors.items()}
    names = prompt_names(base, sorted(states))
    moved = promoted(result)
    message = commit_message(result, run_id, selected_val)
    versions: dict[str, Any] = {}
    for predictor, name in names.items():
        tags = {"reflex.run_id": str(result.run_id or ""), "reflex.mlflow_run_id": run_id,
                "reflex.strategy": result.strategy, "reflex.predictor": predictor,
                "reflex.promoted": str(moved).lower()}
        version = client.register_prompt(name, states[predictor].render(), commit_message=message, tags=tags)
        client.link_prompt_version_to_run(run_id, version)
        if moved:
            client.set_prompt_alias(name, alias, version.version)
        versions[name] = version.version
    return {"versions": versions, "alias": alias if moved else None}
