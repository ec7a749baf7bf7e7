"""The target score: from a verdict-style results file, from benchmarking models, or by hand.

"Make my model at least as good as X" needs X's score on the same task. Precedence, highest
first: an explicit threshold (`manual`), a results file (`verdict_json`), models benchmarked
here (`verdict_run`), else the default 0.85 (no target model).

Accepted results-file shapes (scores in [0, 1]; the best model's score becomes the threshold):

    {"models": {"openai/gpt-4o-mini": {"mean_score": 0.82}, "local/llama3": 0.61}}
    {"results": [{"model": "openai/gpt-4o-mini", "mean_score": 0.82}, ...]}
    [{"model": "openai/gpt-4o-mini", "score": 0.82}, ...]

A model's entry is a number or an object with one of `mean_score`, `mean`, `score`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reflex_dspy.data import read_json_file
from reflex_dspy.errors import ReflexError, UsageError

if TYPE_CHECKING:
    import dspy

    from reflex_dspy.config import OptimizerConfig

SCORE_KEYS = ("mean_score", "mean", "score")
SHAPE_HINT = '{"models": {"MODEL": {"mean_score": 0.8}}} or [{"model": "MODEL", "score": 0.8}]'


@dataclass(frozen=True)
class Target:
    """The model whose score is the threshold, how it was obtained, and every model's score."""

    model: str
    score: float
    source: str  # "verdict_json" | "verdict_run"
    scores: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def apply(self, config: OptimizerConfig) -> OptimizerConfig:
        """`config` with this target's score as the threshold, and where it came from."""
        return config.model_copy(update={
            "score_threshold": self.score, "target_model": self.model, "target_source": self.source,
        })


def _score(value: Any, where: str) -> float:
    if isinstance(value, Mapping):
        key = next((k for k in SCORE_KEYS if k in value), None)
        if key is None:
            raise UsageError(f"{where}: no score (expected one of {', '.join(SCORE_KEYS)})")
        value, where = value[key], f"{where}.{key}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{where}: score must be a number, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"{where}: score {value} is outside [0, 1]")
    return float(value)


def _entries(rows: Sequence[Any], path: Path, key: str) -> dict[str, float]:
    scores = {}
    for i, row in enumerate(rows):
        where = f"{path}: {key}[{i}]"
        if not isinstance(row, Mapping) or not isinstance(row.get("model"), str) or not row["model"]:
            raise UsageError(f'{where}: expected an object with a "model" name and a score')
        scores[row["model"]] = _score(row, where)
    return scores


def load_verdict_results(path: str | Path) -> dict[str, float]:
    """Model → score from a verdict-style results JSON; a wrong shape is a one-line error."""
    path = Path(path)
    data = read_json_file(path, "results")
    if isinstance(data, list):
        scores = _entries(data, path, "")
    elif isinstance(data, Mapping) and isinstance(data.get("models"), Mapping):
        scores = {str(m): _score(v, f"{path}: models.{m}") for m, v in data["models"].items()}
    elif isinstance(data, Mapping) and isinstance(data.get("results"), list):
        scores = _entries(data["results"], path, "results")
    else:
        raise UsageError(f"{path}: not a verdict results file; expected {SHAPE_HINT}")
    if not scores:
        raise UsageError(f"{path}: the results file lists no models")
    return scores


def best_target(scores: Mapping[str, float], source: str) -> Target:
    """The highest-scoring model (ties: the first listed) is the target."""
    model = max(scores, key=lambda m: scores[m])
    return Target(model=model, score=scores[model], source=source, scores=dict(scores))


def target_from_verdict(path: str | Path) -> Target:
    return best_target(load_verdict_results(path), "verdict_json")


def benchmark_models(
    student: dspy.Module,
    examples: Sequence[dspy.Example],
    metric: Callable,
    models: Mapping[str, dspy.LM],
    *,
    max_workers: int = 4,
    temperature: float = 0.0,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, float]:
    """Each model's mean score running `student` as it is on `examples` (failed examples excluded).

    Callers pass the search examples (train + val), never the held-out test: the threshold
    steers the search, so it must not be learnt from test.
    """
    from reflex_dspy.candidate import Candidate
    from reflex_dspy.evaluation import Evaluator

    initial = Candidate.from_program(student)
    scores = {}
    for label, lm in models.items():
        evaluator = Evaluator(student, metric, task_lm=lm, max_workers=max_workers, temperature=temperature)
        evaluator.on_progress = on_progress
        result = evaluator.evaluate(initial, examples, budgeted=False, label=f"benchmark {label}")
        if result.mean is None:
            first = result.results[result.failed_ids[0]].error if result.failed_ids else "no examples"
            raise ReflexError(f"benchmarking {label}: every example failed ({first})")
        scores[label] = result.mean
    return scores
