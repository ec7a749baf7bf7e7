"""The target score: from an aevyra-verdict results file, from benchmarking models, or by hand.

"Make my model at least as good as X" needs X's score on the same task. Precedence, highest
first: an explicit threshold (`manual`), a results file (`verdict_json`), models benchmarked
here (`verdict_run`), else the default 0.85 (no target model).

The results file is what `aevyra-verdict run data.jsonl -m A -m B --metric exact -o results.json`
writes: `metrics` lists the metric names and each model's score for metric M is `M_mean`:

    {"dataset": "data", "metrics": ["exact_match"],
     "models": {"openai/gpt-4o-mini": {"provider": "openai", "model": "gpt-4o-mini",
                "success_rate": 1.0, "exact_match_mean": 0.82, "exact_match_stdev": 0.38}},
     "per_sample": [...]}

The metric ranked is `metric=` (`--verdict-metric`), else the one matching the run's metric by
name (`exact` ↔ `exact_match`, `rouge` ↔ `rouge_*`, `judge` ↔ `llm_judge`), else the first
listed. The simpler shapes below are also accepted (scores in [0, 1]):

    {"models": {"openai/gpt-4o-mini": {"mean_score": 0.82}, "local/llama3": 0.61}}
    {"results": [{"model": "openai/gpt-4o-mini", "mean_score": 0.82}, ...]}
    [{"model": "openai/gpt-4o-mini", "score": 0.82}, ...]

The target is the best model that is not one of the run's own task models (the point is to
match another model); `--target` benchmarking writes its comparison in the same format.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reflex_dspy.data import read_json_file
from reflex_dspy.errors import ReflexError, UsageError

if TYPE_CHECKING:
    import dspy

    from reflex_dspy.config import OptimizerConfig

SCORE_KEYS = ("mean_score", "mean", "score")
SHAPE_HINT = ('aevyra-verdict\'s {"metrics": [M], "models": {"MODEL": {"M_mean": 0.8}}}, '
              '{"models": {"MODEL": {"mean_score": 0.8}}} or [{"model": "MODEL", "score": 0.8}]')
METRIC_ALIASES = {"exact": "exact_match", "judge": "llm_judge"}  # our metric name → aevyra-verdict's


@dataclass(frozen=True)
class Target:
    """The model whose score is the threshold, how it was obtained, and every model's score."""

    model: str
    score: float
    source: str  # "verdict_json" | "verdict_run"
    scores: dict[str, float]
    metric: str | None = None  # the results' metric ranked (None for the simple shapes)
    success_rates: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # worth saying: the run's own model scored best, a model had errors
    usage: dict[str, int] = field(default_factory=dict)  # what benchmarking cost (outside the run's budget)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def apply(self, config: OptimizerConfig) -> OptimizerConfig:
        """`config` with this target's score as the threshold, and where it came from."""
        return config.model_copy(update={
            "score_threshold": self.score, "target_model": self.model, "target_source": self.source,
            "target_metric": self.metric,
        })


@dataclass(frozen=True)
class VerdictResults:
    """Model → score for one metric, with each model's success rate when the file records it."""

    scores: dict[str, float]
    metric: str | None
    success_rates: dict[str, float]


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


def pick_metric(available: Sequence[str], wanted: str | None, run_metrics: Sequence[str] = ()) -> str:
    """`wanted` if listed; else the listed metric matching one of the run's by name; else the first."""
    if wanted is not None:
        if wanted not in available:
            raise UsageError(f"--verdict-metric {wanted}: not in the results (metrics: {', '.join(available)})")
        return wanted
    for ours in run_metrics:
        name = METRIC_ALIASES.get(ours, ours)
        for theirs in available:
            if theirs in (ours, name) or theirs.startswith(f"{name}_"):
                return theirs
    return available[0]


def _verdict_format(data: Mapping[str, Any], path: Path, metric: str | None,
                    run_metrics: Sequence[str]) -> VerdictResults:
    """aevyra-verdict's own results file: `metrics`, and `M_mean` per model."""
    metrics = data["metrics"]
    if not metrics or not all(isinstance(m, str) and m for m in metrics):
        raise UsageError(f"{path}: metrics: expected a list of metric names, got {metrics!r}")
    chosen = pick_metric(metrics, metric, run_metrics)
    scores, rates = {}, {}
    for label, entry in data["models"].items():
        where = f"{path}: models.{label}"
        if not isinstance(entry, Mapping):
            raise UsageError(f"{where}: expected an object with {chosen}_mean")
        if f"{chosen}_mean" not in entry:
            raise UsageError(f"{where}: no {chosen}_mean (the file lists metrics {', '.join(metrics)})")
        if entry[f"{chosen}_mean"] is None:  # every sample of that model failed: it has no score
            continue
        scores[str(label)] = _score(entry[f"{chosen}_mean"], f"{where}.{chosen}_mean")
        rate = entry.get("success_rate")
        if isinstance(rate, int | float) and not isinstance(rate, bool):
            rates[str(label)] = float(rate)
    return VerdictResults(scores, chosen, rates)


