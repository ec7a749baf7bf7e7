"""`reflex-dspy optimize PROMPT --pipeline-file agent.py --inputs-file inputs.jsonl --judge MODEL`.

Pipeline mode from the command line (README, "Pipeline mode"): the task is a user's pipeline file (a
`pipeline_fn(prompt, input) -> AgentTrace`, or a DSPy program factory; adapters/pipeline_file.py)
and an inputs file, instead of a dataset and a prompt file. The single positional is PROMPT
(argparse puts it in `dataset`, the first optional positional). Everything else — config,
resume, branch, the run record — is the normal CLI's: `optimize.TaskSpec` carries a `pipeline`
dict (file, sample timeout, --optimize names) that is recorded in the run's metadata, so a
pipeline run resumes and branches from its id alone.

Timeouts: with `--sample-timeout S`, a pipeline_fn runs in worker processes and a call past S
seconds is stopped and fails that example ("timed out after Ss"). A DSPy program runs in the
evaluator's threads, which cannot be stopped; there S becomes the task model's request timeout,
so a hung provider call raises (and is retried as transient, then recorded as failed). The
in-process embedded model cannot take a request timeout; its max_tokens bounds each call.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from reflex_dspy.errors import UsageError

if TYPE_CHECKING:
    from reflex_dspy.cli.task import TaskSpec
    from reflex_dspy.config import OptimizerConfig
    from reflex_dspy.tracking.store import Run


def check_resume_flags(args: argparse.Namespace, spec: TaskSpec, run_id: str) -> None:
    """A resumed pipeline run keeps its recorded task: another pipeline or inputs file is an error."""
    from reflex_dspy.cli.output import note
    from reflex_dspy.cli.task import abs_path as _abs

    for flag, given, recorded in (
        ("--pipeline-file", args.pipeline_file, spec.pipeline["file"]),
        ("--inputs-file", args.inputs_file, spec.dataset),
    ):
        if given and _abs(given) != _abs(recorded):
            raise UsageError(f"run {run_id} runs {flag} {recorded}, not {given}")
    prompt = args.prompt or args.dataset
    if prompt and _abs(prompt) != _abs(spec.prompt_path):
        note(f"PROMPT ignored: run {run_id} continues from its recorded initial prompt")


# --------------------------------------------------------------------------- the run


def _pipeline_fn_lm(name: str) -> Any:
    """The task model slot of a pipeline_fn run, which calls its own model: a call here is refused loudly."""
    import dspy

    class _NoModel:
        supports_response_schema = False

        def complete(self, request: Any) -> Any:
            raise UsageError(
                "a pipeline_fn calls its own model; reflex's task model is not used in this mode"
            )

    return dspy.LM(f"pipeline_fn/{name}", engine=_NoModel(), cache=False, num_retries=0)


def _task_lm(
    pipeline: Any, spec: TaskSpec, config: OptimizerConfig, timeout: float | None
) -> tuple[Any, bool]:
    """(task model, whether it lives only inside pipeline_fn): -m, else the model the file configured,
    else embedded."""
    import dspy

    from reflex_dspy.cli.output import note
    from reflex_dspy.lm import resolve_lm

    model = spec.task_models[0] if spec.task_models else None
    if pipeline.kind == "pipeline_fn":
        if model:
            raise UsageError(
                "-m: a pipeline_fn calls its own model (configure it in the pipeline file); "
                "-m applies to a DSPy program"
            )
        configured = dspy.settings.lm  # what the file configured, seen by pipeline_fn's DSPy calls in threads
        return (configured, False) if configured is not None else (_pipeline_fn_lm(pipeline.path.name), True)
    lm = (
        resolve_lm(model, temperature=config.eval_temperature)
        if model or dspy.settings.lm is None
        else dspy.settings.lm
    )
    if timeout:
        try:
            lm = lm.copy(timeout=timeout)
        except ValueError:  # a custom engine (the embedded model) owns its connection
            note(
                f"--sample-timeout: {lm.model} runs in-process and cannot be stopped mid-call; "
                "its max_tokens bounds each call"
            )
    return lm, False


def execute_pipeline(
    args: argparse.Namespace,
    spec: TaskSpec,
    config: OptimizerConfig,
    *,
    resume: Run | None = None,
    branch_from: tuple[str, int] | None = None,
) -> int:
    """Validate (file, inputs, models), then unless `--dry-run` run: new, resumed and branched runs."""
    from reflex_dspy.adapters import (
        PipelineFnProgram,
        load_inputs,
        load_pipeline_file,
        load_prompt,
        make_program,
    )
    from reflex_dspy.candidate import Candidate
    from reflex_dspy.cli.output import check_output_paths as _check_output_paths
    from reflex_dspy.cli.output import split_named
    from reflex_dspy.data import example_id
    from reflex_dspy.lm import probe_lm, resolve_lm
    from reflex_dspy.marking import select_predictors
    from reflex_dspy.metrics import label_fields, load_rubric, resolve_metric
    from reflex_dspy.splits import load_splits_file, split_dataset
    from reflex_dspy.strategies import get_strategy

    get_strategy(config.strategy, **config.extra_kwargs)
    _check_output_paths(args, spec)
    p = spec.pipeline
    pipeline = load_pipeline_file(p["file"])
    recorded = p.get("initial_candidate")  # a resumed or branched run starts from what was recorded
    if recorded and pipeline.kind == "pipeline_fn":
        prompt, prompt_label = recorded["predictors"]["prompt"]["instructions"], "recorded initial prompt"
    elif spec.prompt_path and not recorded:
        prompt, prompt_label = load_prompt(spec.prompt_path), spec.prompt_path
    else:
        prompt, prompt_label = None, None
    timeout = p.get("sample_timeout")
    program, binding = make_program(
        pipeline,
        prompt,
        optimize=p.get("optimize"),
        timeout=timeout if pipeline.kind == "pipeline_fn" else None,
        workers=config.max_workers,
        output_field=spec.output_field,
    )
    try:
        if recorded and pipeline.kind == "program":
            program = Candidate.from_dict(recorded).apply(program)
        names = select_predictors(program, p.get("optimize"))
        examples = load_inputs(spec.dataset, binding)
        if not spec.judge:
            resolve_metric(spec.metric_spec)  # unknown names fail here, before any model loads
            unscored = next((ex for ex in examples if not label_fields(ex)), None)
            if unscored is not None:
                raise UsageError(
                    f"{spec.dataset}: input {example_id(unscored)} has no 'ideal', which --metric "
                    "compares against; add one to every input, or score with --judge MODEL"
                )
        pinned = load_splits_file(spec.splits_file) if spec.splits_file else None
        splits = split_named(spec.dataset, split_dataset, examples, train_ratio=config.train_ratio,
                             val_ratio=config.val_ratio, seed=config.seed, pinned=pinned)
        rubric = load_rubric(spec.judge_criteria) if spec.judge_criteria else None
        task_lm, inside_fn = _task_lm(pipeline, spec, config, timeout)
        key = config.reasoning_api_key.get_secret_value() if config.reasoning_api_key else None
        reasoning_lm = (
            resolve_lm(config.reasoning_model, api_key=key, base_url=config.reasoning_base_url)
            if config.reasoning_model
            else resolve_lm(None)
            if inside_fn
            else task_lm
        )
        judge_lm = resolve_lm(spec.judge) if spec.judge else None

        if args.dry_run:
            from reflex_dspy.cli.dry_run import report

            flags = {
                name: "[optimize]" if name in names else "[context]" for name, _ in program.named_predictors()
            }
            print(f"{'pipeline':<15}: {pipeline.describe}")
            print(f"{'predictors':<15}: {', '.join(f'{n} {f}' for n, f in flags.items())}")
            print(
                f"{'sample timeout':<15}: "
                + (
                    f"{timeout:g}s"
                    + (
                        " (worker processes)"
                        if pipeline.kind == "pipeline_fn"
                        else " (task model request timeout)"
                    )
                    if timeout
                    else "none"
                )
            )
            text = prompt or "\n\n".join(
                dict(program.named_predictors())[n].signature.instructions for n in names
            )
            report(
                args,
                spec,
                config,
                prompt=text,
                prompt_label=prompt_label or f"{pipeline.path} (its own)",
                examples=examples,
                splits=splits,
                models={
                    "task": {"task": task_lm},
                    "reasoning": reasoning_lm,
                    "judge": judge_lm,
                    "targets": {},
                },
                resume=resume,
                branch_from=branch_from,
            )
            return 0

        for lm in {
            id(x): x for x in (None if inside_fn else task_lm, reasoning_lm, judge_lm) if x
        }.values():
            probe_lm(lm)
        metric = resolve_metric(spec.metric_spec, judge_lm=judge_lm, judge_criteria=rubric)

        from reflex_dspy.progress import ConsoleTracker
        from reflex_dspy.reflex import Reflex

        optimizer = Reflex(
            metric,
            task_lm=task_lm,
            reasoning_lm=reasoning_lm,
            optimize=p.get("optimize"),
            trackers=[ConsoleTracker()],
            config=config,
            run_dir=args.run_dir,
            tracking_uri=args.mlflow_tracking_uri,
            experiment=args.mlflow_experiment,
            mlflow=not getattr(args, "no_mlflow", False),
            metadata=spec.metadata(config),
        )
        extra: dict[str, Any] = {"resume": resume} if resume is not None else {}
        if branch_from is not None:
            extra["branch_from"] = branch_from
        if pinned is not None:
            extra["splits"] = pinned
        optimized = optimizer.compile(program, trainset=examples, **extra)
    finally:
        if isinstance(program, PipelineFnProgram):
            program.close()  # stops its worker processes
    return _report(args, optimized)


def _report(args: argparse.Namespace, optimized: Any) -> int:
    """The prompt-file run's summary and files, plus which nodes the run changed."""
    from reflex_dspy.cli.output import report_outputs

    changed = sorted({n for r in optimized.result.iterations for n in r.details.get("changed_predictors", [])})
    return report_outputs(args, optimized, (f"{'Changed nodes':<15}: {', '.join(changed) or 'none'}",))
