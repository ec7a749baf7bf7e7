"""Where a run is recorded, and what an interrupted or parent run hands to a new process.

`Reflex` calls `open_record` once per compile: it allocates the run directory (or reopens one
to resume), builds the two writers of the record (the reflex layout and MLflow), and loads
what a resume or a branch starts from. Compatibility is checked before anything is written:
a resume or a branch on different data, config or metric would make the copied numbers lie.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from reflex_dspy.candidate import Candidate
from reflex_dspy.errors import UsageError
from reflex_dspy.result import IterationRecord, Measurement
from reflex_dspy.tracking.base import Tracker
from reflex_dspy.tracking.files import read_jsonl, write_json
from reflex_dspy.tracking.schema import Checkpoint, config_document
from reflex_dspy.tracking.store import JOURNAL, PID, Run, RunStore, default_run_dir, pid_sentinel


@dataclass
class Record:
    """The run being written, its writers, and what it continues from."""

    run: Run
    store: RunStore
    trackers: list[Tracker]
    tracking_uri: str | None
    resumed: bool = False
    checkpoint: Checkpoint | None = None
    baseline: Measurement | None = None
    records: list[IterationRecord] = field(default_factory=list)
    later: dict[int, IterationRecord] = field(default_factory=dict)  # written after the checkpoint
    journal: list[dict[str, Any]] = field(default_factory=list)
    inherited: list[dict[str, Any]] = field(default_factory=list)  # the parent's journal (branches)
    branched_from: dict[str, Any] | None = None
    branch_candidate: Candidate | None = None

    @property
    def experiment(self) -> str | None:
        """The MLflow experiment the run is recorded in, as its tracker resolved it (None: no MLflow)."""
        return next((t.experiment for t in self.trackers if type(t).__name__ == "MlflowTracker"), None)


def check_compatible(saved: dict[str, Any], info: dict[str, Any], what: str, *, config: bool = True) -> None:
    """Refuse to continue or branch a run on other data, metrics or (for resume) settings.

    `saved` is a config.json as `Run.load_config()` reads it (shared names). A config field the
    run did not record (added in a later version) is compatible when it has its default value.
    """
    from reflex_dspy.config import OptimizerConfig

    if "split_ids" not in saved:
        raise UsageError(f"{what}: that run was not recorded by reflex_dspy (no example ids in its config.json)")
    if saved.get("split_ids") != info["split_ids"]:
        raise UsageError(f"{what}: the dataset or its splits differ from that run's (example ids changed)")
    recorded = saved.get("optimizer_config") or {}
    if recorded.get("metrics") != info["metrics"]:
        raise UsageError(
            f"{what}: the metric differs from that run's ({recorded.get('metrics')} vs {info['metrics']})"
        )
    if config:
        fields = OptimizerConfig.model_fields
        old = {k: v for k, v in recorded.items() if k in fields}
        recording = config_document(info)["optimizer_config"]  # as it would be recorded (reasoning model named)
        new = {k: v for k, v in recording.items() if k in fields}
        for key in sorted(set(old) | set(new)):
            if key not in old and new.get(key) == fields[key].get_default(call_default_factory=True):
                continue
            if old.get(key) != new.get(key):
                raise UsageError(
                    f"{what}: config field {key} is {new.get(key)!r} but the run used {old.get(key)!r}; "
                    "resume with the run's settings"
                )


def _checked_run(store: RunStore, run: Run | str, what: str) -> Run:
    found = run if isinstance(run, Run) else store.get_run(run)
    status = found.status
    if what == "resume" and status == "completed":
        raise UsageError(f"run {found.run_id} is completed; nothing to resume")
    if status == "running":
        raise UsageError(f"run {found.run_id} is still running in another process")
    return found


def _claim(run: Run) -> None:
    """Take a created run's PID sentinel, atomically: of two processes starting it, one wins."""
    tmp = run.path / f".{PID}.{os.getpid()}.tmp"
    write_json(tmp, pid_sentinel())
    try:
        os.link(tmp, run.file(PID))
    except FileExistsError:
        raise UsageError(f"run {run.run_id} is being started by another process") from None
    except OSError:  # a file system without hard links: no race protection, still a valid sentinel
        write_json(run.file(PID), pid_sentinel())
    finally:
        tmp.unlink(missing_ok=True)