def read_verdict(path: str | Path, metric: str | None = None, run_metrics: Sequence[str] = ()) -> VerdictResults:
    """A results file (aevyra-verdict's or a documented simple shape); a wrong shape is one line."""
    path = Path(path)
    data = read_json_file(path, "results")
    if isinstance(data, Mapping) and isinstance(data.get("metrics"), list) and isinstance(data.get("models"), Mapping):
        found = _verdict_format(data, path, metric, run_metrics)
    else:
        if metric is not None:
            raise UsageError(f"--verdict-metric {metric}: {path} names no metrics (not an aevyra-verdict file)")
        if isinstance(data, list):
            scores = _entries(data, path, "")
        elif isinstance(data, Mapping) and isinstance(data.get("models"), Mapping):
            scores = {str(m): _score(v, f"{path}: models.{m}") for m, v in data["models"].items()}
        elif isinstance(data, Mapping) and isinstance(data.get("results"), list):
            scores = _entries(data["results"], path, "results")
        else:
            raise UsageError(f"{path}: not a verdict results file; expected {SHAPE_HINT}")
        found = VerdictResults(scores, None, {})
    if not found.scores:
        raise UsageError(f"{path}: the results file lists no models")
    return found


def load_verdict_results(path: str | Path, metric: str | None = None) -> dict[str, float]:
    """Model → score from a results file (see `read_verdict`)."""
    return read_verdict(path, metric).scores


def best_target(scores: Mapping[str, float], source: str, *, own: Sequence[str] = (), metric: str | None = None,
                success_rates: Mapping[str, float] | None = None) -> Target:
    """The highest-scoring model that is not one of the run's own (`own`); ties: the first listed."""
    others = {m: v for m, v in scores.items() if m not in set(own)}
    if not others:
        raise UsageError(f"no target: every model in the comparison is one of the run's own ({', '.join(scores)})")
    model = max(others, key=lambda m: others[m])
    notes = []
    leader = max(scores, key=lambda m: scores[m])
    if leader != model and scores[leader] > others[model]:
        notes.append(f"your own model {leader} scores best ({scores[leader]:.4f}); "
                     f"the target is the best other model, {model} ({others[model]:.4f})")
    rates = dict(success_rates or {})
    notes += [f"{m} answered {rate:.1%} of the samples (its score is over those)"
              for m, rate in rates.items() if rate < 1.0]
    return Target(model=model, score=others[model], source=source, scores=dict(scores), metric=metric,
                  success_rates=rates, notes=tuple(notes))


def target_from_verdict(path: str | Path, *, metric: str | None = None, run_metrics: Sequence[str] = (),
                        own: Sequence[str] = ()) -> Target:
    """The target of an aevyra-verdict results file: the best model other than the run's own."""
    found = read_verdict(path, metric, run_metrics)
    return best_target(found.scores, "verdict_json", own=own, metric=found.metric,
                       success_rates=found.success_rates)


def verdict_document(target: Target, dataset: str) -> dict[str, Any]:
    """`--target` benchmarking's comparison in aevyra-verdict's results format (no per-sample rows)."""
    name = target.metric or "score"
    models = {}
    for label, score in target.scores.items():
        provider, _, model = label.rpartition("/")
        models[label] = {"provider": provider, "model": model or label,
                         "success_rate": round(target.success_rates.get(label, 1.0), 3),
                         f"{name}_mean": round(score, 4)}
    return {"dataset": dataset, "metrics": [name], "models": models, "per_sample": []}


def benchmark_models(
    student: dspy.Module,
    examples: Sequence[dspy.Example],
    metric: Callable,
    models: Mapping[str, dspy.LM],
    *,
    max_workers: int = 4,
    temperature: float = 0.0,
    on_progress: Callable[[str, int, int], None] | None = None,
    success_rates: dict[str, float] | None = None,
    usage: dict[str, int] | None = None,
) -> dict[str, float]:
    """Each model's mean score running `student` as it is on `examples` (failed examples excluded).

    `success_rates`, when given, is filled with each model's share of examples answered; `usage`
    with what it cost (`metric_calls`, `lm_calls`, `eval_tokens`), which no run's budget counts.

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
        for key in ("metric_calls", "lm_calls", "eval_tokens") if usage is not None else ():
            usage[key] = usage.get(key, 0) + getattr(evaluator.usage, key)
        if success_rates is not None:
            success_rates[label] = 1.0 - len(result.failed_ids) / max(len(examples), 1)
    return scores
