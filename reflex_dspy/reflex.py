"""The Reflex teleprompter: DSPy's compile contract over one recorded run (lifecycle.py)."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dspy
from dspy.teleprompt import Teleprompter

from reflex_dspy.config import OptimizerConfig
from reflex_dspy.errors import UsageError
from reflex_dspy.lifecycle import RunLifecycle
from reflex_dspy.run_inputs import RunInputs, resolve_reasoning_lm
from reflex_dspy.strategies import Strategy, get_strategy
from reflex_dspy.tracking import Tracker

if TYPE_CHECKING:
    from reflex_dspy.targets import Target


class Reflex(Teleprompter):
    """Optimize the prompts of a DSPy program; returns an optimized copy, like every teleprompter.

    `metric` is a DSPy metric, a built-in metric name, or a list of them. The task model is
    `task_lm` (a `dspy.LM` or a model string) or `dspy.settings.lm`; a dict `{label: lm}`
    optimizes for several task models at once (each example runs on every model, scored by their
    mean, reported per model); the reasoning model is `reasoning_lm` (a `dspy.LM` or a model
    string), else `config.reasoning_model`, else the task model. Every `OptimizerConfig` field is
    accepted as a keyword.

    Each compile is recorded as it goes: the reflex run layout under `run_dir` (default
    `$REFLEX_RUN_DIR` or `.reflex`) and an MLflow run. MLflow's store is `tracking_uri`, else
    the one MLflow itself uses when the user chose one (`mlflow.set_tracking_uri`,
    `$MLFLOW_TRACKING_URI`), else SQLite `<run_dir>/mlflow.db`; the experiment is `experiment`,
    else the active one (`mlflow.set_experiment`), else `reflex`. Inside an active MLflow run
    (`with mlflow.start_run():`, or `mlflow.dspy.autolog(log_compiles=True)`'s) the run nests under
    it. `register_prompt="name"` registers the selected prompt in MLflow's prompt registry
    (alias `prompt_alias`, moved only when promoted). `mlflow=False` turns MLflow off;
    `track=False` records nothing. `metadata` is stored with the run (the CLI puts the dataset
    and prompt paths there). Progress (a line per iteration, a bar per evaluation on a terminal)
    goes to stderr unless `progress=False`, as DSPy's own optimizers report theirs.
    """

    def __init__(
        self,
        metric: Any = None,
        *,
        strategy: str | Strategy = "auto",
        task_lm: dspy.LM | str | Mapping[str, dspy.LM | str] | None = None,
        reasoning_lm: dspy.LM | str | None = None,
        optimize: Sequence[str] | None = None,
        trackers: Sequence[Tracker] = (),
        config: OptimizerConfig | None = None,
        track: bool = True,
        run_dir: str | os.PathLike[str] | None = None,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        mlflow: bool = True,
        metadata: dict[str, Any] | None = None,
        progress: bool = True,
        **config_fields: Any,
    ) -> None:
        super().__init__()
        self._strategy = strategy if isinstance(strategy, Strategy) else None
        name = (strategy.name or type(strategy).__name__) if self._strategy else strategy
        if isinstance(reasoning_lm, str):
            config_fields.setdefault("reasoning_model", reasoning_lm)
            reasoning_lm = None
        task_lm = _task_models(task_lm)
        if reasoning_lm is not None and not isinstance(reasoning_lm, dspy.BaseLM):
            raise UsageError(f"reasoning_lm must be a dspy.LM or a model string, got {type(reasoning_lm).__name__}")
        if config is not None and config_fields:
            raise UsageError("pass config= or config fields as keywords, not both")
        self.config = config or OptimizerConfig.build(strategy=name, **config_fields)
        if self._strategy is None:  # validate the name and parameters now, not mid-run
            get_strategy(self.config.strategy, **self.config.extra_kwargs)
        self.metric = metric
        self.task_lm = task_lm
        self.reasoning_lm = reasoning_lm
        self.optimize = list(optimize) if optimize is not None else None
        self.trackers = list(trackers)
        self.track = track
        self.run_dir = run_dir
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.mlflow = mlflow
        self.metadata = dict(metadata or {})
        self.progress = progress

    def compile(
        self,
        student: dspy.Module,
        *,
        trainset: Sequence[dspy.Example],
        valset: Sequence[dspy.Example] | None = None,
        teacher: dspy.Module | None = None,
        resume: Any = None,
        branch_from: tuple[str, int] | None = None,
        splits: str | os.PathLike[str] | Mapping[str, Sequence[str]] | None = None,
        **kwargs: Any,
    ) -> dspy.Module:
        """Optimize `student`. `resume` (a `Run` or run id) continues an interrupted run from its
        checkpoint; `branch_from=(run_id, iteration)` starts a new run from that iteration's
        candidate, reusing the parent's baseline. `splits` pins example ids to train / val /
        test (a splits JSON file or `{"train": [...], "val": [...], "test": [...]}`)."""
        if kwargs:
            raise UsageError(f"unexpected compile() arguments: {', '.join(sorted(kwargs))}")
        if teacher is not None:  # refused, as DSPy's GEPA does, rather than silently ignored
            raise UsageError("teacher= is not supported: demos are bootstrapped from the run's own best "
                             "candidate on the task model")
        if (resume is not None or branch_from is not None) and not self.track:
            raise UsageError("resume and branch_from need a run record: leave track=True")
        if isinstance(splits, str | os.PathLike):
            from reflex_dspy.splits import load_splits_file

            splits = load_splits_file(splits)
        inputs = RunInputs.resolve(
            metric=self.metric, config=self.config, make_strategy=self._make_strategy, task_lm=self.task_lm,
            reasoning_lm=self.reasoning_lm, optimize=self.optimize, trackers=self._run_trackers(), track=self.track,
            run_dir=self.run_dir, tracking_uri=self.tracking_uri, experiment=self.experiment, mlflow=self.mlflow,
            metadata=self.metadata,
        )
        lifecycle = RunLifecycle(inputs, student, trainset, valset, splits=splits)
        return lifecycle.execute(resume=resume, branch_from=branch_from)

    def _run_trackers(self) -> list[Tracker]:
        """The user's trackers, and a fresh console one (it holds one run's state) when progress is on."""
        from reflex_dspy.progress import ConsoleTracker

        shown = any(isinstance(t, ConsoleTracker) for t in self.trackers)
        return [*self.trackers, *([ConsoleTracker()] if self.progress and not shown else [])]

    def get_params(self) -> dict[str, Any]:
        """What `mlflow.dspy.autolog` and other tools read about this optimizer: JSON-safe values
        only, never an LM object or an API key (DSPy's default returns `__dict__`, LMs included)."""
        from reflex_dspy.tracking.redact import redact_uri

        def safe(value: Any) -> Any:
            if isinstance(value, str):
                return redact_uri(value)
            if isinstance(value, dict):
                return {str(k): safe(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [safe(v) for v in value]
            return value if isinstance(value, int | float | bool | type(None)) else _label(value)

        lms = self.task_lm if isinstance(self.task_lm, Mapping) else {"task": self.task_lm}
        return safe({
            "strategy": self.config.strategy, "config": self.config.public_dict(),
            "metric": [_label(m) for m in self.metric] if isinstance(self.metric, list) else _label(self.metric),
            "task_lm": {k: _label(v) for k, v in lms.items() if v is not None} or None,
            "reasoning_lm": _label(self.reasoning_lm), "optimize": self.optimize,
            "run_dir": None if self.run_dir is None else str(self.run_dir), "tracking_uri": self.tracking_uri,
            "experiment": self.experiment, "mlflow": self.mlflow, "track": self.track,
        })

    # -- targets --------------------------------------------------------------------------------
    def set_target_from_verdict(self, path: str | os.PathLike[str], metric: str | None = None) -> Target:
        """Use the best other model's score in an aevyra-verdict results file as the score threshold.

        `metric` picks the results' metric (default: the one matching this optimizer's metric by
        name, else the first listed); the task model(s) themselves are never the target.
        """
        from reflex_dspy.targets import target_from_verdict

        spec = self.metric if isinstance(self.metric, list | tuple) else [self.metric]
        own = self.task_lm if isinstance(self.task_lm, Mapping) else (
            {str(getattr(self.task_lm, "model", "")): None} if self.task_lm is not None else {})
        target = target_from_verdict(Path(path), metric=metric, run_metrics=[m for m in spec if isinstance(m, str)],
                                     own=list(own))
        self.config = target.apply(self.config)
        return target

    def benchmark_and_set_target(
        self,
        student: dspy.Module,
        trainset: Sequence[dspy.Example],
        targets: Mapping[str, dspy.LM] | Sequence[dspy.LM | str],
        *,
        valset: Sequence[dspy.Example] | None = None,
        splits: Mapping[str, Sequence[str]] | None = None,
    ) -> Target:
        """Run `student` as it is with the task model(s) and each target model on the search
        examples (train + val, never the held-out test), and use the best score as the threshold.

        `targets` are `dspy.LM`s, model strings, or a `{label: lm}` dict. Returns the `Target`
        with every model's score.
        """
        from reflex_dspy.metrics import resolve_metric
        from reflex_dspy.splits import split_dataset
        from reflex_dspy.targets import benchmark_models, best_target

        if self.metric is None:
            raise UsageError("a metric is required to benchmark targets: pass metric= to Reflex")
        own = self.task_lm or dspy.settings.lm
        if own is None:
            raise UsageError("no task model: pass task_lm= or call dspy.configure(lm=...) first")
        models = dict(own) if isinstance(own, Mapping) else {str(getattr(own, "model", "task")): own}
        models.update(_labelled(targets))
        cfg = self.config
        parts = split_dataset(trainset, train_ratio=cfg.train_ratio, val_ratio=cfg.val_ratio, seed=cfg.seed,
                              valset=valset, pinned=splits)
        metric = resolve_metric(self.metric, judge_lm=self._resolve_reasoning_lm(next(iter(models.values()))))
        rates: dict[str, float] = {}  # each model's share of examples answered (a note when one failed some)
        usage: dict[str, int] = {}
        scores = benchmark_models(student, parts.train + parts.val, metric, models, max_workers=cfg.max_workers,
                                  temperature=cfg.eval_temperature, success_rates=rates, usage=usage)
        from reflex_dspy.metrics import metric_names

        own = list(own) if isinstance(own, Mapping) else [str(getattr(own, "model", "task"))]
        target = best_target(scores, "verdict_run", own=own, metric="+".join(metric_names(metric)),
                             success_rates=rates)
        target = dataclasses.replace(target, usage=usage)
        self.config = target.apply(self.config)
        return target

    # -- resolution helpers ------------------------------------------------------------------
    def _resolve_reasoning_lm(self, task_lm: dspy.LM) -> dspy.LM:
        return resolve_reasoning_lm(self.config, self.reasoning_lm, task_lm)

    def _make_strategy(self, metric: Callable) -> Strategy:
        if self._strategy is not None:
            return self._strategy
        return get_strategy(self.config.strategy, metric, **self.config.extra_kwargs)


def _task_models(task_lm: Any) -> dspy.BaseLM | dict[str, dspy.BaseLM] | None:
    """`task_lm` with model strings resolved, as `reasoning_lm`'s are ("openai/gpt-4o-mini",
    "embedded"); anything but an LM, a string or a `{label: either}` dict is a one-line error now
    rather than an AttributeError mid-compile."""
    from reflex_dspy.lm import resolve_lm

    def one(value: Any, where: str) -> dspy.BaseLM:
        if isinstance(value, dspy.BaseLM):
            return value
        if isinstance(value, str):
            return resolve_lm(value)
        raise UsageError(f"{where} must be a dspy.LM or a model string, got {type(value).__name__}")

    if task_lm is None:
        return None
    if isinstance(task_lm, Mapping):
        if not task_lm:
            raise UsageError("task_lm is an empty dict: give {label: lm} for each task model")
        return {str(label): one(lm, f"task_lm[{label!r}]") for label, lm in task_lm.items()}
    return one(task_lm, "task_lm")


def _label(value: Any) -> str | None:
    """A printable name for an LM, metric or strategy: its model string or its name, no state."""
    if value is None or isinstance(value, str):
        return value
    return str(getattr(value, "model", None) or getattr(value, "__name__", None) or getattr(value, "name", None)
               or type(value).__name__)


def _join_mlflow_autolog() -> None:
    """`mlflow.dspy.autolog()` patches the `Teleprompter` subclasses that exist when it is called;
    `Reflex` is imported lazily (`reflex_dspy.Reflex`), often after it. When autolog is already on,
    patch `Reflex.compile` exactly as autolog would have, so the import order does not matter."""
    if "mlflow.dspy" not in sys.modules:
        return  # autolog was never called: it will find Reflex when it is
    try:
        from mlflow.dspy.autolog import _patched_compile
        from mlflow.utils.autologging_utils import (
            AUTOLOGGING_INTEGRATIONS,
            autologging_is_disabled,
            get_autologging_config,
            safe_patch,
        )
    except ImportError:  # another MLflow layout: autolog sees Reflex only when imported first
        return
    if "dspy" in AUTOLOGGING_INTEGRATIONS and not autologging_is_disabled("dspy"):
        safe_patch("dspy", Reflex, "compile", _patched_compile,
                   manage_run=bool(get_autologging_config("dspy", "log_compiles")))


def _labelled(models: Mapping[str, dspy.LM] | Sequence[dspy.LM | str]) -> dict[str, dspy.LM]:
    """`{label: lm}` from LMs or model strings (resolved like `-m`)."""
    if isinstance(models, Mapping):
        return dict(models)
    from reflex_dspy.lm import resolve_lm

    out = {}
    for model in models:
        lm = resolve_lm(model) if isinstance(model, str) else model
        out[model if isinstance(model, str) else str(getattr(lm, "model", lm))] = lm
    return out


_join_mlflow_autolog()
