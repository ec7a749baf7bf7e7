"""Records of a run: measurements, iterations and the final result with its summary text.

Every number in `RunResult.summary()` is read from these records, which are filled from
measurements only: nothing here computes a score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from reflex_dspy.retries import NO_ANSWER
from reflex_dspy.stats import Significance
from reflex_dspy.tracking.schema import measurement_document, render_prompts


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
    scores_by_model: dict[str, float] = field(default_factory=dict)  # with several task models
    no_answers: dict[str, int] = field(default_factory=dict)  # scored 0 for want of an answer, by reason

    def describe(self) -> str:
        if self.mean is None:
            return f"n/a (all {self.n} {self.split} examples failed)"
        text = f"{self.mean:.4f}"
        if self.n_runs > 1:
            text += f" ± {self.std:.4f} ({self.n_runs} runs)"
        return text + f" (on {self.n}-sample {self.split} set" + "".join(f", {c}" for c in self.caveats()) + ")"

    def caveats(self) -> list[str]:
        """What the mean leaves out or scored 0 without an answer: said wherever the mean is shown."""
        said = [f"{self.n_failed} failed and excluded"] if self.n_failed else []
        for kind, n in sorted(self.no_answers.items()):
            said.append(f"{n} {NO_ANSWER[kind].counted if kind in NO_ANSWER else kind} and scored 0")
        return said

    def to_dict(self) -> dict[str, Any]:
        """The file form: `mean_score` / `std_score`, aevyra-reflex's names (tracking/schema.py)."""
        return measurement_document(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        """From a file of either layout (`mean_score` or the older `mean`)."""
        fields = dict(data)
        fields.setdefault("mean", fields.pop("mean_score", None))
        fields.setdefault("std", fields.pop("std_score", 0.0))
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in fields.items() if k in known})


@dataclass
class IterationRecord:
    """One iteration as recorded in the audit trail (the run layout's iteration fields)."""

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
        """The file form: `system_prompt` is the prompt text aevyra-reflex readers expect; the
        per-predictor prompts are in `candidate` (instructions and demos by predictor name)."""
        data = asdict(self)
        data["system_prompt"] = render_prompts(self.system_prompt)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IterationRecord:
        """From an iteration file: ours (either layout) or aevyra-reflex's (fewer fields, one prompt)."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        predictors = (fields.get("candidate") or {}).get("predictors")
        prompt = fields.get("system_prompt")
        if isinstance(predictors, dict):
            fields["system_prompt"] = {n: (s or {}).get("instructions", "") for n, s in predictors.items()}
        elif isinstance(prompt, str):  # written by aevyra-reflex: a single system prompt
            fields["system_prompt"] = {FOREIGN_PREDICTOR: prompt}
            fields["candidate"] = {"predictors": {FOREIGN_PREDICTOR: {"instructions": prompt, "demos": []}}}
        defaults = {"phase": "", "strategy": "", "val_score": None, "delta": None, "scores_by_metric": {},
                    "candidate": {}, "fingerprint": "", "reasoning": "", "change_summary": "", "predictor": None,
                    "eval_tokens": 0, "reasoning_tokens": 0, "metric_calls": 0, "elapsed_seconds": 0.0,
                    "timestamp": "", "is_full_eval": False, "batch_size": 0, "n_failed": 0}
        return cls(**{**defaults, **fields})


# The predictor name of a prompt-file program (adapters/prompt_program.py), under which a run
# written by aevyra-reflex (one system prompt) is read.
FOREIGN_PREDICTOR = "predict"


def format_tokens(n: int | None) -> str:
    """12345 → "12.3K": token counts as people read them."""
    n = n or 0
    for unit, size in (("M", 1_000_000), ("K", 1_000)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def candidate_name(iteration: int, branched_from: dict[str, Any] | None = None) -> str:
    """A run's candidate by its iteration; 0 is where the run started: the user's prompt, or in a
    branch the parent's candidate (the baseline stays the parent's, the user's prompt)."""
    if iteration:
        return f"iteration {iteration}"
    if branched_from:
        return f"the branch's start, run {branched_from.get('run_id')} iteration {branched_from.get('iteration')}"
    return "the initial prompt"


