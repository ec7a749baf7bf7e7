"""The task of a CLI run (`TaskSpec`) and its two loaders: a prompt file with a dataset, or a
pipeline file with an inputs file (`--pipeline-file`, `--inputs-file`).

Each loader validates everything that needs no model (files, examples, splits, metric names,
flags) and resolves the models without calling them, into a `LoadedTask`; `cli/optimize.execute`
is the one flow that runs either. Below `optimize`, `dry_run`, `runs` and the run-lifecycle
commands, which read the task from here; above `output` (notes, split errors naming the file).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
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
    pipeline: dict[str, Any] | None = None  # pipeline mode: file, sample_timeout, optimize
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


# --------------------------------------------------------------------------- the loaded task


@dataclass
class LoadedTask:
    """A task ready to run: the program, its examples, the metric and the models, none called yet.

    Both loaders fill it, so the one flow (`cli/optimize.execute`) does the same thing for a prompt
    file and for a pipeline file: dry-run report, probe, `Reflex`, compile, summary.
    """

    program: Any
    examples: list
    splits: Any  # the split a dry run shows (checked before any model call); Reflex splits the same way
    pinned: dict[str, list[str]] | None
    prompt: str
    prompt_label: str
    metric: Any  # resolved once, with the judge and its rubric
    task_lms: dict[str, Any]  # label → LM
    reasoning_lm: Any
    judge_lm: Any = None
    targets: dict[str, Any] = field(default_factory=dict)  # --target models, benchmarked first
    optimize: list[str] | None = None
    probe_task: bool = True  # False: the task model lives inside a pipeline_fn (never called by reflex)
    dry_run_lines: tuple[str, ...] = ()
    pipeline: bool = False

    @property
    def task_lm(self) -> Any:
        """What `Reflex(task_lm=)` takes: the one task model, or the `{label: lm}` dict of several."""
        return self.task_lms if len(self.task_lms) > 1 else next(iter(self.task_lms.values()))

    def to_probe(self) -> list[Any]:
        """Every model the run will call, once each."""
        lms = [*(self.task_lms.values() if self.probe_task else ()), self.reasoning_lm, self.judge_lm,
               *self.targets.values()]
        return list({id(lm): lm for lm in lms if lm is not None}.values())

    def close(self) -> None:
        """Stops a pipeline_fn's worker processes (nothing to do for a prompt file)."""
        if self.pipeline:
            _close(self.program)

    def summary_lines(self, optimized: Any) -> tuple[str, ...]:
        """Lines after the run's summary: which pipeline nodes the run changed."""
        if not self.pipeline:
            return ()
        changed = sorted({n for r in optimized.result.iterations for n in r.details.get("changed_predictors", [])})
        return (f"{'Changed nodes':<15}: {', '.join(changed) or 'none'}",)


def load_task(args: argparse.Namespace, spec: TaskSpec, config: OptimizerConfig, *, recorded: bool) -> LoadedTask:
    """The task of `spec`, validated before any model loads: a prompt file or a pipeline file."""
    if spec.pipeline:
        return load_pipeline_task(args, spec, config)
    return load_prompt_task(args, spec, config, recorded=recorded)


def _split(spec: TaskSpec, config: OptimizerConfig, examples: list) -> tuple[Any, Any]:
    """(the pinned ids or None, the split), usage errors naming the dataset file."""
    from reflex_dspy.cli.output import split_named
    from reflex_dspy.splits import load_splits_file, split_dataset

    pinned = load_splits_file(spec.splits_file) if spec.splits_file else None
    return pinned, split_named(spec.dataset, split_dataset, examples, train_ratio=config.train_ratio,
                               val_ratio=config.val_ratio, seed=config.seed, pinned=pinned)


def _checked_metric(spec: TaskSpec) -> tuple[Any, str | None]:
    """(the named metrics resolved, or None for a judge, which needs its model first; the rubric):
    unknown names and a bad rubric file fail here, before any model loads."""
    from reflex_dspy.metrics import load_rubric, resolve_metric

    rubric = load_rubric(spec.judge_criteria) if spec.judge_criteria else None
    return (None if spec.judge else resolve_metric(spec.metric_spec)), rubric


def _judge_metric(spec: TaskSpec, judge_lm: Any, rubric: str | None) -> Any:
    from reflex_dspy.metrics import resolve_metric

    return resolve_metric(spec.metric_spec, judge_lm=judge_lm, judge_criteria=rubric)


