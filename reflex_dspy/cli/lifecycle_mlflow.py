"""A created run published to MLflow, so a machine that shares only the tracking server can start it.

`optimize create ... --mlflow-tracking-uri URI` records the run in its run directory (as
always) and also as an MLflow run in status SCHEDULED, tagged `reflex.status=created`, with
created.json and the captured inputs as artifacts. `optimize run mlflow:<MLFLOW_RUN_ID>
--mlflow-tracking-uri URI` on another machine downloads them into a new created run of its own
run directory and starts it; the published record is then tagged `reflex.status=started` with
where it started, and finished, so it cannot be started twice by mistake. The run itself is
recorded in MLflow as every run is (its own parent run); the record only says where it went.

mlflow is imported inside the functions, like everywhere in the CLI.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from reflex_dspy.errors import UsageError
from reflex_dspy.run_status import CREATED
from reflex_dspy.tracking.files import read_json, write_json
from reflex_dspy.tracking.store import PID

if TYPE_CHECKING:
    from reflex_dspy.tracking.store import Run, RunStore

PREFIX = "mlflow:"
CREATED_TAG = "reflex.created_run"  # not reflex.run_path: a resume must never take this record for a run


def _client(uri: str):
    from mlflow import MlflowClient

    from reflex_dspy.tracking.mlflow_target import store_lock

    with store_lock(uri):
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # creates a SQLite store's schema under the lock
    return client


def publish(run: Run, uri: str, experiment: str) -> str:
    """Record the created `run` in MLflow; returns the MLflow run id that starts it elsewhere."""
    from reflex_dspy.tracking.mlflow_store import open_experiment
    from reflex_dspy.tracking.mlflow_target import local_artifact_root

    client = _client(uri)
    experiment_id = open_experiment(client, experiment, local_artifact_root(uri), create=True)
    record = client.create_run(experiment_id, run_name=f"reflex {run.run_id} created", tags={
        "reflex.status": "created", CREATED_TAG: str(run.path.resolve()), "reflex.created_host": socket.gethostname(),
    })
    mlflow_id = record.info.run_id
    client.log_artifact(mlflow_id, str(run.file(CREATED)))
    client.log_artifacts(mlflow_id, str(run.path / "inputs"), "inputs")
    client.update_run(mlflow_id, status="SCHEDULED")
    return mlflow_id


def fetch(ref: str, uri: str | None, store: RunStore) -> tuple[Run, str]:
    """A new created run in `store` from the published record `mlflow:<id>`; marks the record started."""
    from mlflow.exceptions import MlflowException

    mlflow_id = ref.removeprefix(PREFIX)
    if not uri:
        raise UsageError(f"optimize run {ref}: give --mlflow-tracking-uri (or $MLFLOW_TRACKING_URI) of that server")
    client = _client(uri)
    try:
        record = client.get_run(mlflow_id)
    except MlflowException:
        raise UsageError(f"optimize run {ref}: no such MLflow run in that tracking store") from None
    tags = record.data.tags
    if CREATED_TAG not in tags:
        raise UsageError(f"optimize run {ref}: that MLflow run is not a run recorded by optimize create")
    if tags.get("reflex.status") != "created":
        raise UsageError(f"optimize run {ref}: already started ({tags.get('reflex.started_as', 'elsewhere')})")
    with tempfile.TemporaryDirectory(prefix="reflex-created-") as tmp:
        client.download_artifacts(mlflow_id, "", tmp)
        created = read_json(Path(tmp) / CREATED)
        run = store.create_run()  # keeps its PID sentinel until created.json is complete
        shutil.copytree(Path(tmp) / "inputs", run.path / "inputs")
    created.update(run_id=run.run_id, published={"mlflow_run_id": mlflow_id, "from": tags[CREATED_TAG]})
    write_json(run.file(CREATED), created)
    run.file(PID).unlink(missing_ok=True)
    client.set_tag(mlflow_id, "reflex.status", "started")
    client.set_tag(mlflow_id, "reflex.started_as", f"{socket.gethostname()}:{run.path.resolve()}")
    client.set_terminated(mlflow_id, "FINISHED")
    return run, mlflow_id
