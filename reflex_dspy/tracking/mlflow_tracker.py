"""`MlflowTracker`: MLflow is the store of record of a run (SPEC §9).

One reflex run is one parent MLflow run (config, baseline, checkpoint, trajectory, result, the
optimized program); each iteration is one nested child run with its prompts, reasoning and diff.
Artifacts carry the exact text of the reflex layout files (`files.dumps`), so `export_run` can
re-create the layout byte for byte.

Why every hook is guarded: tracking must never kill an optimization that is paying for LM calls.
The first MLflow failure (server down, disk full) warns once, naming the (redacted) URI, and
logging stops for this run; the reflex layout on disk still records everything.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import json
import logging
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from reflex_dspy._env import apply_env_defaults
from reflex_dspy.result import target_label
from reflex_dspy.tracking.base import Tracker
from reflex_dspy.tracking.files import dumps
from reflex_dspy.tracking.plot import trajectory_svg
from reflex_dspy.tracking.redact import redact_text, redact_uri

if TYPE_CHECKING:
    import dspy
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from reflex_dspy.result import IterationRecord, Measurement, RunResult

PARAM_LIMIT, TAG_LIMIT, KEY_LIMIT, BATCH = 6000, 8000, 250, 100  # mlflow.utils.validation limits
ITERATION_TAG, PARENT_TAG = "reflex.iteration", "mlflow.parentRunId"
RUN_ID_TAG, RUN_PATH_TAG = "reflex.run_id", "reflex.run_path"  # run_path: the unique key of a run
CHILD_PARAMS = ("strategy", "phase", "iteration", "predictor")
CHILD_METRICS = ("score", "val_score", "delta", "eval_tokens", "reasoning_tokens", "elapsed_seconds",
                 "metric_calls")
_KEY_CHARS = re.compile(r"[^\w\-. /]")
_QUIET_LOGGERS = ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration")
_PICKLE_LOGGERS = ("mlflow.dspy.save", "dspy.primitives.base_module", "dspy.dsp.utils.settings")  # "pickle!"
_F = TypeVar("_F", bound=Callable[..., Any])
logger = logging.getLogger(__name__)


class TrackingWarning(UserWarning):
    """MLflow tracking failed; the run goes on without it."""


@contextlib.contextmanager
def quiet_store_setup(
    names: tuple[str, ...] = _QUIET_LOGGERS, level: int = logging.WARNING
) -> Iterator[None]:
    """Silence the INFO lines MLflow prints while it creates or migrates a SQLite database."""
    saved = [(log, log.level) for log in map(logging.getLogger, names)]
    for log, _ in saved:
        log.setLevel(level)
    try:
        yield
    finally:
        for log, level in saved:
            log.setLevel(level)


def default_artifact_root(tracking_uri: str) -> Path | None:
    """`<db dir>/mlartifacts` for a SQLite store, so artifacts never land in the working directory."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    return None


