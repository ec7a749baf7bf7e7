"""`reflex-dspy optimize`: one run of a prompt file on a dataset, new, resumed or branched.

The task of a CLI run (dataset, prompt, models, metric, fields) is a `TaskSpec`. A new run
builds it from the flags; `--resume` / `--resume-from` and `reflex-dspy branch` rebuild it from
the "metadata" the CLI recorded in the run's config.json, so a run can be continued or branched
with nothing but its id. `execute` is the one flow all three share: validate everything that
needs no model, stop there on `--dry-run`, then probe the models and compile.

dspy, litellm and mlflow are imported inside the functions so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reflex_dspy.cli.output import check_output_paths as _check_output_paths
from reflex_dspy.cli.output import no_reasoning_reply as no_reasoning_reply
from reflex_dspy.cli.output import note as note
from reflex_dspy.cli.output import report_outputs as report_outputs
from reflex_dspy.cli.output import split_named as split_named
from reflex_dspy.cli.task import TaskSpec as TaskSpec
from reflex_dspy.cli.task import abs_path as _abs
from reflex_dspy.cli.task import initial_prompts as initial_prompts
from reflex_dspy.errors import UsageError
from reflex_dspy.tracking.redact import redact_uri
from reflex_dspy.tracking.store import RunStore

if TYPE_CHECKING:
    from reflex_dspy.config import OptimizerConfig
    from reflex_dspy.tracking.store import Run

API_KEY_ENV = "REFLEX_REASONING_API_KEY"
DEFAULT_EXPERIMENT = "reflex"

# Flag dest → OptimizerConfig field. The search flags are also the ones `branch` may override.
SEARCH_FLAGS = {
    "strategy": "strategy",
    "strategy_param": "extra_kwargs",
    "max_iterations": "max_iterations",
    "threshold": "score_threshold",
    "early_stopping_patience": "early_stopping_patience",
    "batch_size": "batch_size",
    "full_eval_steps": "full_eval_steps",
    "max_workers": "max_workers",
    "max_metric_calls": "max_metric_calls",
    "auto": "auto_budget",
    "reasoning_model": "reasoning_model",
    "reasoning_base_url": "reasoning_base_url",
    "reasoning_max_tokens": "reasoning_max_tokens",
    "min_holdout_improvement": "min_holdout_improvement",
}
CONFIG_FLAGS = {
    **SEARCH_FLAGS,
    "train_split": "train_ratio",
    "val_split": "val_ratio",
    "eval_runs": "eval_runs",
    "seed": "seed",
    "source_model": "source_model",
    "register_prompt": "register_prompt",  # MLflow prompt registry
    "prompt_alias": "prompt_alias",
}


# --------------------------------------------------------------------------- the config
# (the task, `TaskSpec`, is in cli/task.py; notes, output checks and the summary in cli/output.py)


def api_key(args: argparse.Namespace) -> str | None:
    return getattr(args, "reasoning_api_key", None) or os.environ.get(API_KEY_ENV)


def given_flags(args: argparse.Namespace, flags: dict[str, str]) -> dict[str, Any]:
    """Config field → value for each flag in `flags` given on the command line."""
    return {field: v for flag, field in flags.items() if (v := getattr(args, flag, None)) is not None}


def build_config(fields: dict[str, Any], args: argparse.Namespace) -> OptimizerConfig:
    """The OptimizerConfig of `fields`, plus the API key from the flag or env (never saved)."""
    from reflex_dspy.config import OptimizerConfig

    key = api_key(args)
    if key:
        fields = {**fields, "reasoning_api_key": key}
    return OptimizerConfig.build(**fields)


def saved_fields(saved: dict[str, Any]) -> dict[str, Any]:
    """The recorded config fields this version of OptimizerConfig knows."""
    from reflex_dspy.config import OptimizerConfig

    config = saved.get("optimizer_config") or {}
    fields = {k: v for k, v in config.items() if k in OptimizerConfig.model_fields and k != "reasoning_api_key"}
    if "reasoning_model" in (saved.get("metadata") or {}):  # null: no --reasoning-model (schema.py names
        fields["reasoning_model"] = None  # the task model in optimizer_config for aevyra-reflex's readers)
    return fields


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def resumed_config(run: Run, args: argparse.Namespace) -> OptimizerConfig:
    """A resumed run keeps its recorded config; flags that would change it are named and ignored."""
    fields = saved_fields(run.load_config())
    given_url = getattr(args, "reasoning_base_url", None)
    if given_url and redact_uri(given_url) == fields.get("reasoning_base_url") != given_url:
        fields["reasoning_base_url"] = given_url  # recorded without its credentials: take them again
    for flag, field in CONFIG_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None and value != fields.get(field):
            recorded = fields.get(field)
            if field == "reasoning_base_url":  # a URL may carry credentials: never echo it
                value, recorded = "(given)", "(recorded)"
            note(f"{_flag(flag)} {value} ignored: run {run.run_id} keeps its recorded {field} = {recorded}")
    return build_config(fields, args)


def _check_task_flags(args: argparse.Namespace, spec: TaskSpec, run_id: str) -> None:
    """A resumed run optimizes its recorded task: another dataset is an error, other flags get a note."""
    if args.dataset and _abs(args.dataset) != _abs(spec.dataset):
        raise UsageError(f"run {run_id} optimizes {spec.dataset}, not {args.dataset}")
    pairs = [
        ("PROMPT", _abs(args.prompt), _abs(spec.prompt_path)),
        ("-m", args.model, spec.task_models),
        ("--metric", args.metric, spec.metrics),
        ("--judge", args.judge, spec.judge),
        ("--judge-criteria", _abs(args.judge_criteria), _abs(spec.judge_criteria)),
        ("--input-field", args.input_field, spec.input_field),
        ("--output-field", args.output_field, spec.output_field),
    ]
    for name, given, recorded in pairs:
        if given is not None and given != recorded:
            note(f"{name} ignored: run {run_id} continues with its recorded value {recorded}")


# --------------------------------------------------------------------------- commands


def run_optimize(args: argparse.Namespace) -> int:
    if args.resume or args.resume_from:
        return _resume(args)
    spec = TaskSpec.from_args(args)
    fields = given_flags(args, CONFIG_FLAGS)
    fields.update(_target_fields(args))
    return execute(args, spec, build_config(fields, args))


def _target_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The threshold by precedence: --threshold, then --verdict-results, then --target (run later)."""
    if args.threshold is not None:
        for flag, given in (("--verdict-results", args.verdict_results), ("--target", args.target)):
            if given:
                note(f"{flag} ignored: --threshold {args.threshold} sets the target")
        return {"target_source": "manual"}
    if args.verdict_results:
        from reflex_dspy.targets import target_from_verdict

        if args.target:
            note("--target ignored: --verdict-results sets the target")
        judge = getattr(args, "judge", None)
        run_metrics = ["judge"] if judge else (args.metric or ["rouge"])
        target = target_from_verdict(args.verdict_results, metric=getattr(args, "verdict_metric", None),
                                     run_metrics=run_metrics, own=list(args.model or []))
        for line in target.notes:
            note(line)
        return {"score_threshold": target.score, "target_model": target.model, "target_source": target.source,
                "target_metric": target.metric}
    return {}