def _trackers(run: Run, store: RunStore, tracking_uri: str | None, experiment: str | None) -> list[Tracker]:
    from reflex_dspy.tracking.layout import LayoutTracker

    trackers: list[Tracker] = [LayoutTracker(run)]
    if tracking_uri:
        from reflex_dspy.tracking.mlflow_tracker import MlflowTracker

        trackers.append(MlflowTracker.for_run(tracking_uri, experiment))  # the user's experiment, nesting
    return trackers


def resolve_tracking_uri(store: RunStore, tracking_uri: str | None, use_mlflow: bool) -> str | None:
    if not use_mlflow:
        return None
    from reflex_dspy.tracking.mlflow_target import resolve_uri

    return resolve_uri(tracking_uri, store.tracking_uri)  # explicit, else MLflow's own choice, else ours


def open_record(
    info: dict[str, Any],
    *,
    run_dir: str | os.PathLike[str] | None,
    tracking_uri: str | None,
    experiment: str,
    use_mlflow: bool,
    resume: Run | str | None = None,
    branch_from: tuple[str, int] | None = None,
) -> Record:
    """Open the record of this compile; `info` is the run's description (checked, not written)."""
    if resume is not None and branch_from is not None:
        raise UsageError("resume= and branch_from= are mutually exclusive")
    store = RunStore(run_dir or default_run_dir())
    uri = resolve_tracking_uri(store, tracking_uri, use_mlflow)
    if resume is not None:
        run = _checked_run(store, resume, "resume")
        if run.status == "created":  # recorded by `optimize create` (cli/lifecycle_cmds.py): start it here
            _claim(run)
            return Record(run, store, _trackers(run, store, uri, experiment), uri)
        saved = run.load_config()
        check_compatible(saved, info, f"cannot resume run {run.run_id}")
        checkpoint = run.load_checkpoint()
        done = checkpoint["completed_iterations"] if checkpoint else 0
        files = run.load_iterations()
        baseline = run.load_baseline()
        record = Record(
            run, store, _trackers(run, store, uri, experiment), uri, resumed=True,
            checkpoint=Checkpoint.from_document(checkpoint, f"run {run.run_id}: checkpoint.json") if checkpoint else None,
            baseline=Measurement.from_dict(baseline) if baseline else None,
            records=[r for r in files if r.iteration <= done],
            later={r.iteration: r for r in files if r.iteration > done},
            journal=read_jsonl(run.file(JOURNAL)),
            branched_from=saved.get("branched_from"),
        )
        if record.branched_from:
            parent = store.get_run(record.branched_from["run_id"])
            record.inherited = read_jsonl(parent.file(JOURNAL))
            record.branch_candidate = Candidate.from_dict(saved["initial_candidate"])
        return record
    if branch_from is not None:
        return _open_branch(store, uri, experiment, info, branch_from)
    run = store.create_run()
    return Record(run, store, _trackers(run, store, uri, experiment), uri)


def _open_branch(store: RunStore, uri: str | None, experiment: str, info: dict[str, Any], branch_from) -> Record:
    try:
        parent_id, iteration = str(branch_from[0]), int(branch_from[1])
    except (TypeError, ValueError, IndexError):
        raise UsageError("branch_from must be (run_id, iteration), e.g. ('001', 3)") from None
    parent = _checked_run(store, parent_id, "branch")
    saved = parent.load_config()
    check_compatible(saved, info, f"cannot branch from run {parent.run_id}", config=False)
    baseline = parent.load_baseline()
    if baseline is None:
        raise UsageError(f"run {parent.run_id} has no baseline yet; nothing to branch from")
    if iteration == 0:
        candidate = Candidate.from_dict(saved["initial_candidate"])
    else:
        found = [r for r in parent.load_iterations() if r.iteration == iteration]
        if not found:
            raise UsageError(f"run {parent.run_id} has no iteration {iteration}")
        candidate = Candidate.from_dict(found[0].candidate)
    if sorted(candidate.predictors) != sorted(info["initial_candidate"]["predictors"]):
        raise UsageError(f"iteration {iteration} of run {parent.run_id} optimizes other predictors than this program")
    run = store.create_run()
    return Record(
        run, store, _trackers(run, store, uri, experiment), uri,
        baseline=Measurement.from_dict(baseline),
        inherited=read_jsonl(parent.file(JOURNAL)),
        branched_from={"run_id": parent.run_id, "iteration": iteration},
        branch_candidate=candidate,
    )
