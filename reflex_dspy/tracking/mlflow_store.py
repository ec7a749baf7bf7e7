"""How reflex talks to an MLflow store, whoever writes or reads it: tag names and MLflow's
length limits, experiment lookup, paged run search, and the small conversions every MLflow
record goes through (flattened params, redacted tag text, the error and user descriptions).

Apart from `MlflowTracker` (which writes one run) because `export.py`, the CLI and the dashboard
read stores with the same names and searches, and none of them needs the tracker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reflex_dspy.tracking.redact import redact_text

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

PARAM_LIMIT, TAG_LIMIT, KEY_LIMIT, BATCH = 6000, 8000, 250, 100  # mlflow.utils.validation limits
ITERATION_TAG, PARENT_TAG = "reflex.iteration", "mlflow.parentRunId"
RUN_ID_TAG, RUN_PATH_TAG = "reflex.run_id", "reflex.run_path"  # run_path: the unique key of a run
NOTE_TAG = "mlflow.note.content"  # the run's description in MLflow's UI
CHILD_PARAMS = ("strategy", "phase", "iteration", "predictor")
CHILD_METRICS = ("score", "val_score", "delta", "eval_tokens", "reasoning_tokens", "elapsed_seconds",
                 "metric_calls")
KEY_CHARS = re.compile(r"[^\w\-. /]")
QUIET_LOGGERS = ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration")
MODEL_LOGGERS = ("mlflow.dspy.save", "dspy.primitives.base_module", "dspy.dsp.utils.settings", "mlflow.models.model",
                  "dspy.utils.saving")  # "pickle!" warnings and version notes


# MLflow's fluent tracking URI and logger levels are process-wide: runs in a user's threads take
# turns changing them, or one run puts back what it found while another still uses its change (a
# model logged to the default store: "Logged model ... not found"; MLflow left quiet for good).
_PROCESS_STATE = threading.RLock()


@contextlib.contextmanager
def quiet_store_setup(
    names: tuple[str, ...] = QUIET_LOGGERS, level: int = logging.WARNING
) -> Iterator[None]:
    """Silence the INFO lines MLflow prints while it creates or migrates a SQLite database."""
    with _PROCESS_STATE:
        saved = [(log, log.level) for log in map(logging.getLogger, names)]
        for log, _ in saved:
            log.setLevel(level)
        try:
            yield
        finally:
            for log, level in saved:
                log.setLevel(level)


@contextlib.contextmanager
def fluent_store(tracking_uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at our store for a call that only uses it (model logging,
    linking a prompt to a run), then put the user's URI and `$MLFLOW_TRACKING_URI` back."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _PROCESS_STATE:
        user_env = os.environ.get("MLFLOW_TRACKING_URI")  # _use_tracking_uri would unset it on exit
        try:
            with _use_tracking_uri(tracking_uri):
                yield
        finally:
            if user_env is not None:
                os.environ["MLFLOW_TRACKING_URI"] = user_env
            else:
                os.environ.pop("MLFLOW_TRACKING_URI", None)


def open_experiment(client: MlflowClient, name: str, artifact_root: Path | None, create: bool) -> str | None:
    """The id of experiment `name` (restored if deleted; created when `create`), or None.
    `artifact_root` only for a SQLite store: a server puts artifacts where it is configured to."""
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


def flatten(data: Any, prefix: str) -> dict[str, Any]:
    """`{"a": {"b": 1}}` → `{"prefix.a.b": 1}`; lists stay whole values (JSON text)."""
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}"))
        return out
    return {prefix: data}


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def tag_values(tags: dict[str, Any]) -> dict[str, str]:
    """Tag values as MLflow stores them: text, credentials removed, within the length limit."""
    return {k: redact_text(as_text(v))[:TAG_LIMIT] for k, v in tags.items() if v is not None}


def prompt_file(prompt: str) -> str:
    """best_prompt.md as the layout writes it: exactly one final newline."""
    return prompt.rstrip("\n") + "\n"


def describe_error(exc: BaseException, limit: int) -> str:
    """`Type: first line of the message`, credentials removed: fit for a tag or a warning."""
    text = str(exc).strip().splitlines()
    return redact_text(f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__)[:limit]


def now_ms() -> int:
    return int(time.time() * 1000)


def source_name() -> str:
    """MLflow's Source column: the script that ran, `reflex-dspy` for the CLI (`python -m` too)."""
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if script in ("__main__.py", "reflex-dspy") and "reflex_dspy.cli" in sys.modules:
        return "reflex-dspy"
    return script or "python"


def user_name() -> str | None:
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return None