def _resume(args: argparse.Namespace) -> int:
    store = RunStore(args.run_dir)
    if args.resume:
        dataset = getattr(args, "inputs_file", None) or args.dataset  # pipeline mode: keyed by inputs file
        if not dataset:
            raise UsageError("--resume needs DATASET (or use --resume-from ID)")
        run = store.find_incomplete_run(dataset_path=dataset)
        if run is None:
            raise UsageError(
                f"no interrupted run of {dataset} in {store.runs_dir}; start one without --resume"
            )
    else:
        run = store.get_run(args.resume_from)
        if run.status == "completed":
            raise UsageError(f"run {run.run_id} is completed; nothing to resume")
        if run.status == "running":
            raise UsageError(f"run {run.run_id} is still running; wait for it or stop it first")
    spec = TaskSpec.from_run(run, "resume")
    if spec.pipeline:  # pipeline mode
        from reflex_dspy.cli.pipeline import check_resume_flags

        check_resume_flags(args, spec, run.run_id)
    else:
        _check_task_flags(args, spec, run.run_id)
    return execute(args, spec, resumed_config(run, args), resume=run)


def execute(
    args: argparse.Namespace,
    spec: TaskSpec,
    config: OptimizerConfig,
    *,
    resume: Run | None = None,
    branch_from: tuple[str, int] | None = None,
) -> int:
    """Validate, then (unless `--dry-run`) probe the models and run; shared by optimize, resume, branch."""
    if spec.pipeline:  # pipeline mode has its own loading and dry run (cli/pipeline.py)
        from reflex_dspy.cli.pipeline import execute_pipeline

        return execute_pipeline(args, spec, config, resume=resume, branch_from=branch_from)
    from reflex_dspy.adapters import load_prompt, program_from_prompt
    from reflex_dspy.data import load_dataset
    from reflex_dspy.lm import probe_lm
    from reflex_dspy.metrics import load_rubric, resolve_metric
    from reflex_dspy.splits import load_splits_file, split_dataset
    from reflex_dspy.strategies import get_strategy

    # Everything that needs no model is checked before any model loads or any file is written.
    get_strategy(config.strategy, **config.extra_kwargs)
    _check_output_paths(args, spec)
    if spec.prompt_text is not None:
        prompt, prompt_label = spec.prompt_text, spec.prompt_path or "recorded initial prompt"
    else:
        prompt, prompt_label = load_prompt(spec.prompt_path), spec.prompt_path
    examples = load_dataset(spec.dataset, input_field=spec.input_field, output_field=spec.output_field)
    pinned = load_splits_file(spec.splits_file) if spec.splits_file else None
    splits = split_named(spec.dataset, split_dataset, examples, train_ratio=config.train_ratio,
                         val_ratio=config.val_ratio, seed=config.seed, pinned=pinned)
    rubric = load_rubric(spec.judge_criteria) if spec.judge_criteria else None
    if not spec.judge:
        resolve_metric(spec.metric_spec)  # unknown names fail here, before any model loads

    task_lms, reasoning_lm, judge_lm, targets = _models(args, spec, config, recorded=bool(resume or branch_from))
    task_lm = next(iter(task_lms.values()))

    if args.dry_run:
        from reflex_dspy.cli.dry_run import report

        report(args, spec, config, prompt=prompt, prompt_label=prompt_label, examples=examples, splits=splits,
               models={"task": task_lms, "reasoning": reasoning_lm, "judge": judge_lm, "targets": targets},
               resume=resume, branch_from=branch_from)
        return 0

    models = [*task_lms.values(), reasoning_lm, judge_lm, *targets.values()]
    for lm in {id(x): x for x in models if x is not None}.values():
        probe_lm(lm)
    metric = resolve_metric(spec.metric_spec, judge_lm=judge_lm, judge_criteria=rubric)
    program = program_from_prompt(prompt)

    comparison = None
    if targets:
        config, comparison = _benchmark_targets(program, splits.train + splits.val, metric, task_lms, targets,
                                                config, spec)

    from reflex_dspy.progress import ConsoleTracker
    from reflex_dspy.reflex import Reflex

    optimizer = Reflex(
        metric,
        task_lm=task_lms if len(task_lms) > 1 else task_lm,
        reasoning_lm=reasoning_lm,
        trackers=[ConsoleTracker()],
        config=config,
        run_dir=args.run_dir,
        tracking_uri=args.mlflow_tracking_uri,
        experiment=args.mlflow_experiment,
        mlflow=not getattr(args, "no_mlflow", False),
        metadata={**spec.metadata(config), **({"target_comparison": comparison} if comparison else {})},
    )
    extra: dict[str, Any] = {}
    if resume is not None:
        extra["resume"] = resume
    if branch_from is not None:
        extra["branch_from"] = branch_from
    optimized = optimizer.compile(program, trainset=examples, splits=pinned, **extra)
    return report_outputs(args, optimized)