def _prompt_files(spec: TaskSpec, config: OptimizerConfig) -> tuple[str, str, list, Any, Any, Any, Any]:
    """(prompt, its label, examples, pinned ids, split, named metric or None, rubric): every file of a
    prompt-file task read and checked, no model resolved."""
    from reflex_dspy.adapters import load_prompt
    from reflex_dspy.data import load_dataset

    if spec.prompt_text is not None:
        prompt, prompt_label = spec.prompt_text, spec.prompt_path or "recorded initial prompt"
    else:
        prompt, prompt_label = load_prompt(spec.prompt_path), spec.prompt_path
    examples = load_dataset(spec.dataset, input_field=spec.input_field, output_field=spec.output_field)
    pinned, splits = _split(spec, config, examples)
    metric, rubric = _checked_metric(spec)
    return prompt, prompt_label, examples, pinned, splits, metric, rubric


def check_prompt_task(spec: TaskSpec, config: OptimizerConfig) -> int:
    """What `optimize` checks before any model for a prompt-file task (`optimize create` records a run
    only when it passes); returns the number of examples."""
    return len(_prompt_files(spec, config)[2])


def load_prompt_task(args: argparse.Namespace, spec: TaskSpec, config: OptimizerConfig, *,
                     recorded: bool) -> LoadedTask:
    """A prompt file (or a recorded run's initial prompt) on a dataset."""
    from reflex_dspy.adapters import program_from_prompt

    prompt, prompt_label, examples, pinned, splits, metric, rubric = _prompt_files(spec, config)
    task_lms, reasoning_lm, judge_lm, targets = _models(args, spec, config, recorded=recorded)
    return LoadedTask(
        program=program_from_prompt(prompt), examples=examples, splits=splits, pinned=pinned, prompt=prompt,
        prompt_label=prompt_label, metric=metric or _judge_metric(spec, judge_lm, rubric), task_lms=task_lms,
        reasoning_lm=reasoning_lm, judge_lm=judge_lm, targets=targets,
    )


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
    from reflex_dspy.run_inputs import resolve_reasoning_lm

    timeout = sample_timeout(args, spec.task_models)
    task_lms = {m or "embedded": resolve_lm(m, temperature=config.eval_temperature, timeout=timeout)
                for m in (spec.task_models or [None])}
    reasoning_lm = resolve_reasoning_lm(config, None, next(iter(task_lms.values())))
    judge_lm = resolve_lm(spec.judge) if spec.judge else None
    # --target models are benchmarked only when no higher-precedence source set the threshold.
    targets = {} if recorded or config.target_source else {
        m: resolve_lm(m, temperature=config.eval_temperature) for m in (getattr(args, "target", None) or [])
    }
    return task_lms, reasoning_lm, judge_lm, targets


# --------------------------------------------------------------------------- pipeline mode's loader
# The task is a user's pipeline file (a `pipeline_fn(prompt, input) -> AgentTrace`, or a DSPy program
# factory; adapters/pipeline_file.py) and an inputs file (README, "Pipeline mode"). Timeouts: with
# `--sample-timeout S`, a pipeline_fn runs in worker processes and a call past S seconds is stopped and
# fails that example ("timed out after Ss"). A DSPy program runs in the evaluator's threads, which
# cannot be stopped; there S becomes the task model's request timeout, so a hung provider call raises
# (retried as transient, then recorded as failed). The in-process embedded model cannot take a
# request timeout; its max_tokens bounds each call.


def check_resume_flags(args: argparse.Namespace, spec: TaskSpec, run_id: str) -> None:
    """A resumed pipeline run keeps its recorded task: another pipeline or inputs file is an error."""
    from reflex_dspy.cli.output import note

    for flag, given, recorded in (
        ("--pipeline-file", args.pipeline_file, spec.pipeline["file"]),
        ("--inputs-file", args.inputs_file, spec.dataset),
    ):
        if given and abs_path(given) != abs_path(recorded):
            raise UsageError(f"run {run_id} runs {flag} {recorded}, not {given}")
    prompt = args.prompt or args.dataset
    if prompt and abs_path(prompt) != abs_path(spec.prompt_path):
        note(f"PROMPT ignored: run {run_id} continues from its recorded initial prompt")


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


def _pipeline_task_lm(pipeline: Any, spec: TaskSpec, config: OptimizerConfig,
                      timeout: float | None) -> tuple[Any, bool]:
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


