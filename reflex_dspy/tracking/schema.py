"""The run layout's field names: aevyra-reflex 0.2.0's, plus ours.

Users of aevyra-reflex read `.reflex/runs` with its `RunStore`, its dashboard and their own
scripts (`config["optimizer_config"]["strategy"]`, `result["best_score"]`, an iteration's
`system_prompt` text...). The engine's events keep the engine's names; this module is the one
place they become file fields, and the one place files in the older reflex_dspy layout (before
the shared names) are read back under the shared names, so every reader sees one shape.

Both writers (`layout.py` and `mlflow_tracker.py`) build the files here, which is what keeps an
export from MLflow byte-for-byte equal to the live layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from reflex_dspy.errors import UsageError

# config.json: engine info key → shared name (the rest of `info` is kept under its own name)
_META_MOVED = ("dataset_path", "prompt_path")  # metadata fields aevyra-reflex keeps at the top level
# metadata fields that repeat `optimizer_config` (task_models is kept only as `null`: the CLI's default model)
_META_DUPLICATES = ("task_model", "reasoning_model", "reasoning_base_url", "metric")
# checkpoint.json: in-memory state key → shared name
_CHECKPOINT_NAMES = {
    "iteration": "completed_iterations",
    "elapsed_seconds": "accumulated_duration_seconds",
    "updated": "timestamp",
    "best_val": "best_val_score",
}
TARGET_COMPARISON = "verdict_results.json"  # `--target` benchmarking, in aevyra-verdict's format
STAMP = "%Y-%m-%dT%H-%M-%S"  # the run directory's time stamp, which aevyra-reflex also uses in config.json


def render_prompts(prompts: Mapping[str, str]) -> str:
    """One predictor's instructions, or each under a `## name` heading, in name order.

    The text an aevyra-reflex reader expects in `system_prompt`; the per-predictor state stays
    in the iteration's `candidate`.
    """
    if len(prompts) == 1:
        return next(iter(prompts.values()))
    return "\n\n".join(f"## {name}\n\n{text}" for name, text in sorted(prompts.items()))


def task_models(info: Mapping[str, Any]) -> list[str]:
    """The task model names (`_cli_models`): the CLI's list, else the engine's description."""
    meta = info.get("metadata") or {}
    if meta.get("task_models"):
        return list(meta["task_models"])
    if meta.get("task_model"):
        return [meta["task_model"]]
    task = (info.get("models") or {}).get("task")
    return [m for m in str(task).split(", ") if m] if task else []


def _stamp(info: Mapping[str, Any]) -> str | None:
    name = str(info.get("run_name") or "")
    if "_" in name:
        return name.split("_", 1)[1]
    created = info.get("created")
    try:
        return datetime.fromisoformat(created).astimezone(UTC).strftime(STAMP) if created else None
    except (TypeError, ValueError):
        return str(created)


def config_document(info: Mapping[str, Any]) -> dict[str, Any]:
    """config.json from the engine's run description (or an older config.json: same keys).

    `optimizer_config` holds the search settings with the metric names, the task models
    (`_cli_models`) and the reasoning model; `dataset_path`, `prompt_path`, `timestamp` and
    `initial_prompt` are top-level, as aevyra-reflex writes them.
    """
    if "optimizer_config" in info:
        return dict(info)
    data = dict(info)
    meta = dict(data.pop("metadata", None) or {})
    config = dict(data.pop("config", None) or {})
    models = data.pop("models", None) or {}
    config["metrics"] = list(data.pop("metrics", None) or [])
    config["_cli_models"] = task_models({**info, "metadata": meta})
    lifted = not config.get("reasoning_model") and bool(models.get("reasoning"))
    if lifted:
        config["reasoning_model"] = models["reasoning"]
    data.pop("created", None)
    if meta.pop("target_comparison", None) is not None:  # written beside config.json (layout.py)
        data["target_comparison"] = TARGET_COMPARISON
    lineage = meta.pop("branched_from", None)  # a branch of a run aevyra-reflex wrote (cli/runs.py)
    if lineage and not data.get("branched_from"):
        data["branched_from"] = lineage
    doc: dict[str, Any] = {"run_id": data.pop("run_id", None), "timestamp": _stamp(info)}
    for key in _META_MOVED:
        value = meta.pop(key, None)
        if value:
            doc[key] = value
    for key in _META_DUPLICATES:
        if key == "reasoning_model" and lifted and key in meta and meta[key] is None:
            continue  # kept as `null`: the CLI set none (the task model reasons), so a resume sets none
        meta.pop(key, None)
    if meta.get("task_models"):
        del meta["task_models"]
    doc["initial_prompt"] = data.pop("initial_prompt", None)
    doc["optimizer_config"] = config
    doc.update(data)
    doc["metadata"] = meta
    return doc


def checkpoint_document(state: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """checkpoint.json from the engine's resumable state.

    `context` holds what the state does not: `run_id`, `initial_prompt`, and the last
    iteration's prompt and reasoning (`current_prompt`, `previous_reasoning`).
    """
    data = dict(state)
    best = data.pop("best", None) or {}
    trajectories = data.pop("trajectories", None) or {}
    doc: dict[str, Any] = {
        "run_id": context.get("run_id"),
        "initial_prompt": context.get("initial_prompt"),
        "current_prompt": context.get("current_prompt") or context.get("initial_prompt"),
        "completed_iterations": data.pop("iteration", 0),
        "best_prompt": best.get("prompt"),
        "best_score": best.get("score"),
        "best_iteration": best.get("iteration"),
        "best_by": best.get("by"),
        "score_trajectory": trajectories.get("train", []),
        "val_trajectory": trajectories.get("val", []),
        "previous_reasoning": context.get("previous_reasoning") or "",
    }
    for key, value in data.items():
        doc[_CHECKPOINT_NAMES.get(key, key)] = value
    return doc


def checkpoint_state(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The engine's resumable state from a checkpoint.json (either layout)."""
    if "completed_iterations" not in doc:
        return dict(doc)  # the older layout kept the engine's names
    data = dict(doc)
    state: dict[str, Any] = {
        "best": {"iteration": data.pop("best_iteration", None), "score": data.pop("best_score", None),
                 "by": data.pop("best_by", None), "prompt": data.pop("best_prompt", None)},
        "trajectories": {"train": data.pop("score_trajectory", []), "val": data.pop("val_trajectory", [])},
    }
    for key in ("run_id", "initial_prompt", "current_prompt", "previous_reasoning"):
        data.pop(key, None)
    shared = {v: k for k, v in _CHECKPOINT_NAMES.items()}
    state.update({shared.get(k, k): v for k, v in data.items()})
    return state


