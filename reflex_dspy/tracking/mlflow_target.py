"""Where a run is recorded in MLflow: the store, the experiment, and the run it nests under.

MLflow users already chose a store and an experiment (`mlflow.set_tracking_uri`,
`mlflow.set_experiment`, `$MLFLOW_TRACKING_URI`, `$MLFLOW_EXPERIMENT_NAME`, an open
`mlflow.start_run()`); a run of ours goes where theirs go. Resolution order, for both:
explicit argument or flag; else what MLflow itself would use, when the user set it; else our own
(a SQLite file under the run directory, experiment `reflex`).

MLflow is never imported here unless the user's process already imported it: the CLI and a
plain `Reflex` compile resolve without paying MLflow's import, which happens later, in the
background (see `MlflowTracker`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from urllib.parse import urlparse

from reflex_dspy.errors import UsageError
from reflex_dspy.tracking.redact import redact_uri

try:  # POSIX; elsewhere two processes creating one store at once are not serialised
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

DEFAULT_EXPERIMENT = "reflex"
# The schemes MLflow's tracking-store registry knows (mlflow/tracking/_tracking_service/utils.py,
# `_register_tracking_stores`); plug-ins add theirs through the `mlflow.tracking_store` entry point.
# tests/test_mlflow_server.py checks this list against the installed MLflow's registry.
BUILTIN_SCHEMES = frozenset({
    "", "file", "databricks", "databricks-uc", "uc", "http", "https", "postgresql", "mysql", "sqlite", "mssql",
})


@dataclass(frozen=True)
class MlflowTarget:
    """The resolved store, experiment and (when a run is active) the run ours nests under."""

    tracking_uri: str
    experiment: str
    parent_run_id: str | None = None


def tracking_schemes() -> frozenset[str]:
    """Every tracking URI scheme the installed MLflow accepts, without importing MLflow."""
    plugins = {ep.name for ep in entry_points(group="mlflow.tracking_store")}
    return BUILTIN_SCHEMES | plugins


def uri_scheme(uri: str) -> str:
    """The registry key MLflow picks a store by (`mlflow.utils.uri.get_uri_scheme`): `sqlite`,
    `postgresql` for `postgresql+psycopg2://`, `""` for a plain path (a Windows drive too)."""
    if uri in ("databricks", "databricks-uc", "uc"):
        return uri
    scheme = urlparse(uri).scheme.lower()
    base = scheme.split("+", 1)[0]
    if base in ("postgresql", "mysql", "sqlite", "mssql"):
        return base
    return "" if len(scheme) == 1 and scheme.isalpha() else scheme


def check_tracking_uri(uri: str, flag: str = "--mlflow-tracking-uri") -> None:
    """Refuse a tracking URI MLflow cannot open (unknown scheme, SQLite file in no directory),
    with one line, before any model call: a run must never end with its MLflow record lost."""
    shown = redact_uri(uri)
    if not uri.strip():
        raise UsageError(f"{flag}: empty tracking URI")
    scheme = uri_scheme(uri)
    if scheme not in tracking_schemes():
        known = ", ".join(sorted(s for s in tracking_schemes() if s))
        raise UsageError(f"{flag} {shown}: MLflow has no tracking store for scheme {scheme!r} (known: {known})")
    if scheme.startswith("sqlite"):
        path = uri.split("://", 1)[1].removeprefix("/")
        if path and path != ":memory:":
            parent = Path(path).parent
            if not parent.is_dir():
                raise UsageError(f"{flag} {shown}: directory {parent} does not exist")
            if not os.access(parent, os.W_OK):
                raise UsageError(f"{flag} {shown}: directory {parent} is not writable")


@dataclass(frozen=True)
class _UserState:
    """What the user's process chose through MLflow's own API (all None when MLflow is not imported)."""

    set_uri: str | None = None  # set by mlflow.set_tracking_uri or $MLFLOW_TRACKING_URI
    mlflow_uri: str | None = None  # the store MLflow's fluent API uses (set, or its default)
    experiment_id: str | None = None  # the active run's, or mlflow.set_experiment's
    run_id: str | None = None  # the run active in this thread


def check_cli_tracking(flag_value: str | None, enabled: bool = True) -> None:
    """The CLI's up-front check of the store it will record to (`--mlflow-tracking-uri`, else
    `$MLFLOW_TRACKING_URI`): exit 2 before any model call, not a run without its MLflow record."""
    if not enabled:
        return
    if flag_value is not None:
        check_tracking_uri(flag_value)
    elif os.environ.get("MLFLOW_TRACKING_URI"):
        check_tracking_uri(os.environ["MLFLOW_TRACKING_URI"], "$MLFLOW_TRACKING_URI")


def _mlflow_state() -> _UserState:
    if "mlflow" not in sys.modules:
        return _UserState()
    import mlflow
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils

    uri = mlflow.get_tracking_uri()
    set_uri = uri if utils.is_tracking_uri_set() else None
    active = mlflow.active_run()
    if active is not None:
        return _UserState(set_uri or uri, uri, active.info.experiment_id, active.info.run_id)
    return _UserState(set_uri, uri, fluent._active_experiment_id)  # mlflow.set_experiment in this process


def _experiment_name(uri: str | None, experiment_id: str) -> str | None:
    """The name of experiment `experiment_id` in the user's store (they opened it already), or None."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient(tracking_uri=uri).get_experiment(experiment_id).name
    except MlflowException:
        return None


