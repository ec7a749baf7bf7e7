"""`reflex-dspy optimize create | dry-run ID | run ID`: one run in three steps a team can split.

    optimize create DATA PROMPT [flags]   record the run: config, dataset and prompt copied into
                                          RUN_DIR/runs/NNN_<utc>/inputs/, status `created`; print
                                          its id and the exact command that starts it
    optimize dry-run ID                   check that recorded run (data, splits, metric, models
                                          resolvable, API keys present) without calling a model
    optimize run ID                       start it: a created run in its own directory; a
                                          completed or failed run again, as a new attempt that
                                          records which run it repeats; an interrupted run
                                          continues (as `--resume-from ID`)

`optimize run DATA PROMPT` (no id) and plain `optimize DATA PROMPT` do everything in one shot.
Because the inputs are captured inside the run directory, a created run can be started by
another process, from another working directory or another machine that shares RUN_DIR.
Nothing secret is recorded: API keys come from the environment of the process that runs it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reflex_dspy.cli.lifecycle_mlflow import PREFIX
from reflex_dspy.cli.optimize import (
    CONFIG_FLAGS,
    DEFAULT_EXPERIMENT,
    build_config,
    execute,
    given_flags,
    run_optimize,
    target_fields,  # one reading of the target flags
)
from reflex_dspy.cli.output import note
from reflex_dspy.cli.task import TaskSpec
from reflex_dspy.errors import UsageError
from reflex_dspy.run_status import CREATED, load_created
from reflex_dspy.tracking.files import write_atomic, write_json
from reflex_dspy.tracking.redact import redact_uri
from reflex_dspy.tracking.store import PID, RUN_ID, RUN_NAME, RunStore

if TYPE_CHECKING:
    from reflex_dspy.config import OptimizerConfig
    from reflex_dspy.tracking.store import Run

SUBCOMMANDS = ("create", "dry-run", "run")
INPUTS = "inputs"


# --------------------------------------------------------------------------- routing


def route(argv: list[str]) -> tuple[list[str], str | None, str | None]:
    """`(argv for the optimize parser, subcommand, run id)`.

    `optimize create ...` parses like `optimize ...`; `optimize dry-run ID ...` and `optimize run
    ID ...` parse their flags like `optimize ...` with no DATA/PROMPT; `optimize run DATA PROMPT`
    (no id) is the one-shot `optimize DATA PROMPT`.
    """
    if len(argv) < 2 or argv[0] != "optimize" or argv[1] not in SUBCOMMANDS:
        return argv, None, None
    sub, rest = argv[1], argv[2:]
    if sub == "create":
        return ["optimize", *rest], sub, None
    if rest and (RUN_ID.match(rest[0]) or RUN_NAME.match(rest[0]) or rest[0].startswith(PREFIX)):
        return ["optimize", *rest[1:]], sub, rest[0]
    if sub == "run":
        return ["optimize", *rest], None, None
    return ["optimize", *rest], sub, None


def handler(sub: str, run_id: str | None) -> Any:
    """The command function of `sub`, bound to its run id."""
    if sub == "create":
        return cmd_create
    command = cmd_dry_run if sub == "dry-run" else cmd_run
    return lambda args: command(args, run_id)


def _refuse(args: argparse.Namespace, command: str, flags: dict[str, Any]) -> None:
    for flag, given in flags.items():
        if given:
            raise UsageError(f"optimize {command}: {flag} is not accepted here")


# --------------------------------------------------------------------------- create


def _validate(spec: TaskSpec, config: OptimizerConfig) -> int:
    """Everything that needs no model (the checks `optimize` makes first); returns the example count."""
    from reflex_dspy.cli.task import check_prompt_task
    from reflex_dspy.strategies import get_strategy

    get_strategy(config.strategy, **config.extra_kwargs)
    return check_prompt_task(spec, config)  # the prompt-file loader's own checks (cli/task.py)


def _tracking(args: argparse.Namespace) -> dict[str, Any]:
    """The MLflow store and experiment to record the run in; a URI with credentials is not kept."""
    uri = args.mlflow_tracking_uri
    if uri and redact_uri(uri) != uri:
        note("--mlflow-tracking-uri holds credentials and is not recorded: give it again to optimize run")
    return {"mlflow_tracking_uri": uri if uri and redact_uri(uri) == uri else None,
            "mlflow_experiment": args.mlflow_experiment}


def capture(store: RunStore, spec: TaskSpec, config: OptimizerConfig, tracking: dict[str, Any],
            repeats: dict[str, Any] | None = None) -> Run:
    """Allocate a run and copy its inputs into it; created.json (written last) makes it `created`."""
    run = store.create_run()  # holds the PID sentinel until created.json exists: never half-made
    folder = run.path / INPUTS
    folder.mkdir()

    def keep(path: str | None, name: str | None = None) -> str | None:
        if not path:
            return None
        target = folder / (name or Path(path).name)
        shutil.copyfile(path, target)
        return f"{INPUTS}/{target.name}"

    if spec.prompt_text is not None:
        write_atomic(folder / "prompt.md", spec.prompt_text.rstrip("\n") + "\n")
        prompt = f"{INPUTS}/prompt.md"
    else:
        prompt = keep(spec.prompt_path, "prompt" + (Path(spec.prompt_path).suffix or ".md"))
    task = {
        "dataset": keep(spec.dataset, "dataset" + Path(spec.dataset).suffix), "prompt": prompt,
        "task_models": spec.task_models, "metrics": spec.metrics, "judge": spec.judge,
        "judge_criteria": keep(spec.judge_criteria, "rubric" + Path(spec.judge_criteria or "x.md").suffix),
        "input_field": spec.input_field, "output_field": spec.output_field,
        "splits_file": keep(spec.splits_file, "splits.json"),
    }
    write_json(run.file(CREATED), {
        "status": "created", "run_id": run.run_id, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "task": task, "sources": {"dataset": str(Path(spec.dataset).resolve()),
                                  "prompt": str(Path(spec.prompt_path).resolve()) if spec.prompt_path else None},
        "config": config.public_dict(), "tracking": tracking, "repeats": repeats,
    })
    run.file(PID).unlink(missing_ok=True)
    return run


def _commands(run: Run, store: RunStore) -> tuple[str, str]:
    where = f" --run-dir {store.root.resolve()}"
    return f"reflex-dspy optimize dry-run {run.run_id}{where}", f"reflex-dspy optimize run {run.run_id}{where}"


def cmd_create(args: argparse.Namespace) -> int:
    """Record a run without starting it: nothing is written unless every input is valid."""
    _refuse(args, "create", {"--resume": args.resume, "--resume-from": args.resume_from,
                             "--dry-run": args.dry_run, "--target (it benchmarks models: run it with optimize)":
                             args.target, "-o (give it to optimize run)": args.output,
                             "--results-json (give it to optimize run)": args.results_json,
                             "--pipeline-file (pipeline mode runs in one shot)": args.pipeline_file})
    spec = TaskSpec.from_args(args)
    fields = given_flags(args, CONFIG_FLAGS)
    fields.update(target_fields(args))  # --threshold / --verdict-results exactly as `optimize` reads them
    config = build_config(fields, args)
    n = _validate(spec, config)
    store = RunStore(args.run_dir)
    run = capture(store, spec, config, _tracking(args))
    check, start = _commands(run, store)
    print(f"Created run {run.run_id} ({run.path}): {n} examples, strategy {config.strategy}; status created")
    print(f"Check it : {check}")
    print(f"Start it : {start}")
    uri = args.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:  # a shared tracking store: a machine without this run directory can start it too
        from reflex_dspy.cli.lifecycle_mlflow import publish

        try:
            published = publish(run, uri, args.mlflow_experiment)
        except Exception as exc:  # noqa: BLE001 - the run is recorded on disk either way
            note(f"not recorded in MLflow ({' '.join(str(exc).split())[:200]}): start it from this run directory")
        else:
            shown = uri if redact_uri(uri) == uri else "URI"
            print(f"Or from a machine that shares only the MLflow store: "
                  f"reflex-dspy optimize run {PREFIX}{published} --mlflow-tracking-uri {shown}")
    print("API keys are not recorded: the process that runs it reads them from its environment.")
    return 0


# --------------------------------------------------------------------------- dry-run and run


def _spec_from_created(run: Run, created: dict[str, Any]) -> TaskSpec:
    task = created.get("task") or {}

    def inside(rel: str | None) -> str | None:
        return str(run.path / rel) if rel else None

    if not task.get("dataset"):
        raise UsageError(f"run {run.run_id}: {CREATED} names no dataset")
    return TaskSpec(dataset=inside(task["dataset"]), prompt_path=inside(task.get("prompt")),
                    task_models=task.get("task_models"), metrics=task.get("metrics"), judge=task.get("judge"),
                    judge_criteria=inside(task.get("judge_criteria")), input_field=task.get("input_field"),
                    output_field=task.get("output_field"), splits_file=inside(task.get("splits_file")))


def _recorded(run: Run) -> tuple[TaskSpec, dict[str, Any], dict[str, Any]]:
    """The task, config fields and tracking recorded for `run` (by `create`, else by a CLI run)."""
    from reflex_dspy.config import OptimizerConfig

    created = load_created(run.path)
    if created is not None:
        spec, config, tracking = _spec_from_created(run, created), created.get("config") or {}, created.get(
            "tracking") or {}
    else:
        spec = TaskSpec.from_run(run, "re-run")
        if spec.pipeline:
            raise UsageError(f"run {run.run_id} is a pipeline-mode run: start it again with optimize PROMPT "
                             "--pipeline-file ... (pipeline runs are not captured for optimize run)")
        saved = run.load_config()
        config = saved.get("config") or saved.get("optimizer_config") or {}
        tracking = {}
    fields = {k: v for k, v in config.items() if k in OptimizerConfig.model_fields and k != "reasoning_api_key"}
    return spec, fields, tracking


def _check_flags(args: argparse.Namespace, run: Run, command: str) -> None:
    """A recorded run keeps its task and config: DATA/PROMPT are errors, config flags get a note."""
    if args.dataset or args.prompt:
        raise UsageError(f"optimize {command} {run.run_id}: the run's dataset and prompt are recorded; "
                         "give no DATA or PROMPT")
    _refuse(args, f"{command} {run.run_id}", {"--resume": args.resume, "--resume-from": args.resume_from})
    for flag in CONFIG_FLAGS:
        if getattr(args, flag, None) is not None:
            note(f"--{flag.replace('_', '-')} ignored: run {run.run_id} keeps its recorded config")


def _recorded_config(fields: dict[str, Any], args: argparse.Namespace) -> OptimizerConfig:
    return build_config(fields, argparse.Namespace(reasoning_api_key=args.reasoning_api_key))


def cmd_dry_run(args: argparse.Namespace, run_id: str | None = None) -> int:
    """Check a recorded run the way `optimize --dry-run` checks a new one: no model is called."""
    if run_id is None:
        raise UsageError("optimize dry-run needs a run ID (from optimize create); "
                         "to check a new run use optimize DATA PROMPT --dry-run")
    if run_id.startswith(PREFIX):
        raise UsageError(f"optimize dry-run reads a run directory: check {run_id} where it was created, "
                         f"or start it here with optimize run {run_id}")
    run = RunStore(args.run_dir).get_run(run_id)
    _check_flags(args, run, "dry-run")
    spec, fields, _ = _recorded(run)
    print(f"{'run':<15}: {run.run_id} ({run.status}) {run.path}")
    args.dry_run = True
    return execute(args, spec, _recorded_config(fields, args))


def cmd_run(args: argparse.Namespace, run_id: str | None = None) -> int:
    """Start a created run, re-run a finished one as a new attempt, or continue an interrupted one."""
    if run_id is None:
        raise UsageError("optimize run needs a run ID, or DATA PROMPT to run in one shot")
    store = RunStore(args.run_dir)
    if run_id.startswith(PREFIX):  # published by `optimize create` to a shared MLflow store
        from reflex_dspy.cli.lifecycle_mlflow import fetch

        args.mlflow_tracking_uri = args.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        fetched, _ = fetch(run_id, args.mlflow_tracking_uri, store)
        print(f"Fetched {run_id} into run {fetched.run_id} ({fetched.path})", file=sys.stderr)
        run_id = fetched.run_id
    run = original = store.get_run(run_id)
    status = run.status
    if status == "running":
        raise UsageError(f"run {run.run_id} is running in another process; watch it with reflex-dspy dashboard")
    if status == "interrupted":
        note(f"run {run.run_id} is interrupted: continuing it (as --resume-from {run.run_id})")
        args.resume_from = run.run_id
        return run_optimize(args)
    if status not in ("created", "completed", "failed"):
        raise UsageError(f"run {run.run_id} is {status}: it cannot be started")
    _check_flags(args, run, "run")
    spec, fields, tracking = _recorded(run)
    config = _recorded_config(fields, args)
    if status != "created":
        run = capture(store, spec, config, tracking, repeats={"run_id": run.run_id, "status": status})
        spec = _spec_from_created(run, load_created(run.path) or {})
        print(f"Run {run.run_id} repeats run {original.run_id} ({status}): a new attempt in {run.path}",
              file=sys.stderr)
    if args.mlflow_tracking_uri is None and tracking.get("mlflow_tracking_uri"):
        args.mlflow_tracking_uri = tracking["mlflow_tracking_uri"]
    if args.mlflow_experiment == DEFAULT_EXPERIMENT and tracking.get("mlflow_experiment"):
        args.mlflow_experiment = tracking["mlflow_experiment"]
    args.dry_run = False
    print(f"Starting run {run.run_id} ({run.path})", file=sys.stderr)
    return execute(args, spec, config, resume=run)