def upgrade_checkpoint(doc: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """A checkpoint.json of the older layout under the shared names (newer files as they are)."""
    if "completed_iterations" in doc:
        return dict(doc)
    best = (doc.get("best") or {}).get("prompt")
    return checkpoint_document(doc, {"run_id": run_id, "current_prompt": best})


CHECKPOINT_VERSION = 2  # 1: no `version` field (either the older engine names or the shared ones)


@dataclass
class Checkpoint:
    """Everything a resume needs, as the lifecycle saves it after the start, each iteration and
    the end of the search. The one definition of the checkpoint: the lifecycle builds it, trackers
    receive `to_state()` (the engine's names), the files hold `document()` (aevyra-reflex's names
    plus ours) and a resume reads `from_document()`, which also takes version-1 files.

    `evaluator` is whatever `Evaluator.state_dict()` returned (usage totals, journal position):
    it is stored flat in the file, so every key no other field claims belongs to it.
    """

    iteration: int
    strategy: str
    strategy_state: dict[str, Any] | None
    rng_state: list[Any] | None = None
    stop_reason: str | None = None
    initial_val: float | None = None
    best_val: float | None = None
    stale: int = 0
    best: dict[str, Any] = field(default_factory=dict)  # iteration, score, by, prompt
    trajectories: dict[str, list[Any]] = field(default_factory=lambda: {"train": [], "val": []})
    evaluator: dict[str, Any] = field(default_factory=dict)
    elapsed_seconds: float = 0.0
    updated: str | None = None
    version: int = CHECKPOINT_VERSION

    @property
    def search_done(self) -> bool:
        return self.stop_reason is not None

    def to_state(self) -> dict[str, Any]:
        """The engine's names, as `Tracker.on_checkpoint` receives them."""
        # Shallow: the lifecycle builds every field fresh for this checkpoint (the strategy's state
        # as a JSON round trip); `asdict`'s deep copy was ~15% of a 16-worker PDO run's main thread.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        evaluator = data.pop("evaluator")
        return {"version": data.pop("version"), "iteration": data.pop("iteration"),
                "search_done": self.search_done, **data, **evaluator}

    def document(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """checkpoint.json (`context` as in `checkpoint_document`)."""
        return checkpoint_document(self.to_state(), context)

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Checkpoint:
        """From the engine's names (`to_state()`, or a version-1 file read by `checkpoint_state`)."""
        data = dict(state)
        data.pop("search_done", None)  # derived from stop_reason
        data["version"] = CHECKPOINT_VERSION  # read in the current shape: it is written back as such
        known = {f for f in cls.__dataclass_fields__ if f != "evaluator"}
        fields = {k: data.pop(k) for k in list(data) if k in known}
        fields["best"] = fields.get("best") or {}
        fields["trajectories"] = fields.get("trajectories") or {"train": [], "val": []}
        return cls(**{"iteration": 0, "strategy": "", "strategy_state": None, **fields}, evaluator=data)

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], where: str = "checkpoint.json") -> Checkpoint:
        """A checkpoint.json of any version this code knows (1: unversioned, either layout; 2)."""
        version = doc.get("version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= CHECKPOINT_VERSION:
            raise UsageError(f"{where}: version {version!r} is not one this reflex_dspy reads (1 to {CHECKPOINT_VERSION})")
        return cls.from_state(checkpoint_state(doc))


def measurement_document(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """baseline.json / result's `final`: `mean_score` and `std_score`, as aevyra-reflex names them."""
    if data is None or "mean_score" in data:
        return None if data is None else dict(data)
    renamed = {"mean": "mean_score", "std": "std_score"}
    return {renamed.get(k, k): v for k, v in data.items()}


def upgrade_result(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A result.json of the older layout under the shared names (newer files as they are)."""
    data = dict(doc)
    if "selected_score" in data and "best_score" not in data:
        data["best_score"] = data.pop("selected_score")
    for key in ("baseline", "final"):
        if isinstance(data.get(key), Mapping):
            data[key] = measurement_document(data[key])
    return data


class FileContext:
    """What checkpoint.json needs beyond the engine's state, gathered from the run's events.

    Each writer keeps one, so the live layout and MLflow's copy are built from the same facts.
    """

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}

    def start(self, info: Mapping[str, Any], records: list[Any] = ()) -> None:
        """A new or resumed run: its id, initial prompt and the iterations already recorded."""
        self.fields = {"run_id": info.get("run_id"), "initial_prompt": info.get("initial_prompt")}
        for record in records:
            self.iteration(record)

    def iteration(self, record: Any) -> None:
        self.fields["current_prompt"] = render_prompts(record.system_prompt)
        self.fields["previous_reasoning"] = record.reasoning or ""

    def checkpoint(self, state: Mapping[str, Any]) -> dict[str, Any]:
        return checkpoint_document(state, self.fields)
