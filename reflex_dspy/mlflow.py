"""`ReflexPromptOptimizer`: reflex_dspy's strategies and audit trail behind MLflow's own optimizer API.

MLflow users optimize registered prompts with `mlflow.genai.optimize_prompts(predict_fn=...,
train_data=..., prompt_uris=[...], optimizer=..., scorers=[...])`. With
`optimizer=ReflexPromptOptimizer(reflection_model="openai/gpt-4o-mini")` that call runs a
reflex_dspy optimization: each prompt becomes one predictor of a small DSPy program whose answer
is MLflow's own evaluation of the candidate prompts (their `predict_fn`, scored by their scorers);
train / val / held-out test are split as in every reflex run, the selected prompts go back to
MLflow (which registers them as new versions), and the run is recorded like any other (run
directory, and an MLflow run nested under `optimize_prompts`' own run).

`initial_eval_score` / `final_eval_score` are the baseline and the selected prompts on the
held-out test split, never on the examples the search chose with. MLflow's `eval_fn` is not
thread-safe, so examples are evaluated one at a time (the predict_fn may parallelise inside).
A candidate that drops a template variable (`{{ name }}`) fails its examples (a failed example is
excluded, never scored 0), so such a candidate is not selected.

Where the installed MLflow lacks this API (before 3.5), importing this module raises an
ImportError saying so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dspy

try:
    from mlflow.genai.optimize.optimizers import BasePromptOptimizer
    from mlflow.genai.optimize.types import PromptOptimizerOutput
except ImportError as exc:  # pragma: no cover - depends on the installed MLflow
    raise ImportError(
        "reflex_dspy.mlflow.ReflexPromptOptimizer needs MLflow's prompt optimizer API "
        "(mlflow.genai.optimize_prompts, MLflow >= 3.5): pip install 'mlflow>=3.5'"
    ) from exc

from reflex_dspy.candidate import Candidate, PredictorState
from reflex_dspy.errors import UsageError

__all__ = ["ReflexPromptOptimizer"]
_FAILED_PREFIX = "Failed to invoke the predict_fn"  # what MLflow's eval_fn returns when predict_fn raised
_VARIABLE = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def _key(inputs: dict[str, Any]) -> str:
    return json.dumps(inputs, sort_keys=True, default=str)


def _attr(index: int) -> str:
    return f"prompt_{index}"


class MlflowPromptsProgram(dspy.Module):
    """One predictor per MLflow prompt, its instructions the template; `forward` is MLflow's
    evaluation of the current templates (demos rendered into them as the prompt file shows them)."""

    def __init__(self, templates: dict[str, str], eval_fn: Callable, records: list[dict[str, Any]]) -> None:
        super().__init__()
        self.prompt_names: dict[str, str] = {}
        for i, (name, template) in enumerate(sorted(templates.items())):
            setattr(self, _attr(i), dspy.Predict(dspy.Signature("inputs -> outputs", template)))
            self.prompt_names[_attr(i)] = name
        self.variables = {name: set(_VARIABLE.findall(t)) for name, t in templates.items()}
        self.eval_fn = eval_fn
        self.records = {_key(r["inputs"]): r for r in records}

    def templates(self) -> dict[str, str]:
        out = {}
        for attr, name in self.prompt_names.items():
            predictor = getattr(self, attr)
            state = PredictorState(predictor.signature.instructions, tuple(dict(d) for d in predictor.demos or ()))
            out[name] = state.render()
        return out

    def forward(self, **inputs: Any) -> dspy.Prediction:
        templates = self.templates()
        for name, template in templates.items():
            if missing := self.variables[name] - set(_VARIABLE.findall(template)):
                raise ValueError(f"prompt {name!r} lost its template variable(s) {sorted(missing)}")
        (result,) = self.eval_fn(templates, [self.records[_key(inputs)]])
        if isinstance(result.outputs, str) and result.outputs.startswith(_FAILED_PREFIX):
            raise RuntimeError(result.outputs)
        if result.score is None:
            raise UsageError("ReflexPromptOptimizer needs scorers: pass scorers= to optimize_prompts")
        outputs = result.outputs if isinstance(result.outputs, str) else json.dumps(result.outputs, default=str)
        return dspy.Prediction(outputs=outputs, score=float(result.score), rationales=result.rationales)


def mlflow_scorers(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> float:
    """The metric: the aggregated score of the user's MLflow scorers for this example."""
    return float(prediction.score)


def _examples(records: list[dict[str, Any]]) -> list[dspy.Example]:
    out = []
    for record in records:
        expected = record.get("expectations") or record.get("outputs")
        text = expected if isinstance(expected, str) else json.dumps(expected, default=str)
        out.append(dspy.Example(**record["inputs"], outputs=text).with_inputs(*record["inputs"]))
    return out


def _model_string(model: str) -> str:
    """MLflow's `provider:/model` → LiteLLM's `provider/model`."""
    return model.replace(":/", "/", 1) if ":/" in model else model


class ReflexPromptOptimizer(BasePromptOptimizer):
    """`optimizer=` for `mlflow.genai.optimize_prompts`: a reflex_dspy strategy (default `auto`)
    with `reflection_model` (a model string, MLflow's `provider:/model` accepted, or a `dspy.LM`)
    proposing the prompts. Other keywords are `OptimizerConfig` fields (`max_iterations`,
    `max_metric_calls`, ...). `run_dir` is where the run is recorded (default `.reflex`)."""

    def __init__(self, reflection_model: str | dspy.BaseLM, *, strategy: str = "auto",
                 run_dir: str | Path | None = None, **config: Any) -> None:
        from reflex_dspy.lm import resolve_lm

        self.reflection_lm = resolve_lm(_model_string(reflection_model) if isinstance(reflection_model, str)
                                        else reflection_model)
        self.strategy = strategy
        self.run_dir = run_dir
        self.config = {"max_workers": 1, **config}
        self.result = None  # the last RunResult, for callers who want the whole audit trail

    def optimize(self, eval_fn: Callable, train_data: list[dict[str, Any]], target_prompts: dict[str, str],
                 enable_tracking: bool = True) -> PromptOptimizerOutput:
        if eval_fn is None or not train_data:
            raise UsageError("ReflexPromptOptimizer needs train_data and scorers (it optimizes against them)")
        from reflex_dspy.reflex import Reflex

        program = MlflowPromptsProgram(target_prompts, eval_fn, train_data)
        optimizer = Reflex(mlflow_scorers, strategy=self.strategy, task_lm=self.reflection_lm,
                           reasoning_lm=self.reflection_lm, run_dir=self.run_dir, mlflow=enable_tracking,
                           **self.config)
        optimized = optimizer.compile(program, trainset=_examples(train_data))
        self.result = optimized.result
        chosen = Candidate.from_dict(self.result.candidate)
        prompts = {program.prompt_names[attr]: state.render() for attr, state in chosen.predictors.items()}
        return PromptOptimizerOutput(optimized_prompts=prompts, initial_eval_score=self.result.baseline.mean,
                                     final_eval_score=self.result.final.mean)
