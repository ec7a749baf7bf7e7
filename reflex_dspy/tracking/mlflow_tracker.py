"""`MlflowTracker`: MLflow is the store of record of a run.

One reflex run is one parent MLflow run (config, baseline, checkpoint, trajectory, result, the
optimized program as a servable model); each iteration is one nested child run with its
prompts, demos, reasoning and diff as previewable text. When the user has an MLflow run open
(their own `mlflow.start_run()`, or `mlflow.dspy.autolog`'s), the parent nests under it.
Artifacts carry the exact text of the reflex layout files (`files.dumps`), so `export_run` can
re-create the layout byte for byte.

Opening the store (importing MLflow, creating or migrating the database, creating the parent
run) takes seconds; it runs in a background thread started by `on_run_start`, while the
baseline is measured, and every later hook waits for it. The parent's start time is the
moment `on_run_start` was called, so MLflow's durations are the run's real ones.

Why every hook is guarded: tracking must never kill an optimization that is paying for LM calls.
The first MLflow failure (server down, disk full) warns once, naming the (redacted) URI, and
logging stops for this run; the reflex layout on disk still records everything.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from reflex_dspy._env import apply_env_defaults
from reflex_dspy.tracking.base import Tracker
from reflex_dspy.tracking.files import dumps
from reflex_dspy.tracking.mlflow_artifacts import child_files, dataset_input, description
from reflex_dspy.tracking.mlflow_store import (
    BATCH,
    CHILD_METRICS,
    CHILD_PARAMS,
    ITERATION_TAG,
    KEY_CHARS,
    KEY_LIMIT,
    MODEL_LOGGERS,
    NOTE_TAG,
    PARAM_LIMIT,
    PARENT_TAG,
    RUN_ID_TAG,
    RUN_PATH_TAG,
    as_text,
    children,
    describe_error,
    flatten,
    fluent_store,
    now_ms,
    open_experiment,
    prompt_file,
    quiet_store_setup,
    search_all,
    source_name,
    tag_values,
    user_name,
)
from reflex_dspy.tracking.mlflow_target import DEFAULT_EXPERIMENT, local_artifact_root, store_lock
from reflex_dspy.tracking.plot import trajectory_svg
from reflex_dspy.tracking.redact import redact_text, redact_uri
from reflex_dspy.tracking.schema import FileContext, config_document

if TYPE_CHECKING:
    import dspy
    from mlflow import MlflowClient

    from reflex_dspy.result import IterationRecord, Measurement, RunResult

_F = TypeVar("_F", bound=Callable[..., Any])
logger = logging.getLogger(__name__)


class TrackingWarning(UserWarning):
    """MLflow tracking failed; the run goes on without it (the warning says what was lost)."""


def _guarded(hook: _F) -> _F:
    """Run a hook once the store is open, unless tracking failed (or there is no parent run);
    the first failure warns once."""
    opens_run = hook.__name__ in ("on_run_start", "on_resume")

    @functools.wraps(hook)
    def wrapper(self: MlflowTracker, *args: Any, **kwargs: Any) -> Any:
        self._join()
        if self.failed is not None or (self.run_id is None and not opens_run):
            return None
        try:
            return hook(self, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - tracking must not stop the run
            self._fail(exc)
            return None

    return wrapper  # type: ignore[return-value]


class MlflowTracker(Tracker):
    """Writes a run to MLflow: a parent run (nested under `parent_run_id` when given), one child
    run per iteration, the program as a model, and (config `register_prompt`) the prompt registry."""

    def __init__(
        self, tracking_uri: str, experiment: str = DEFAULT_EXPERIMENT, artifact_root: Path | None = None,
        *, parent_run_id: str | None = None,
    ) -> None:
        apply_env_defaults()
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifact_root = Path(artifact_root) if artifact_root else local_artifact_root(tracking_uri)
        self.parent_run_id = parent_run_id  # the user's (or autolog's) active run
        self.failed: str | None = None
        self.run_id: str | None = None  # the MLflow id of the parent run
        self.model_id: str | None = None
        self._client: MlflowClient | None = None
        self._opening: threading.Thread | None = None
        self._open_error: BaseException | None = None
        self._experiment_id = ""
        self._info: dict[str, Any] = {}
        self._records: dict[int, IterationRecord] = {}
        self._context = FileContext()  # what checkpoint.json needs beyond the state (tracking/schema.py)
        self._baseline: Measurement | None = None
        self._program: dspy.Module | None = None
        self._child: str | None = None  # a child run being written, to close on error
        self._logged: dict[str, dict[int, float]] = {"score": {}, "val_score": {}}  # parent trajectory
        self._started_ms = now_ms()
        self._mark_ms = self._started_ms  # when the next iteration began (the last checkpoint)

    @classmethod
    def for_run(cls, tracking_uri: str, experiment: str | None) -> MlflowTracker:
        """A tracker for a resolved store: the experiment (and the run to nest under) resolved the
        way MLflow users expect (`mlflow_target.resolve_target`), in the caller's thread."""
        from reflex_dspy.tracking.mlflow_target import resolve_target

        target = resolve_target(tracking_uri, experiment)
        return cls(target.tracking_uri, target.experiment, parent_run_id=target.parent_run_id)

    def __repr__(self) -> str:
        return f"MlflowTracker({redact_uri(self.tracking_uri)!r}, experiment={self.experiment!r})"

    # -- plumbing ---------------------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        self.failed = describe_error(exc, 300)
        where = f"run {self.run_id}" if self.run_id else "the run"
        warnings.warn(
            f"MLflow tracking to {redact_uri(self.tracking_uri)} failed; MLflow's record of {where} is "
            f"incomplete from here on (the run directory has everything): {self.failed}",
            TrackingWarning,
            stacklevel=3,
        )

    def _join(self) -> None:
        """Wait for the background opening; its failure is reported here, in the caller's thread."""
        if self._opening is not None:
            self._opening.join()
            self._opening = None
            if self._open_error is not None and self.failed is None:
                self._fail(self._open_error)

    @property
    def client(self) -> MlflowClient:
        """The client, opening the store and the experiment on first use (not in __init__: it may fail).
        Creating a SQLite store is serialised between processes (`store_lock`)."""
        if self._client is None:
            import mlflow

            with quiet_store_setup(), store_lock(self.tracking_uri):
                client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
                self._experiment_id = self._experiment_id or open_experiment(
                    client, self.experiment, self.artifact_root, True)
            with contextlib.suppress(AttributeError):  # "🏃 View run ..." lines would land in our summary
                client._tracking_client._log_url = lambda run_id: None
            self._client = client
        return self._client

    def _log(self, run_id: str, *, params: dict | None = None, metrics: dict | None = None,
             tags: dict | None = None, step: int = 0) -> None:
        """One batched write; None values are skipped, keys and values fitted to MLflow's limits."""
        from mlflow.entities import Metric, Param, RunTag

        now = now_ms()
        ms = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items() if v is not None]
        ps = [Param(KEY_CHARS.sub("_", k)[:KEY_LIMIT], redact_text(as_text(v))[:PARAM_LIMIT])
              for k, v in (params or {}).items() if v is not None]
        ts = [RunTag(k, v) for k, v in tag_values(tags or {}).items()]
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
            "reflex.started": info.get("created"),
            PARENT_TAG: self.parent_run_id,
            NOTE_TAG: description(info),
            "mlflow.source.name": source_name(),
            "mlflow.source.type": "LOCAL",
            "mlflow.user": user_name(),
        }
        name = " ".join(str(p) for p in ("reflex", info["run_id"], config.get("strategy")) if p)
        run = self.client.create_run(self._experiment_id, start_time=self._started_ms, run_name=name,
                                     tags=tag_values(tags))  # findable at once
        params = {
            **flatten(config, "config"),
            **flatten(info.get("strategy_params") or {}, "strategy"),
            **{f"split.{k}": v for k, v in (info.get("split_sizes") or {}).items()},
            **{f"model.{k}": v for k, v in (info.get("models") or {}).items()},
            "metrics": ",".join(info.get("metrics") or []) or None,
            "budget": info.get("budget"),
        }
        self._log(run.info.run_id, params=params)
        self.client.log_text(run.info.run_id, redact_text(dumps(config_document(info))), "config.json")
        if (dataset := dataset_input(info, tags["mlflow.source.name"])) is not None:
            self._log_dataset(run.info.run_id, dataset)
        return run.info.run_id

    def _log_dataset(self, run_id: str, dataset: Any) -> None:
        """Link the dataset to the run. Two runs of one dataset starting together (a user's threads,
        processes on one store) both insert it; the slower fails MLflow's unique key, and then the
        dataset exists, so linking again succeeds (once: anything else is a real failure)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.log_inputs(run_id, datasets=[dataset])
        except MlflowException as exc:
            if "UNIQUE constraint failed" not in str(exc) and "IntegrityError" not in str(exc):
                raise
            self.client.log_inputs(run_id, datasets=[dataset])

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
        baseline = self._baseline.mean if self._baseline is not None else None
        svg = trajectory_svg(records, baseline=baseline, threshold=threshold)
        self.client.log_text(self.run_id, svg, "trajectory.svg")

    def _log_point(self, step: int, **values: float | None) -> None:
        """The parent's score/val_score at `step` (the iteration; 0 = the starting prompt), unless
        that value is already there (resume)."""
        metrics = {}
        for key, value in values.items():
            if value is not None and self._logged[key].get(step) != float(value):
                metrics[key] = self._logged[key][step] = float(value)
        self._log(self.run_id, metrics=metrics, step=step)

    def _log_record_point(self, record: IterationRecord) -> None:
        if record.iteration == 1 and record.score is not None and record.delta is not None:
            self._log_point(0, score=round(record.score - record.delta, 6))  # the starting prompt, same batch
        self._log_point(record.iteration, score=record.score, val_score=record.val_score)

    # -- iterations -------------------------------------------------------------------
    def _previous_candidate(self, iteration: int) -> dict[str, Any]:
        """The candidate `iteration` changed: the previous record's, or the initial one."""
        earlier = [i for i in self._records if i < iteration]
        if earlier:
            return self._records[max(earlier)].candidate
        return self._info.get("initial_candidate") or {}

    def _log_child(self, record: IterationRecord, start_ms: int | None = None, end_ms: int | None = None) -> None:
        files = child_files(record, self._previous_candidate(record.iteration))
        tags = {PARENT_TAG: self.run_id, ITERATION_TAG: str(record.iteration)}
        name = f"iteration {record.iteration:03d}"
        run = self.client.create_run(self._experiment_id, run_name=name, tags=tags, start_time=start_ms)
        self._child = run.info.run_id
        params, metrics = ({k: getattr(record, k) for k in keys} for keys in (CHILD_PARAMS, CHILD_METRICS))
        self._log(self._child, params=params, metrics=metrics)
        import tempfile

        with tempfile.TemporaryDirectory(prefix="reflex-mlflow-") as tmp:
            for rel, text in files.items():
                (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / rel).write_text(text or "", encoding="utf-8", newline="")
            self.client.log_artifacts(self._child, tmp)
        self.client.set_terminated(self._child, "FINISHED", end_time=end_ms)
        self._child = None

    # -- hooks ------------------------------------------------------------------------
    def on_run_start(self, info: dict[str, Any]) -> None:
        """Open the store and create the parent run in the background (joined by the next hook)."""
        if self.failed is not None:
            return
        self._info = info
        self._context.start(info)
        self._started_ms = self._mark_ms = now_ms()

        def open_and_create() -> None:
            try:
                self.run_id = self._create_parent(info)
            except BaseException as exc:  # noqa: BLE001 - reported by _join, in the run's thread
                self._open_error = exc

        if self.parent_run_id is not None:
            # Nested under the user's (autolog's, mlflow.genai's) run: MLflow is open already, and its
            # code in this thread may hold MLflow's import-hook lock while importing; a second thread
            # importing MLflow modules then deadlocks with it (seen under mlflow.genai.optimize_prompts).
            open_and_create()
            if self._open_error is not None:
                self._fail(self._open_error)
            return
        self._opening = threading.Thread(target=open_and_create, name="reflex-mlflow-open", daemon=True)
        self._opening.start()

    @_guarded
    def on_resume(
        self, info: dict[str, Any], baseline: Measurement | None, records: list[IterationRecord]
    ) -> None:
        """Reattach to the parent and make MLflow hold exactly one finished child per recorded iteration."""
        self._info = info
        self._context.start(info, records)
        self.run_id = self._find_parent(info) or self._create_parent(info)
        client = self.client
        client.update_run(self.run_id, status="RUNNING")
        client.set_tag(self.run_id, "reflex.status", "running")  # no longer failed / interrupted (issue 23)
        if baseline is not None:
            if any(a.path == "baseline.json" for a in client.list_artifacts(self.run_id)):
                self._baseline = baseline
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
            self._log_record_point(record)
        self._trajectory()
        self._mark_ms = now_ms()

    @_guarded
    def on_baseline(self, baseline: Measurement) -> None:
        self._log_baseline(baseline)

    def _log_baseline(self, baseline: Measurement) -> None:
        self._baseline = baseline
        self._log(self.run_id, metrics={"baseline_score": baseline.mean, "baseline_std": baseline.std,
                                        "baseline_test": baseline.mean})
        self.client.log_text(self.run_id, dumps(baseline.to_dict()), "baseline.json")

    @_guarded
    def on_iteration(self, record: IterationRecord) -> None:
        self._context.iteration(record)
        self._log_child(record, start_ms=self._mark_ms, end_ms=now_ms())
        self._records[record.iteration] = record
        self._log_record_point(record)
        self._trajectory()

    @_guarded
    def on_checkpoint(self, state: dict[str, Any]) -> None:
        self.client.log_text(self.run_id, dumps(self._context.checkpoint(state)), "checkpoint.json")
        best = state.get("best")
        if isinstance(best, dict) and isinstance(best.get("prompt"), str) and best["prompt"]:
            self.client.log_text(self.run_id, prompt_file(best["prompt"]), "best_prompt.md")
        if state.get("iteration") == 0 and state.get("initial_val") is not None:
            self._log_point(0, val_score=state["initial_val"])  # the starting prompt on val
        self._mark_ms = now_ms()

    @_guarded
    def on_program(self, program: dspy.Module) -> None:
        """Keep the program for `on_result` (the model's metrics must be the final ones) and log
        its DSPy state as `program.json`."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="reflex-mlflow-") as tmp:
            path = Path(tmp) / "program.json"
            program.save(str(path))
            self.client.log_artifact(self.run_id, str(path))
        self._program = program

    @_guarded
    def on_result(self, result: RunResult) -> None:
        from reflex_dspy.tracking.mlflow_summary import summary_metrics

        metrics, tags = summary_metrics(result)
        step = result.selected_iteration  # the model is linked to this step's metrics: the selected ones
        self._log(self.run_id, metrics=metrics, tags={**tags, NOTE_TAG: description(self._info, result),
                                                              "reflex.status": "completed"}, step=step)
        self.client.log_text(self.run_id, dumps(result.to_dict()), "result.json")
        self.client.log_text(self.run_id, prompt_file(result.best_prompt), "best_prompt.md")
        svg = trajectory_svg(result.iterations, baseline=result.baseline.mean, final=result.final.mean,
                             threshold=result.score_threshold)
        self.client.log_text(self.run_id, svg, "trajectory.svg")
        if self._program is not None:
            status = self._log_model(self._program, step)
            self._log(self.run_id, tags={"reflex.dspy_model": status,
                                         "reflex.model_uri": f"models:/{self.model_id}" if self.model_id else None})
        base = (self._info.get("config") or {}).get("register_prompt")
        if base:
            self._register(result, base, metrics.get("selected_val_score"))
        self.client.set_terminated(self.run_id, "FINISHED")

    def _register(self, result: RunResult, base: str, selected_val: float | None) -> None:
        from reflex_dspy.tracking.mlflow_prompts import DEFAULT_ALIAS, register_prompts

        alias = (self._info.get("config") or {}).get("prompt_alias") or DEFAULT_ALIAS
        try:
            with fluent_store(self.tracking_uri), quiet_store_setup(("mlflow.store.model_registry.abstract_store",)):
                done = register_prompts(self.client, self.run_id, base, alias, result, selected_val)
        except Exception as exc:  # noqa: BLE001 - the run's own record is complete without it
            message = f"prompt {base!r} not registered in MLflow: {describe_error(exc, 300)}"
            warnings.warn(message, TrackingWarning, stacklevel=2)
            self._log(self.run_id, tags={"reflex.registered_prompts": message})
            return
        self._log(self.run_id, tags={"reflex.registered_prompts": done["versions"],
                                     "reflex.prompt_alias": done["alias"] or "not moved (not promoted)"})

    def _log_model(self, program: dspy.Module, step: int) -> str:
        """Log the program as a servable MLflow DSPy model; "logged" or why not (the run goes on)."""
        try:
            from reflex_dspy.tracking.mlflow_model import log_program_model
        except Exception as exc:  # noqa: BLE001 - pandas & co. come with full mlflow only
            return f"unavailable: {describe_error(exc, 180)}"
        example = (self._baseline.samples[0].get("inputs") if self._baseline and self._baseline.samples else None)
        try:
            with fluent_store(self.tracking_uri), quiet_store_setup(MODEL_LOGGERS, logging.ERROR):
                self.model_id = log_program_model(self.client, self._experiment_id, program, run_id=self.run_id,
                                                  step=step, example=example)
        except ImportError as exc:  # mlflow-skinny has no model flavors (full mlflow, the `ui` extra, has them)
            return f"unavailable: {describe_error(exc, 180)}"
        except Exception as exc:  # noqa: BLE001 - program.json is logged either way
            logger.warning("could not log the program as an MLflow model: %s", describe_error(exc, 300))
            return f"unavailable: {describe_error(exc, 180)}"
        return "logged"

    @_guarded
    def on_error(self, error: BaseException) -> None:
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        if self._child is not None:  # the iteration being logged when the run stopped
            self.client.set_terminated(self._child, status)
            self._child = None
        from reflex_dspy.run_status import failure_reason, is_interruption

        tags = {"reflex.error": describe_error(error, 500)}
        # The run layout's status and one-line reason (run_status.py, issue 23), searchable as tags.
        tags["reflex.status"] = "interrupted" if is_interruption(error) else "failed"
        if not is_interruption(error):
            tags["reflex.failure_reason"] = failure_reason(error)
        self._log(self.run_id, tags=tags)
        self.client.set_terminated(self.run_id, status)

