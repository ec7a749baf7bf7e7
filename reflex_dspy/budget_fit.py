"""Does the run's metric-call budget afford its start? Checked before any model call.

The search first scores the starting prompt on validation; a rewrite or a layout is scored on
the batch and on validation; and GEPA cannot run a step on fewer calls than its seed on the
Pareto set, a reflective minibatch and the new candidate take, while the run keeps calls to
score what it emits. A budget below these paid for the baseline, then raised or stopped with
nothing tried ("0 iterations"); a user would rather hear it at once.
"""

from __future__ import annotations

from reflex_dspy.confirmation import held_back
from reflex_dspy.errors import UsageError
from reflex_dspy.strategies.base import Strategy


def check_first_step(strategy: Strategy, budget: int | None, train_n: int, val_n: int,
                     batch_size: int | None, models: int = 1) -> None:
    """Raise a one-line `UsageError` when `budget` cannot pay for the starting prompt on
    validation and the strategy's first step (`Strategy.first_step_calls`) after the calls held
    back to confirm the pick. Each example costs a metric call per task model."""
    need = strategy.first_step_calls(train_n, min(batch_size or train_n, train_n), val_n)
    if budget is None:
        return
    held = held_back(budget, train_n, val_n)
    each = f" ({models} task models each)" if models > 1 else ""
    if val_n * models > budget - held:  # before: BudgetExhausted out of compile, the baseline paid for
        raise UsageError(f"a budget of {budget} metric call{'s' * (budget != 1)} cannot score the starting "
                         f"prompt on the {val_n} validation examples{each}; raise the budget (max_metric_calls)")
    if need is not None and (val_n + need) * models > budget - held:
        name = strategy.name or type(strategy).__name__
        kept = f", {held} of the {budget} held back to confirm the pick" if held else ""
        raise UsageError(f"a budget of {budget} metric calls is too small for strategy {name!r} here: its first "
                         f"step needs at least {need * models} search calls after the starting prompt's {val_n * models} "
                         f"on validation{each}{kept}; raise the budget (max_metric_calls) or lower batch_size")