def _pipeline_lines(pipeline: Any, program: Any, names: list[str], timeout: float | None) -> tuple[str, ...]:
    """The dry run's pipeline lines: the file, each predictor's role, the sample timeout."""
    flags = {name: "[optimize]" if name in names else "[context]" for name, _ in program.named_predictors()}
    where = " (worker processes)" if pipeline.kind == "pipeline_fn" else " (task model request timeout)"
    return (
        f"{'pipeline':<15}: {pipeline.describe}",
        f"{'predictors':<15}: {', '.join(f'{n} {f}' for n, f in flags.items())}",
        f"{'sample timeout':<15}: " + (f"{timeout:g}s{where}" if timeout else "none"),
    )


def _pipeline_program(spec: TaskSpec, config: OptimizerConfig) -> tuple[Any, Any, Any, str | None, str | None]:
    """(pipeline, program, input binding, prompt, prompt label): a resumed or branched run starts from
    the recorded initial candidate."""
    from reflex_dspy.adapters import load_pipeline_file, load_prompt, make_program

    p = spec.pipeline
    pipeline = load_pipeline_file(p["file"])
    recorded = p.get("initial_candidate")
    if recorded and pipeline.kind == "pipeline_fn":
        prompt, prompt_label = recorded["predictors"]["prompt"]["instructions"], "recorded initial prompt"
    elif spec.prompt_path and not recorded:
        prompt, prompt_label = load_prompt(spec.prompt_path), spec.prompt_path
    else:
        prompt, prompt_label = None, None
    timeout = p.get("sample_timeout")
    program, binding = make_program(pipeline, prompt, optimize=p.get("optimize"),
                                    timeout=timeout if pipeline.kind == "pipeline_fn" else None,
                                    workers=config.max_workers, output_field=spec.output_field)
    if recorded and pipeline.kind == "program":
        from reflex_dspy.candidate import Candidate

        try:
            program = Candidate.from_dict(recorded).apply(program)
        except BaseException:
            _close(program)
            raise
    return pipeline, program, binding, prompt, prompt_label


def _close(program: Any) -> None:
    from reflex_dspy.adapters import PipelineFnProgram

    if isinstance(program, PipelineFnProgram):
        program.close()  # stops its worker processes


def load_pipeline_task(args: argparse.Namespace, spec: TaskSpec, config: OptimizerConfig) -> LoadedTask:
    """A pipeline file on an inputs file; the program's worker processes are stopped if loading fails."""
    from reflex_dspy.adapters import load_inputs
    from reflex_dspy.data import example_id
    from reflex_dspy.lm import resolve_lm
    from reflex_dspy.marking import select_predictors
    from reflex_dspy.metrics import label_fields
    from reflex_dspy.run_inputs import resolve_reasoning_lm

    pipeline, program, binding, prompt, prompt_label = _pipeline_program(spec, config)
    try:
        names = select_predictors(program, spec.pipeline.get("optimize"))
        examples = load_inputs(spec.dataset, binding)
        metric, rubric = _checked_metric(spec)
        unscored = None if spec.judge else next((ex for ex in examples if not label_fields(ex)), None)
        if unscored is not None:
            raise UsageError(
                f"{spec.dataset}: input {example_id(unscored)} has no 'ideal', which --metric "
                "compares against; add one to every input, or score with --judge MODEL"
            )
        pinned, splits = _split(spec, config, examples)
        timeout = spec.pipeline.get("sample_timeout")
        task_lm, inside_fn = _pipeline_task_lm(pipeline, spec, config, timeout)
        fallback = resolve_lm(None) if inside_fn and not config.reasoning_model else task_lm
        judge_lm = resolve_lm(spec.judge) if spec.judge else None
        text = prompt or "\n\n".join(dict(program.named_predictors())[n].signature.instructions for n in names)
        return LoadedTask(
            program=program, examples=examples, splits=splits, pinned=pinned, prompt=text,
            prompt_label=prompt_label or f"{pipeline.path} (its own)",
            metric=metric or _judge_metric(spec, judge_lm, rubric), task_lms={"task": task_lm},
            reasoning_lm=resolve_reasoning_lm(config, None, fallback), judge_lm=judge_lm,
            optimize=spec.pipeline.get("optimize"), probe_task=not inside_fn,
            dry_run_lines=_pipeline_lines(pipeline, program, names, timeout), pipeline=True,
        )
    except BaseException:
        _close(program)
        raise
