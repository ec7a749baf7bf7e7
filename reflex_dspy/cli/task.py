"""The task of a CLI run (`TaskSpec`) and its two loaders: a prompt file with a dataset, or a
pipeline file with an inputs file (`--pipeline-file`, `--inputs-file`).

A leaf of the CLI: `optimize`, `pipeline`, `dry_run`, `runs` and the run-lifecycle commands all
read the task from here, and nothing here imports them back.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reflex_dspy.errors import UsageError
from reflex_dspy.tracking.redact import redact_uri

if TYPE_CHECKING:
    from reflex_dspy.config import OptimizerConfig
    from reflex_dspy.tracking.store import Run


def abs_path(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


@dataclass
class TaskSpec:
    """What a CLI run optimizes, independent of how the search is configured."""

    dataset: str
    prompt_path: str | None
    task_models: list[str] | None  # None: the embedded model
    metrics: list[str] | None
    judge: str | None
    judge_criteria: str | None
    input_field: str | None
    output_field: str | None
    prompt_text: str | None = None  # the exact initial prompt of a recorded run (not re-read)
    splits_file: str | None = None
    pipeline: dict[str, Any] | None = None  # pipeline mode: file, sample_timeout, optimize (cli/pipeline.py)
    lineage: dict[str, Any] | None = None  # branched from a run aevyra-reflex wrote: {"run_id", "iteration"}

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TaskSpec:
        if is_pipeline(args):  # pipeline mode: PROMPT --pipeline-file F --inputs-file F
            return pipeline_spec(args)
        if not args.dataset or not args.prompt:
            raise UsageError("optimize needs DATASET and PROMPT (or --resume-from ID)")
        if args.model and len(set(args.model)) < len(args.model):
            raise UsageError("-m: the same task model is given twice")
        if args.judge and args.metric:
            raise UsageError("--metric and --judge are mutually exclusive")
        if args.judge_criteria and not args.judge:
            raise UsageError("--judge-criteria needs --judge MODEL")
        return cls(
            dataset=args.dataset,
            prompt_path=args.prompt,
            task_models=list(args.model) if args.model else None,
            metrics=None if args.judge else (args.metric or ["rouge"]),
            judge=args.judge,
            judge_criteria=args.judge_criteria,
            input_field=args.input_field,
            output_field=args.output_field,
            splits_file=args.splits_file,
        )

    @classmethod
    def from_run(cls, run: Run, action: str) -> TaskSpec:
        """The task recorded by the CLI in `run`'s config.json; an API run has none."""
        saved = run.load_config()  # shared names (tracking/schema.py); aevyra-reflex's runs too
        meta = saved.get("metadata") or {}
        settings = saved.get("optimizer_config") or {}
        dataset = run.dataset_path(saved)
        if not dataset:
            call = (
                "compile(resume=run)"
                if action == "resume"
                else f"compile(branch_from=({run.run_id!r}, ITER))"
            )
            raise UsageError(
                f"run {run.run_id} was not started by the CLI (no dataset in its config.json); "
                f"{action} it from Python with {call}"
            )
        models = meta["task_models"] if "task_models" in meta else settings.get("_cli_models")
        return cls(
            dataset=dataset,
            prompt_path=saved.get("prompt_path") or None,
            task_models=list(models) if models else None,
            metrics=None if meta.get("judge") else list(settings.get("metrics") or ["rouge"]),
            judge=meta.get("judge"),
            judge_criteria=meta.get("judge_criteria"),
            input_field=meta.get("input_field"),
            output_field=meta.get("output_field"),
            prompt_text=initial_prompts(saved).get("predict"),
            splits_file=meta.get("splits_file"),
            # pipeline mode: the recorded initial candidate is where a resume or branch starts from
            pipeline={**meta["pipeline"], "initial_candidate": saved.get("initial_candidate")}
            if meta.get("pipeline") else None,
        )

    @property
    def metric_spec(self) -> list[str] | str:
        return "judge" if self.judge else (self.metrics or ["rouge"])

    def metadata(self, config: OptimizerConfig) -> dict[str, Any]:
        """What `--resume` and `branch` need to rebuild this task; paths absolute, no secrets."""
        return {
            "dataset_path": abs_path(self.dataset),
            "prompt_path": abs_path(self.prompt_path),
            "task_model": self.task_models[0] if self.task_models else None,
            "task_models": self.task_models,
            "reasoning_model": config.reasoning_model,
            "reasoning_base_url": redact_uri(config.reasoning_base_url),
            "metric": self.metric_spec,
            "judge": self.judge,
            "judge_criteria": abs_path(self.judge_criteria),
            "input_field": self.input_field,
            "output_field": self.output_field,
            "splits_file": abs_path(self.splits_file),
            **({"pipeline": {k: v for k, v in self.pipeline.items() if k != "initial_candidate"}}
               if self.pipeline else {}),  # pipeline mode
            **({"branched_from": self.lineage} if self.lineage else {}),  # tracking/schema.py lifts it
        }


def initial_prompts(saved: dict[str, Any]) -> dict[str, str]:
    """Predictor → initial instructions, from a run's config.json."""
    predictors = (saved.get("initial_candidate") or {}).get("predictors") or {}
    if not predictors and saved.get("initial_prompt"):  # a run aevyra-reflex wrote: one system prompt
        from reflex_dspy.result import FOREIGN_PREDICTOR

        return {FOREIGN_PREDICTOR: saved["initial_prompt"]}
    return {name: state["instructions"] for name, state in predictors.items()}


# --------------------------------------------------------------------------- pipeline mode


def is_pipeline(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "pipeline_file", None) or getattr(args, "inputs_file", None))


def pipeline_spec(args: argparse.Namespace) -> TaskSpec:
    """The TaskSpec of a new pipeline run, from the flags."""
    if not args.pipeline_file:
        raise UsageError("--inputs-file needs --pipeline-file (a dataset for a prompt file goes in DATASET)")
    if not args.inputs_file:
        raise UsageError("--pipeline-file needs --inputs-file (the inputs to run the pipeline on)")
    if args.dataset and args.prompt:
        raise UsageError("with --pipeline-file give only PROMPT: the inputs come from --inputs-file")
    if args.input_field:
        raise UsageError("--input-field does not apply to --inputs-file: each record's 'input' is the input")
    if args.model and len(args.model) > 1:
        raise UsageError("-m: pipeline mode takes one task model")
    if getattr(args, "target", None):
        raise UsageError(
            "--target is not supported with --pipeline-file; use --threshold or --verdict-results"
        )
    if args.judge and args.metric:
        raise UsageError("--metric and --judge are mutually exclusive")
    if args.judge_criteria and not args.judge:
        raise UsageError("--judge-criteria needs --judge MODEL")
    timeout = args.sample_timeout
    if timeout is not None and not timeout > 0:
        raise UsageError(f"--sample-timeout {timeout:g}: must be a positive number of seconds")
    return TaskSpec(
        dataset=args.inputs_file,
        prompt_path=args.prompt or args.dataset,
        task_models=list(args.model) if args.model else None,
        metrics=None if args.judge else args.metric,
        judge=args.judge,
        judge_criteria=args.judge_criteria,
        input_field=None,
        output_field=args.output_field,
        splits_file=getattr(args, "splits_file", None),
        pipeline={
            "file": abs_path(args.pipeline_file),
            "sample_timeout": timeout,
            "optimize": list(args.optimize_predictor) if args.optimize_predictor else None,
        },
    )
