"""What a run looks like in MLflow's UI: an iteration's files, the run's description, its dataset.

Every iteration file has an extension MLflow previews as text (`.md`, `.txt`, `.json`): the diff
is `diff.txt` (a `.patch` gets no preview), and it compares each predictor's prompt as the prompt
file shows it, demos included, so a few-shot iteration's diff shows the demos it changed; the
demos are also `demos/<predictor>.md`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reflex_dspy.candidate import PredictorState
from reflex_dspy.tracking.files import dumps

if TYPE_CHECKING:
    from mlflow.entities import DatasetInput

    from reflex_dspy.result import IterationRecord, RunResult


def safe_name(name: str) -> str:
    return re.sub(r"[^\w\-.]", "_", name) or "_"


def _states(candidate: dict[str, Any]) -> dict[str, PredictorState]:
    predictors = candidate.get("predictors", candidate) if candidate else {}
    return {name: PredictorState.from_dict(data) for name, data in predictors.items()
            if isinstance(data, dict) and "instructions" in data}


def prompt_diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    """A unified diff of every predictor's rendered prompt (instructions, then demos)."""
    old_states, new_states = _states(before), _states(after)
    lines: list[str] = []
    for name in sorted(old_states.keys() | new_states.keys()):
        old, new = ([] if s is None else f"{s.render()}\n".splitlines(True)
                    for s in (old_states.get(name), new_states.get(name)))
        lines.extend(difflib.unified_diff(old, new, f"a/{name}", f"b/{name}"))
    return "".join(lines)


def demos_markdown(state: PredictorState) -> str:
    """The demos of one predictor, one section each, fields as `**name**: value`."""
    parts = [f"## Demo {i}\n\n" + "\n".join(f"**{k}**: {v}" for k, v in demo.items())
             for i, demo in enumerate(state.demos, 1)]
    return "\n\n".join(parts) + "\n"


def child_files(record: IterationRecord, previous: dict[str, Any]) -> dict[str, str]:
    """`{relative path: text}` of one iteration's child run."""
    files = {f"prompts/{safe_name(n)}.md": text for n, text in record.system_prompt.items()}
    for name, state in _states(record.candidate).items():
        if state.demos:
            files[f"demos/{safe_name(name)}.md"] = demos_markdown(state)
    files["reasoning.md"], files["change_summary.txt"] = record.reasoning, record.change_summary
    files["diff.txt"] = prompt_diff(previous, record.candidate)
    files["iteration.json"] = dumps(record.to_dict())
    return files


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def description(info: dict[str, Any], result: RunResult | None = None) -> str:
    """The run's description in MLflow's UI: task, strategy, models, and (at the end) the result line."""
    config = info.get("config") or {}
    meta = info.get("metadata") or {}
    task = meta.get("dataset_path") or "a DSPy program"
    models = info.get("models") or {}
    lines = [f"reflex run {info.get('run_id')}: optimize the prompt for {task} with strategy "
             f"`{config.get('strategy')}` (task model {models.get('task')}, reasoning model {models.get('reasoning')})."]
    if result is not None:
        gain = result.improvement
        lines.append(f"Held-out test {_score(result.baseline.mean)} -> {_score(result.final.mean)} "
                     f"({'n/a' if gain is None else f'{gain:+.4f}'}), iteration {result.selected_iteration} "
                     f"selected on {result.selected_by}; {result.significance.describe()}; "
                     f"stopped: {result.stop_reason}.")
    return "\n\n".join(lines)


def dataset_input(info: dict[str, Any], source_name: str = "python") -> DatasetInput | None:
    """The run's examples as an MLflow dataset input: the dataset file (path, digest of its bytes,
    rows) when the run names one (the CLI), else the examples given to `compile` (digest of their
    ids, split sizes), so MLflow's Dataset column is never empty."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    path = (info.get("metadata") or {}).get("dataset_path")
    sizes = info.get("split_sizes") or {}
    if path and Path(path).is_file():
        data = Path(path).read_bytes()
        rows = sum(1 for line in data.splitlines() if line.strip()) if path.endswith(".jsonl") else None
        dataset = Dataset(
            name=Path(path).name, digest=hashlib.sha256(data).hexdigest()[:8], source_type="local",
            source=json.dumps({"uri": Path(path).resolve().as_uri()}),
            profile=json.dumps({"num_rows": rows, "bytes": len(data), **sizes}),
        )
    elif info.get("split_ids"):
        ids = json.dumps(info["split_ids"], sort_keys=True).encode()
        dataset = Dataset(name="trainset", digest=hashlib.sha256(ids).hexdigest()[:8], source_type="code",
                          source=json.dumps({"tags": {"mlflow.source.name": source_name}}),
                          profile=json.dumps({"num_rows": sum(sizes.values()), **sizes}))
    else:
        return None
    return DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "optimization")])