def resolve_uri(tracking_uri: str | None, default_uri: str) -> str:
    """Explicit first; else the store MLflow itself would use, when the user chose one (in this
    process, or `$MLFLOW_TRACKING_URI`; an active run's store); else `default_uri`. A URI the user
    chose is checked (`check_tracking_uri`) before anything runs."""
    uri = tracking_uri or _mlflow_state().set_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_uri
    if uri != default_uri:
        check_tracking_uri(uri, "MLflow tracking URI" if tracking_uri is None else "tracking_uri")
    return uri


def resolve_target(tracking_uri: str, experiment: str | None) -> MlflowTarget:
    """The experiment for a store already resolved (`resolve_uri`): explicit; else the active run's
    or `mlflow.set_experiment`'s; else `$MLFLOW_EXPERIMENT_NAME` / `_ID`; else `reflex`. A run
    active in this thread, in this store and experiment, becomes our parent run."""
    state = _mlflow_state()
    parent = state.run_id if tracking_uri == state.mlflow_uri else None  # the active run must be in our store
    active_name = _experiment_name(state.mlflow_uri, state.experiment_id) if state.experiment_id else None
    if experiment:
        name = experiment
    elif active_name is not None:
        name = active_name
    elif os.environ.get("MLFLOW_EXPERIMENT_NAME"):
        name = os.environ["MLFLOW_EXPERIMENT_NAME"]
    elif os.environ.get("MLFLOW_EXPERIMENT_ID"):
        # mlflow.set_experiment exports this for child processes, so it may name an experiment of
        # another store: then it is not the user's choice for this one.
        name = _experiment_name(tracking_uri, os.environ["MLFLOW_EXPERIMENT_ID"]) or DEFAULT_EXPERIMENT
    else:
        name = DEFAULT_EXPERIMENT
    if name != active_name:
        parent = None  # MLflow nests runs within one experiment only
    return MlflowTarget(tracking_uri, name, parent)


def local_artifact_root(tracking_uri: str) -> Path | None:
    """`<db dir>/mlartifacts` for a SQLite store (no server decides there), else None: a tracking
    server's own artifact root or proxy (`--serve-artifacts`) is used, so everyone can read them."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    return None


@contextlib.contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite store while it is created or migrated: two runs
    starting at once into a new run directory would otherwise both create the schema, and one
    of them fail ("duplicate column name")."""
    if fcntl is None or not tracking_uri.startswith("sqlite:///"):
        yield
        return
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