def selection_label(result: dict[str, Any]) -> str:
    """How the "Selected" line names the pick's score: "best on val" where the pick has the top
    score, "picked on val" where the rewrite margin kept a lower one (the note says why), so the
    line never calls a score "best" beside a higher one. `result` is result.json's form."""
    confirmation = result.get("confirmation")
    if isinstance(confirmation, dict):
        both = [row.get("val_and_train") for row in confirmation.get("contenders") or [] if isinstance(row, dict)]
        both = [v for v in both if isinstance(v, int | float)]
        top = not both or result.get("best_score") == max(both)
    else:
        top = not result.get("selection_note")
    return f"{'best' if top else 'picked'} on {result.get('selected_by', '?')}"


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
    target: dict[str, Any] | None = None  # {"model", "source", "threshold"} when a target set the threshold
    budget: int | None = None  # the search's metric-call budget, when one was set
    promotion: dict[str, Any] | None = None  # `promotion_report()`, when a minimum improvement was required
    selection_note: str | None = None  # why the pick is not the top score (the rewrite margin), when it is not
    confirmation: dict[str, Any] | None = None  # a close call on val settled on train too (confirmation.py)
    branched_from: dict[str, Any] | None = None  # {"run_id", "iteration"}: this run started from that candidate

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
        lines.extend(
            f"  {label:<13}: {self.baseline.scores_by_model.get(label, float('nan')):.4f} → {score:.4f}"
            for label, score in self.final.scores_by_model.items()
        )
        lines.append(f"Significance   : {self.significance.describe()}")
        if self.target:
            lines.append(f"Target         : {target_label(self.target)}")
        if self.promotion:
            lines.append(f"Promotion      : {self.promotion['reason']}")
        chosen = candidate_name(self.selected_iteration, self.branched_from)
        score = "n/a" if self.selected_score is None else f"{self.selected_score:.4f}"
        note = f"; {self.selection_note}" if self.selection_note else ""
        label = selection_label({"confirmation": self.confirmation, "best_score": self.selected_score,
                                 "selection_note": self.selection_note, "selected_by": self.selected_by})
        lines.append(f"Selected       : {chosen} ({label}: {score}{note})")
        lines.append(f"Iterations     : {len(self.iterations)}")
        if self.iterations:
            train = [r.score for r in self.iterations]
            shown = _trajectory(train) if any(v is not None for v in train) else "none (scored on validation only)"
            lines.append(f"Train traj     : {shown}")
            if sizes["val"]:
                vals = [self.initial_val_score, *(r.val_score for r in self.iterations)]
                lines.append(f"Val traj       : {_trajectory(vals)}  (first = the starting prompt)")
        lines.append(f"Early stopped  : {'Yes (val score plateaued)' if self.early_stopped else 'No'}")
        u = self.usage
        lines.append(
            f"LM usage       : eval {u['lm_calls']} calls / {format_tokens(u['eval_tokens'])} tokens"
            + (f" (of these, the metric's: {u['metric_lm_calls']} calls / {format_tokens(u['metric_tokens'])} tokens)"
               if u.get("metric_lm_calls") else "")
            + ", "
            f"reasoning {u['reasoning_calls']} calls / {format_tokens(u['reasoning_tokens'])} tokens"
            + (f", {u['reasoning_failed']} failed ({u.get('reasoning_error') or 'no reply'})"
               if u.get("reasoning_failed") else "")
        )
        lines.append(
            f"Metric calls   : {u['metric_calls']} evaluated, {u['cache_hits']} reused from the run cache, "
            f"{u['failed']} failed, {u['retries']} retries"
            + (f" ({u['rate_limits']} rate limits (429) seen)" if u.get("rate_limits") else "")
        )
        if self.budget is not None:
            lines.append(f"Budget         : {u['search_calls']} / {self.budget} search metric calls spent")
        lines.append(f"Duration       : {self.duration_seconds:.1f}s")
        lines.extend(f"Warning        : {w}" for w in self.warnings)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["baseline"], data["final"] = self.baseline.to_dict(), self.final.to_dict()
        data["iterations"] = [r.to_dict() for r in self.iterations]
        data["best_score"] = data.pop("selected_score")  # aevyra-reflex's name: the selected prompt's score
        data["significance"] = asdict(self.significance)
        data["improvement"] = self.improvement
        data["early_stopped"] = self.early_stopped
        return data


SOURCE_TAGS = {"verdict_json": "json", "verdict_run": "run", "manual": "manual"}


def target_label(target: dict[str, Any]) -> str:
    """`model @ 0.85 on exact_match [json]`, or the bare threshold when no model set it."""
    threshold = f"{target['threshold']:.4g}"
    if not target.get("model"):
        return f"{threshold} [{SOURCE_TAGS.get(target.get('source'), 'default')}]"
    metric = f" on {target['metric']}" if target.get("metric") else ""
    return f"{target['model']} @ {threshold}{metric} [{SOURCE_TAGS.get(target.get('source'), target.get('source'))}]"


def promotion_report(improvement: float | None, significance: Significance, required: float) -> dict[str, Any]:
    """Whether the selected candidate beat the baseline on held-out test by `required`, significantly.

    Both conditions must hold; "not enough data" for the test is not significant, so a run
    too small to tell is never promoted.
    """
    significant = bool(significance.significant)
    big_enough = improvement is not None and improvement >= required
    promoted = big_enough and significant
    lift = "n/a" if improvement is None else f"{improvement:+.4f}"
    if promoted:
        reason = f"promoted: held-out improvement {lift} ≥ {required:+.4f}, significant"
    elif not big_enough:
        reason = f"not promoted: held-out improvement {lift} < required {required:+.4f}"
    else:
        reason = f"not promoted: improvement {lift} ≥ {required:+.4f} but not significant"
    return {"required": required, "improvement": improvement, "significant": significant,
            "promoted": promoted, "reason": reason}
