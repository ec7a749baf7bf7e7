"""OptimizerConfig: every knob of a run, validated once, shared by Python and the CLI."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from reflex_dspy.errors import UsageError

# Metric calls per (train + val) example for each `auto_budget` preset: enough for the
# baseline, `n` proposals scored on the full train set and their val checks.
AUTO_BUDGET_FACTORS = {"light": 6, "medium": 12, "heavy": 24}


class OptimizerConfig(BaseModel):
    """The configuration of one optimization run (README: "Python", "The CLI").

    Invalid values raise on construction, naming the field. `reasoning_api_key` is a
    `SecretStr` and is excluded from every dump, so it can never be persisted by accident.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    strategy: str = Field("auto", min_length=1)
    max_iterations: int = Field(10, ge=1)
    score_threshold: float = Field(0.85, ge=0.0, le=1.0)
    train_ratio: float = Field(0.8, gt=0.0, le=1.0)
    val_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    early_stopping_patience: int = Field(3, ge=0)
    batch_size: int = Field(0, ge=0)
    batch_seed: int = 42
    full_eval_steps: int = Field(0, ge=0)
    max_workers: int = Field(4, ge=1, le=256)
    eval_runs: int = Field(1, ge=1)
    reasoning_model: str | None = None
    reasoning_provider: str | None = None
    reasoning_api_key: SecretStr | None = Field(None, exclude=True, repr=False)
    reasoning_base_url: str | None = None
    reasoning_max_tokens: int = Field(1024, ge=64)  # room for a diagnosis plus a full instruction
    eval_temperature: float = Field(0.0, ge=0.0, le=2.0)
    target_model: str | None = None
    target_source: Literal["verdict_json", "verdict_run", "manual"] | None = None
    target_metric: str | None = None  # the results' metric the target was ranked by (targets.py)
    source_model: str | None = None
    seed: int = 42
    extra_kwargs: dict[str, Any] = Field(default_factory=dict)
    max_metric_calls: int | None = Field(None, ge=1)
    auto_budget: Literal["light", "medium", "heavy"] | None = None
    # Promotion gate: the selected candidate must beat the baseline on held-out test by this much
    # (and significantly) to be promoted; None = no gate.
    min_holdout_improvement: float | None = Field(None, ge=0.0, le=1.0)
    # MLflow prompt registry: register the selected prompt(s) as a new version of this prompt
    # (None = off); the alias moves to that version when the run is promoted (tracking/mlflow_prompts.py).
    register_prompt: str | None = Field(None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.\-]+$")
    prompt_alias: str = Field("reflex-best", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_\-]+$")

    @model_validator(mode="after")
    def _check_ratios(self) -> OptimizerConfig:
        if self.train_ratio < 1.0 and self.val_ratio >= self.train_ratio:
            raise ValueError(
                f"val_ratio ({self.val_ratio}) must be smaller than train_ratio ({self.train_ratio}): "
                "validation is carved out of the training portion"
            )
        if self.max_metric_calls is not None and self.auto_budget is not None:
            raise ValueError("set max_metric_calls or auto_budget, not both")
        return self

    @classmethod
    def build(cls, **values: Any) -> OptimizerConfig:
        """Construct, turning pydantic's multi-line report into a one-line `UsageError`."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise UsageError(describe_validation_error(exc)) from None

    def metric_call_budget(self, n_search_examples: int) -> int | None:
        """The search budget in metric calls, from `max_metric_calls` or the `auto_budget` preset."""
        if self.max_metric_calls is not None:
            return self.max_metric_calls
        if self.auto_budget is not None:
            return AUTO_BUDGET_FACTORS[self.auto_budget] * max(n_search_examples, 1)
        return None

    def for_budget(self, budget: int | None) -> OptimizerConfig:
        """This config with `max_iterations` raised to `budget` when the user gave a metric-call
        budget and left `max_iterations` at its default.

        A budget is the limit a user asked for: under the default cap of 10 iterations, auto (whose
        phases are iterations) could end a run with over a third of its budget unspent. An iteration
        that scores anything new costs at least one call, so `budget` iterations never end a run
        before its calls do; iterations that only hit the cache end by patience or by the strategy.
        A `max_iterations` the user set is kept as is.
        """
        if budget is None or "max_iterations" in self.model_fields_set or budget <= self.max_iterations:
            return self
        return self.model_copy(update={"max_iterations": budget})

    def budget_binds(self, budget: int | None) -> bool:
        """Whether the budget, not an iteration count, limits the run: a cap of at least the budget
        never binds first, so progress and dry runs show none."""
        return budget is not None and self.for_budget(budget).max_iterations >= budget

    def public_dict(self) -> dict[str, Any]:
        """Everything safe to persist: the API key is excluded by the field definition."""
        return self.model_dump(mode="json")


def describe_validation_error(exc: ValidationError) -> str:
    """One line per the first problem: `invalid value for max_iterations: ...`."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err.get("loc", ())) or "config"
    message = err.get("msg", "invalid value").removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        return f"unknown config field {field!r}"
    return f"invalid value for {field}: {message}"
