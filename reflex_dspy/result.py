"""Records of a run: measurements, iterations and the final result with its summary text.

Every number in `RunResult.summary()` is read from these records, which are filled from
measurements only: nothing here computes a score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from reflex_dspy.stats import Significance


@dataclass
class Measurement:
    """A candidate measured on one split, possibly over several passes (`eval_runs`)."""

    split: str
    mean: float | None
    std: float
    n_runs: int
    n: int
    n_failed: int
    scores: dict[str, float]
    scores_by_metric: dict[str, float] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> str:
        if self.mean is None:
            return f"n/a (all {self.n} {self.split} examples failed)"
        text = f"{self.mean:.4f}"
        if self.n_runs > 1:
            text += f" ± {self.std:.4f} ({self.n_runs} runs)"
        text += f" (on {self.n}-sample {self.split} set"
        if self.n_failed:
            text += f", {self.n_failed} failed and excluded"
        return text + ")"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IterationRecord:
    """One iteration as recorded in the audit trail (SPEC §9 iteration fields)."""

    iteration: int
    phase: str
    strategy: str
    score: float | None
    val_score: float | None
    delta: float | None
    scores_by_metric: dict[str, float]
    system_prompt: dict[str, str]
    candidate: dict[str, Any]
    fingerprint: str
    reasoning: str
    change_summary: str
    predictor: str | None
    eval_tokens: int
    reasoning_tokens: int
    metric_calls: int
    elapsed_seconds: float
    timestamp: str
    is_full_eval: bool
    batch_size: int
    n_failed: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_tokens(n: int | None) -> str:
    """12345 → "12.3K": token counts as people read them."""
    n = n or 0
    for unit, size in (("M", 1_000_000), ("K", 1_000)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _trajectory(values: list[float | None]) -> str:
    return " → ".join("n/a" if v is None else f"{v:.3f}" for v in values)


@dataclass
class RunResult:
    """The outcome of one `compile`: what was selected, how it did on test, and what it cost."""

    strategy: str
    split_sizes: dict[str, int]
    held_out: bool
    baseline: Measurement
    final: Measurement
    significance: Significance
    selected_iteration: int
    selected_by: str
    selected_score: float | None
    best_prompt: str
    candidate: dict[str, Any]
    iterations: list[IterationRecord]
    initial_val_score: float | None
    stop_reason: str
    usage: dict[str, int]
    duration_seconds: float
    score_threshold: float
    models: dict[str, str]
    warnings: list[str] = field(default_factory=list)
    run_id: str | None = None  # the reflex run directory's id, when the run was recorded

    @property
    def improvement(self) -> float | None:
        if self.baseline.mean is None or self.final.mean is None:
            return None
        return self.final.mean - self.baseline.mean

    @property
    def early_stopped(self) -> bool:
        return self.stop_reason.startswith("early stopping")

    def summary(self) -> str:
        sizes = self.split_sizes
        lines = [
            f"Strategy       : {self.strategy} ({_plural(len(self.iterations), 'iteration')}; "
            f"stopped: {self.stop_reason})",
            f"Train/val/test : {sizes['train']} / {sizes['val']} / {sizes['test']} samples"
            + ("" if self.held_out else "  (no held-out split: test = train)"),
            f"Baseline score : {self.baseline.describe()}",
            f"Final score    : {self.final.describe()}",
        ]
        if (delta := self.improvement) is not None:
            rel = f" ({delta / self.baseline.mean * 100:+.1f}%)" if self.baseline.mean else ""
            lines.append(f"Improvement    : {delta:+.4f}{rel}")
        lines.append(f"Significance   : {self.significance.describe()}")
        chosen = "the initial prompt" if self.selected_iteration == 0 else f"iteration {self.selected_iteration}"
        score = "n/a" if self.selected_score is None else f"{self.selected_score:.4f}"
        lines.append(f"Selected       : {chosen} (best on {self.selected_by}: {score})")
        lines.append(f"Iterations     : {len(self.iterations)}")
        if self.iterations:
            lines.append(f"Train traj     : {_trajectory([r.score for r in self.iterations])}")
            if sizes["val"]:
                vals = [self.initial_val_score, *(r.val_score for r in self.iterations)]
                lines.append(f"Val traj       : {_trajectory(vals)}  (first = the starting prompt)")
        lines.append(f"Early stopped  : {'Yes (val score plateaued)' if self.early_stopped else 'No'}")
        u = self.usage
        lines.append(
            f"LM usage       : eval {u['lm_calls']} calls / {format_tokens(u['eval_tokens'])} tokens, "
            f"reasoning {u['reasoning_calls']} calls / {format_tokens(u['reasoning_tokens'])} tokens"
        )
        lines.append(
            f"Metric calls   : {u['metric_calls']} evaluated, {u['cache_hits']} reused from the run cache, "
            f"{u['failed']} failed, {u['retries']} retries"
        )
        lines.append(f"Duration       : {self.duration_seconds:.1f}s")
        lines.extend(f"Warning        : {w}" for w in self.warnings)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["significance"] = asdict(self.significance)
        data["improvement"] = self.improvement
        data["early_stopped"] = self.early_stopped
        return data