def sample_timeout(args: argparse.Namespace, task_models: list[str] | None) -> float | None:
    """`--sample-timeout` as the task model's request timeout; refused where it cannot apply."""
    timeout = getattr(args, "sample_timeout", None)
    if timeout is None:
        return None
    if not timeout > 0 or timeout == float("inf"):
        raise UsageError(f"--sample-timeout {timeout:g}: must be a positive number of seconds")
    local = [m or "embedded" for m in (task_models or [None]) if not m or m.split("/")[0] == "embedded"]
    if local:
        raise UsageError(f"--sample-timeout: {local[0]} runs in-process and cannot be stopped mid-call; "
                         "use it with a server model (its request timeout), or drop it")
    return timeout


def _models(args: argparse.Namespace, spec: TaskSpec, config: OptimizerConfig, *, recorded: bool):
    """(task models by label, reasoning model, judge model, --target models), none called yet."""
    from reflex_dspy.lm import resolve_lm

    timeout = sample_timeout(args, spec.task_models)
    task_lms = {m or "embedded": resolve_lm(m, temperature=config.eval_temperature, timeout=timeout)
                for m in (spec.task_models or [None])}
    key = config.reasoning_api_key.get_secret_value() if config.reasoning_api_key else None
    reasoning_lm = (
        resolve_lm(config.reasoning_model, api_key=key, base_url=config.reasoning_base_url)
        if config.reasoning_model
        else next(iter(task_lms.values()))
    )
    judge_lm = resolve_lm(spec.judge) if spec.judge else None
    # --target models are benchmarked only when no higher-precedence source set the threshold.
    targets = {} if recorded or config.target_source else {
        m: resolve_lm(m, temperature=config.eval_temperature) for m in (getattr(args, "target", None) or [])
    }
    return task_lms, reasoning_lm, judge_lm, targets


def _benchmark_targets(program, examples, metric, task_lms, targets, config: OptimizerConfig,
                       spec: TaskSpec) -> tuple[OptimizerConfig, dict[str, Any]]:
    """Score every task and target model on train+val with the initial prompt; the best other model
    is the target. Returns the config and the comparison in aevyra-verdict's results format, which
    the run directory keeps (`verdict_results.json`) so it can be passed back with --verdict-results."""
    from reflex_dspy.metrics import metric_names
    from reflex_dspy.targets import benchmark_models, best_target, verdict_document

    models = {**task_lms, **targets}
    print(f"Benchmarking {len(models)} models on {len(examples)} train+val examples to set the target ...",
          file=sys.stderr)
    rates: dict[str, float] = {}
    scores = benchmark_models(program, examples, metric, models, max_workers=config.max_workers,
                              temperature=config.eval_temperature, success_rates=rates)
    target = best_target(scores, "verdict_run", own=list(task_lms), metric="+".join(metric_names(metric)),
                         success_rates=rates)
    for label, score in sorted(scores.items(), key=lambda kv: -kv[1]):
        mark = "  ← target" if label == target.model else ""
        print(f"  {label:<40} {score:.4f}{mark}", file=sys.stderr)
    for line in target.notes:
        note(line)
    return target.apply(config), verdict_document(target, Path(spec.dataset).stem)