def open_experiment(client: MlflowClient, name: str, artifact_root: Path | None, create: bool) -> str | None:
    """The id of experiment `name` (restored if deleted; created when `create`), or None."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None and create:
        location = artifact_root.resolve().as_uri() if artifact_root else None
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:  # another process created it first
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment is not None and experiment.lifecycle_stage == "deleted" and create:
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id if experiment is not None else None


def search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    """Every active run matching the filter, over all result pages, oldest first."""
    runs, token = [], None
    while True:
        order = ["attributes.start_time ASC"]
        page = client.search_runs([experiment_id], filter_string, order_by=order, page_token=token)
        runs.extend(page)
        if not (token := page.token):
            return runs


def children(client: MlflowClient, experiment_id: str, parent_id: str) -> list[Run]:
    return search_all(client, experiment_id, f"tags.`{PARENT_TAG}` = '{parent_id}'")


def _flatten(data: Any, prefix: str) -> dict[str, Any]:
    """`{"a": {"b": 1}}` → `{"prefix.a.b": 1}`; lists stay whole values (JSON text)."""
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}"))
        return out
    return {prefix: data}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _tags(tags: dict[str, Any]) -> dict[str, str]:
    """Tag values as MLflow stores them: text, credentials removed, within the length limit."""
    return {k: redact_text(_text(v))[:TAG_LIMIT] for k, v in tags.items() if v is not None}


def _prompt_file(prompt: str) -> str:
    """best_prompt.md as the layout writes it: exactly one final newline."""
    return prompt.rstrip("\n") + "\n"


def _describe(exc: BaseException, limit: int) -> str:
    """`Type: first line of the message`, credentials removed: fit for a tag or a warning."""
    text = str(exc).strip().splitlines()
    return redact_text(f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__)[:limit]


def _safe_name(name: str) -> str:
    return re.sub(r"[^\w\-.]", "_", name) or "_"


def _guarded(hook: _F) -> _F:
    """Run a hook unless tracking failed (or has no parent run yet); the first failure warns once."""
    opens_run = hook.__name__ in ("on_run_start", "on_resume")

    @functools.wraps(hook)
    def wrapper(self: MlflowTracker, *args: Any, **kwargs: Any) -> Any:
        if self.failed is not None or (self.run_id is None and not opens_run):
            return None
        try:
            return hook(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking must not stop the run
            self._fail(exc)
            return None

    return wrapper  # type: ignore[return-value]


class MlflowTracker(Tracker):
    """Writes a run to MLflow: a parent run, one child run per iteration."""

    def __init__(
        self, tracking_uri: str, experiment: str = "reflex", artifact_root: Path | None = None
    ) -> None:
        apply_env_defaults()
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifact_root = Path(artifact_root) if artifact_root else default_artifact_root(tracking_uri)
        self.failed: str | None = None
        self.run_id: str | None = None  # the MLflow id of the parent run
        self._client: MlflowClient | None = None
        self._experiment_id = ""
        self._info: dict[str, Any] = {}
        self._records: dict[int, IterationRecord] = {}
        self._baseline: float | None = None
        self._child: str | None = None  # a child run being written, to close on error
        self._logged: dict[str, dict[int, float]] = {"score": {}, "val_score": {}}  # parent trajectory

    def __repr__(self) -> str:
        return f"MlflowTracker({redact_uri(self.tracking_uri)!r}, experiment={self.experiment!r})"

    # -- plumbing ---------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        self.failed = _describe(exc, 300)
        warnings.warn(
            f"MLflow tracking to {redact_uri(self.tracking_uri)} failed, no more logging for this run: "
            f"{self.failed}",
            TrackingWarning,
            stacklevel=3,
        )

    @property
    def client(self) -> MlflowClient:
        """The client, opening the store and the experiment on first use (not in __init__: it may fail)."""
        if self._client is None:
            import mlflow

            with quiet_store_setup():
                client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
                self._experiment_id = open_experiment(client, self.experiment, self.artifact_root, True)
            self._client = client
        return self._client

    def _log(self, run_id: str, *, params: dict | None = None, metrics: dict | None = None,
             tags: dict | None = None, step: int = 0) -> None:
        """One batched write; None values are skipped, keys and values fitted to MLflow's limits."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        ms = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items() if v is not None]
        ps = [Param(_KEY_CHARS.sub("_", k)[:KEY_LIMIT], redact_text(_text(v))[:PARAM_LIMIT])
              for k, v in (params or {}).items() if v is not None]
        ts = [RunTag(k, v) for k, v in _tags(tags or {}).items()]
        for start in range(0, max(len(ps), len(ts), 1), BATCH):  # MLflow takes 100 params/tags a call
            batch = (ms if start == 0 else [], ps[start : start + BATCH], ts[start : start + BATCH])
            if any(batch):
                self.client.log_batch(run_id, *batch)

    # -- the parent run ---------------------------------------------------------------
    def _create_parent(self, info: dict[str, Any]) -> str:
        config = info.get("config") or {}
        branched = info.get("branched_from") or {}
        tags = {
            RUN_ID_TAG: info["run_id"],
            "reflex.run_name": info.get("run_name"),
            RUN_PATH_TAG: info["run_dir"],
            "reflex.strategy": config.get("strategy"),
            "reflex.dataset": (info.get("metadata") or {}).get("dataset_path"),
            "reflex.branched_from_run": branched.get("run_id"),
            "reflex.branched_from_iteration": branched.get("iteration"),
        }
        name = " ".join(str(p) for p in ("reflex", info["run_id"], config.get("strategy")) if p)
        run = self.client.create_run(self._experiment_id, run_name=name, tags=_tags(tags))  # findable at once
        params = {
            **_flatten(config, "config"),
            **_flatten(info.get("strategy_params") or {}, "strategy"),
            **{f"split.{k}": v for k, v in (info.get("split_sizes") or {}).items()},
            **{f"model.{k}": v for k, v in (info.get("models") or {}).items()},
            "metrics": ",".join(info.get("metrics") or []) or None,
            "budget": info.get("budget"),
        }
        self._log(run.info.run_id, params=params)
        self.client.log_text(run.info.run_id, redact_text(dumps(info)), "config.json")
        return run.info.run_id

    def _find_parent(self, info: dict[str, Any]) -> str | None:
        """The parent of this run directory (tag `reflex.run_path`), the latest started if several."""
        run_id = str(info["run_id"])
        if "'" in run_id:
            raise ValueError(f"invalid run id {run_id!r}")
        runs = search_all(self.client, self._experiment_id, f"tags.`{RUN_ID_TAG}` = '{run_id}'")  # parents
        mine = [r.info.run_id for r in runs if r.data.tags.get(RUN_PATH_TAG) == info["run_dir"]]
        return mine[-1] if mine else None

    def _trajectory(self) -> None:
        threshold = (self._info.get("config") or {}).get("score_threshold")
        records = [self._records[i] for i in sorted(self._records)]
        svg = trajectory_svg(records, baseline=self._baseline, threshold=threshold)
        self.client.log_text(self.run_id, svg, "trajectory.svg")

    def _log_point(self, record: IterationRecord) -> None:
        """The parent's score/val_score at step=iteration, unless that value is already there (resume)."""
        metrics = {}
        for key in ("score", "val_score"):
            value = getattr(record, key)
            if value is not None and self._logged[key].get(record.iteration) != float(value):
                metrics[key] = self._logged[key][record.iteration] = float(value)
        self._log(self.run_id, metrics=metrics, step=record.iteration)

    # -- iterations -------------------------------------------------------------------
    def _previous_prompts(self, iteration: int) -> dict[str, str]:
        """The prompts `iteration` changed: the previous record's, or the initial candidate's."""
        earlier = [i for i in self._records if i < iteration]
        if earlier:
            return dict(self._records[max(earlier)].system_prompt)
        predictors = (self._info.get("initial_candidate") or {}).get("predictors") or {}
        return {name: state["instructions"] for name, state in predictors.items()}

    def _log_child(self, record: IterationRecord) -> None:
        diff: list[str] = []
        before, after = self._previous_prompts(record.iteration), record.system_prompt
        for name in sorted(before.keys() | after.keys()):
            old, new = (f"{t}\n".splitlines(True) if t else [] for t in (before.get(name), after.get(name)))
            diff.extend(difflib.unified_diff(old, new, f"a/{name}", f"b/{name}"))
        files = {f"prompts/{_safe_name(n)}.md": text for n, text in record.system_prompt.items()}
        files["reasoning.md"], files["change_summary.txt"] = record.reasoning, record.change_summary
        files["diff.patch"], files["iteration.json"] = "".join(diff), dumps(record.to_dict())
        tags = {PARENT_TAG: self.run_id, ITERATION_TAG: str(record.iteration)}
        name = f"iteration {record.iteration:03d}"
        run = self.client.create_run(self._experiment_id, run_name=name, tags=tags)
        self._child = run.info.run_id
        params, metrics = ({k: getattr(record, k) for k in keys} for keys in (CHILD_PARAMS, CHILD_METRICS))
        self._log(self._child, params=params, metrics=metrics)
        with tempfile.TemporaryDirectory(prefix="reflex-mlflow-") as tmp:
            for rel, text in files.items():
                (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / rel).write_text(text or "", encoding="utf-8", newline="")
            self.client.log_artifacts(self._child, tmp)
        self.client.set_terminated(self._child, "FINISHED")
        self._child = None

    # -- hooks ------------------------------------------------------------------------
    @_guarded
    def on_run_start(self, info: dict[str, Any]) -> None:
        self._info = info
        self.run_id = self._create_parent(info)

    @_guarded
    def on_resume(
        self, info: dict[str, Any], baseline: Measurement | None, records: list[IterationRecord]
    ) -> None:
        """Reattach to the parent and make MLflow hold exactly one finished child per recorded iteration."""
        self._info = info
        self.run_id = self._find_parent(info) or self._create_parent(info)
        client = self.client
        client.update_run(self.run_id, status="RUNNING")
        if baseline is not None:
            if any(a.path == "baseline.json" for a in client.list_artifacts(self.run_id)):
                self._baseline = baseline.mean
            else:
                self._log_baseline(baseline)
        for key in self._logged:
            self._logged[key] = {m.step: m.value for m in client.get_metric_history(self.run_id, key)}
        wanted = {r.iteration for r in records}
        kept: set[int] = set()
        for child in children(client, self._experiment_id, self.run_id):
            tag = child.data.tags.get(ITERATION_TAG, "")
            if not tag.isdigit():
                continue  # not ours
            if int(tag) in wanted and child.info.status == "FINISHED" and int(tag) not in kept:
                kept.add(int(tag))
            else:  # unfinished, a duplicate, or an iteration the layout lost: it is logged again
                client.delete_run(child.info.run_id)
        for record in sorted(records, key=lambda r: r.iteration):
            if record.iteration not in kept:
                self._log_child(record)
            self._records[record.iteration] = record
            self._log_point(record)
        self._trajectory()

    @_guarded
    def on_baseline(self, baseline: Measurement) -> None:
        self._log_baseline(baseline)

    def _log_baseline(self, baseline: Measurement) -> None:
        self._baseline = baseline.mean
        self._log(self.run_id, metrics={"baseline_score": baseline.mean, "baseline_std": baseline.std})
        self.client.log_text(self.run_id, dumps(baseline.to_dict()), "baseline.json")

    @_guarded
    def on_iteration(self, record: IterationRecord) -> None:
        self._log_child(record)
        self._records[record.iteration] = record
        self._log_point(record)
        self._trajectory()

    @_guarded
    def on_checkpoint(self, state: dict[str, Any]) -> None:
        self.client.log_text(self.run_id, dumps(state), "checkpoint.json")
        best = state.get("best")
        if isinstance(best, dict) and isinstance(best.get("prompt"), str) and best["prompt"]:
            self.client.log_text(self.run_id, _prompt_file(best["prompt"]), "best_prompt.md")

    @_guarded
    def on_program(self, program: dspy.Module) -> None:
        with tempfile.TemporaryDirectory(prefix="reflex-mlflow-") as tmp:
            path = Path(tmp) / "program.json"
            program.save(str(path))
            self.client.log_artifact(self.run_id, str(path))
        self._log(self.run_id, tags={"reflex.dspy_model": self._log_dspy_model(program)})

    def _log_dspy_model(self, program: dspy.Module) -> str:
        """Log the program as an MLflow DSPy model when the flavor imports (it needs full mlflow)."""
        try:
            flavor = importlib.import_module("mlflow.dspy")
        except Exception as exc:  # noqa: BLE001 - pandas & co. come with the `ui` extra only
            return f"unavailable: {_describe(exc, 180)}"
        import dspy as dspy_module
        import mlflow
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri

        requirements = [f"dspy=={dspy_module.__version__}", f"mlflow=={mlflow.__version__}"]
        user_env = os.environ.get("MLFLOW_TRACKING_URI")  # _use_tracking_uri would unset it on exit
        try:  # the flavor only logs through the fluent API: borrow it, then put everything back
            with _use_tracking_uri(self.tracking_uri), quiet_store_setup(_PICKLE_LOGGERS, logging.ERROR):
                try:
                    with mlflow.start_run(run_id=self.run_id, nested=mlflow.active_run() is not None):
                        flavor.log_model(  # use_dspy_model_save: dspy's own format, not a pickle
                            program, name="program", pip_requirements=requirements, use_dspy_model_save=True)
                finally:  # leaving start_run marked the parent FINISHED; on_result does that
                    self.client.update_run(self.run_id, status="RUNNING")
        except Exception as exc:  # noqa: BLE001 - program.json is logged either way
            logger.info("could not log the program as an MLflow DSPy model: %s", _describe(exc, 300))
            return f"unavailable: {_describe(exc, 180)}"
        finally:
            if user_env is not None:
                os.environ["MLFLOW_TRACKING_URI"] = user_env
        return "logged"

    @_guarded
    def on_result(self, result: RunResult) -> None:
        sig = result.significance
        metrics = {"final_score": result.final.mean, "final_std": result.final.std, "p_value": sig.p_value,
                   "improvement": result.improvement, "selected_iteration": result.selected_iteration}
        tags = {"reflex.significant": "n/a" if sig.significant is None else str(sig.significant).lower(),
                "reflex.stop_reason": result.stop_reason}
        if result.budget is not None:
            metrics["metric_call_budget"] = result.budget
            metrics["search_metric_calls"] = result.usage.get("search_calls")
        metrics.update({"final_score." + re.sub(r"[^\w\-./ ]", "_", label): score  # MLflow's allowed characters
                        for label, score in result.final.scores_by_model.items()})
        if result.target:
            tags["reflex.target"] = target_label(result.target)
        if result.promotion:
            tags["reflex.promoted"] = str(result.promotion["promoted"]).lower()
        self._log(self.run_id, metrics=metrics, tags=tags)
        self.client.log_text(self.run_id, dumps(result.to_dict()), "result.json")
        self.client.log_text(self.run_id, _prompt_file(result.best_prompt), "best_prompt.md")
        svg = trajectory_svg(result.iterations, baseline=result.baseline.mean, final=result.final.mean,
                             threshold=result.score_threshold)
        self.client.log_text(self.run_id, svg, "trajectory.svg")
        self.client.set_terminated(self.run_id, "FINISHED")

    @_guarded
    def on_error(self, error: BaseException) -> None:
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        if self._child is not None:  # the iteration being logged when the run stopped
            self.client.set_terminated(self._child, status)
            self._child = None
        self._log(self.run_id, tags={"reflex.error": _describe(error, 500)})
        self.client.set_terminated(self.run_id, status)
