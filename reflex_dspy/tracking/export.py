"""Re-create a reflex run directory from MLflow, the store of record (`reflex-dspy export`).

`MlflowTracker` logs each layout file's exact text as an artifact, so the export writes those
texts back unchanged: the exported files equal the live layout's, and `RunStore` reads them
like any other run (status completed when result.json exists, interrupted otherwise).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from reflex_dspy._env import apply_env_defaults
from reflex_dspy.errors import UsageError
from reflex_dspy.tracking.files import write_atomic
from reflex_dspy.tracking.mlflow_store import (
    ITERATION_TAG,
    PARENT_TAG,
    RUN_ID_TAG,
    children,
    open_experiment,
    quiet_store_setup,
    search_all,
)
from reflex_dspy.tracking.redact import redact_uri
from reflex_dspy.tracking.store import (
    BASELINE,
    BEST_PROMPT,
    CHECKPOINT,
    CONFIG,
    ITERATIONS,
    RESULT,
    RUN_ID,
    RUN_NAME,
    RunStore,
    iteration_file,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

PROGRAM = "program.json"
PARENT_FILES = (CONFIG, BASELINE, CHECKPOINT, BEST_PROMPT, PROGRAM, RESULT)


def _find_run(client: MlflowClient, experiment_id: str | None, run: str) -> Run | None:
    """A reflex parent run by reflex id (`3`, `003`), run directory name, or MLflow run id."""
    from mlflow.exceptions import MlflowException

    if experiment_id is not None:
        filters = []
        if RUN_ID.match(run):
            filters = [
                f"tags.`{RUN_ID_TAG}` = '{value}'" for value in dict.fromkeys((f"{int(run):03d}", run))
            ]
        elif RUN_NAME.match(run):
            filters = [f"tags.`reflex.run_name` = '{run}'"]
        for filter_string in filters:
            found = [
                r for r in search_all(client, experiment_id, filter_string) if PARENT_TAG not in r.data.tags
            ]
            if found:
                return max(found, key=lambda r: r.info.start_time or 0)
    if run.isalnum():
        try:
            found = client.get_run(run)
        except MlflowException:
            return None
        if found.info.lifecycle_stage == "active" and RUN_ID_TAG in found.data.tags:
            return found
    return None


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow draws a progress bar on stderr per download; the CLI prints its own line instead."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if key in os.environ:  # the user's choice wins
        yield
        return
    os.environ[key] = "false"
    try:
        yield
    finally:
        os.environ.pop(key, None)


def _download(client: MlflowClient, run_id: str, path: str, tmp: Path) -> str:
    """The exact text of one artifact."""
    folder = tmp / run_id
    folder.mkdir(exist_ok=True)
    local = client.download_artifacts(run_id, path, str(folder))
    return Path(local).read_bytes().decode("utf-8")


def export_run(tracking_uri: str, run: str, dest_root: Path, experiment: str = "reflex") -> Path:
    """Write `<dest_root>/runs/<run name>/` from the MLflow record of `run`; returns that directory.

    `run` is a reflex run id (the most recently started run wins when several share it), a run
    directory name, or an MLflow run id. Only files present in MLflow are written; each
    iteration comes from its finished child run. Nothing is overwritten.
    """
    apply_env_defaults()
    import mlflow

    text = str(run).strip()
    with quiet_store_setup():
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        experiment_id = open_experiment(client, experiment, None, create=False)
    parent = _find_run(client, experiment_id, text) if text else None
    if parent is None:
        raise UsageError(
            f"no reflex run {text!r} in MLflow experiment {experiment!r} at {redact_uri(tracking_uri)}"
        )
    name = parent.data.tags.get("reflex.run_name", "")
    if not RUN_NAME.match(name):
        raise UsageError(f"MLflow run {parent.info.run_id} has no valid reflex.run_name tag ({name!r})")
    runs_dir = RunStore(dest_root).runs_dir
    target = runs_dir / name
    if target.exists():
        raise UsageError(f"{target} already exists: export to another directory or remove it first")

    files: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="reflex-export-") as tmp, _no_progress_bar():
        present = {a.path for a in client.list_artifacts(parent.info.run_id)}
        for file in PARENT_FILES:
            if file in present:
                files[file] = _download(client, parent.info.run_id, file, Path(tmp))
        done: set[int] = set()  # children come oldest first: the first finished one of an iteration wins
        for child in children(client, parent.info.experiment_id, parent.info.run_id):
            tag = child.data.tags.get(ITERATION_TAG, "")
            if tag.isdigit() and int(tag) not in done and child.info.status == "FINISHED":
                files[iteration_file(int(tag))] = _download(
                    client, child.info.run_id, "iteration.json", Path(tmp)
                )
                done.add(int(tag))

    # Stage beside the target and rename, so a failed export leaves no half-written run behind.
    runs_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=runs_dir, prefix=f".{name}.export-"))
    try:
        (staging / ITERATIONS).mkdir()
        for rel, content in files.items():
            write_atomic(staging / rel, content)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
