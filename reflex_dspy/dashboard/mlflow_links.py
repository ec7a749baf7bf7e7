"""Links from a run to its MLflow run, when the user names an MLflow UI (`--mlflow-ui-url`).

The run layout records the tracking URI and experiment (config.json "tracking") and MLflow's
parent run carries the tag `reflex.run_path` = the run directory, so the MLflow ids are found
by one search. MLflow is imported only when a UI URL is configured, and answers are cached
(the ids of a run never change); a store that is missing, unreachable or whose URI was
recorded without its credentials gives no link rather than an error.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

logger = logging.getLogger(__name__)
RETRY_SECONDS = 30.0  # a run not found (yet) is looked up again after this long


class MlflowLinks:
    """`link(config)` → `UI/#/experiments/<exp>/runs/<run>`, or None."""

    def __init__(self, ui_url: str) -> None:
        parts = urlsplit(ui_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"MLflow UI URL {ui_url!r}: expected http(s)://host[:port]")
        self.ui_url = ui_url.rstrip("/")
        self._cache: dict[str, tuple[float, tuple[str, str] | None]] = {}
        self._lock = threading.Lock()

    def __call__(self, config: dict[str, Any]) -> str | None:
        tracking = config.get("tracking") or {}
        key = str(config.get("run_dir") or "")
        if not key:
            return None
        with self._lock:
            entry = self._cache.get(key)
            found = entry[1] if entry else None
            if entry is None or (found is None and time.monotonic() - entry[0] > RETRY_SECONDS):
                found = self._lookup(tracking.get("uri"), tracking.get("experiment"), key)
                self._cache[key] = (time.monotonic(), found)
        if found is None:
            return None
        experiment_id, run_id = found
        return f"{self.ui_url}/#/experiments/{quote(experiment_id)}/runs/{quote(run_id)}"

    @staticmethod
    def _lookup(uri: str | None, experiment: str | None, run_dir: str) -> tuple[str, str] | None:
        if not uri or not experiment or "***" in uri or "'" in run_dir:
            return None  # no store, or its credentials were (rightly) not recorded
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
            return None  # MLflow would create an empty database
        try:
            from mlflow.tracking import MlflowClient

            from reflex_dspy.tracking.mlflow_store import RUN_PATH_TAG, quiet_store_setup, search_all

            with quiet_store_setup():
                client = MlflowClient(tracking_uri=uri)
                found = client.get_experiment_by_name(experiment)
                if found is None:
                    return None
                runs = search_all(client, found.experiment_id, f"tags.`{RUN_PATH_TAG}` = '{run_dir}'")
        except Exception as exc:  # an unreachable server must not break the page
            logger.warning("MLflow lookup failed: %s", type(exc).__name__)
            return None
        return (found.experiment_id, runs[0].info.run_id) if runs else None
