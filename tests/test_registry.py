"""The strategy registry, and a strategy written by a user against the documented base class."""

from __future__ import annotations

from typing import Any

import pytest
from strategy_kit import comparable, interrupted_then_resumed, run_strategy

from reflex_dspy import Reflex, list_strategies, register_strategy
from reflex_dspy.errors import UsageError
from reflex_dspy.strategies import SearchContext, Step, Strategy, get_strategy


class AppendRule(Strategy):
    """A user's strategy: each iteration appends the next rule from a list it was given."""

    name = "append-rule"

    def __init__(self, metric: Any = None, *, rules: list[str] = ()) -> None:
        super().__init__(metric, rules=list(rules))
        self.current = None
        self.used = 0

    def start(self, ctx: SearchContext, initial) -> None:
        self.current, self.used = initial, 0

    def done(self) -> str | None:
        return "no rules left" if self.used >= len(self.rules) else None

    def step(self, ctx: SearchContext, iteration: int, batch) -> Step:
        parent = ctx.evaluate(self.current, batch)
        (name,) = ctx.predictor_names
        rule = self.rules[self.used]
        self.used += 1
        candidate = self.current.with_instructions(name, f"{self.current.predictors[name].instructions} {rule}")
        result = ctx.evaluate(candidate, batch)
        if result.mean > parent.mean:
            self.current = candidate
        return Step(candidate, result, parent.mean, reasoning=f"appended {rule!r}", change_summary=f"+ {rule}")

    def state_dict(self) -> dict[str, Any]:
        return {"current": self.current.to_dict(), "used": self.used}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from reflex_dspy.candidate import Candidate

        self.current, self.used = Candidate.from_dict(state["current"]), state["used"]


RULES = ["Think about it.", "Be verbose.", "Answer with one word: billing, shipping or technical."]


def test_a_registered_user_strategy_runs_end_to_end_by_name(tmp_path):
    register_strategy("append-rule", AppendRule)
    assert "append-rule" in list_strategies()
    program = run_strategy("append-rule", lambda s, m: "{}", run_dir=tmp_path, max_iterations=5,
                           extra_kwargs={"rules": RULES}, train_ratio=1.0, val_ratio=0.0)
    result = program.result
    assert [r.change_summary for r in result.iterations] == [f"+ {r}" for r in RULES]
    assert result.stop_reason.startswith(("score threshold", "strategy finished"))
    assert result.final.mean == 1.0 and result.strategy == "append-rule"
    assert {r.phase for r in result.iterations} == {"append-rule"}
    assert program.predict.signature.instructions.endswith(RULES[-1])


def test_a_user_strategy_resumes_from_its_own_state(tmp_path):
    reference, resumed = interrupted_then_resumed(
        lambda: AppendRule(rules=RULES), lambda s, m: "{}", tmp_path, at=2, max_iterations=5,
        train_ratio=1.0, val_ratio=0.0,
    )
    assert comparable(reference) == comparable(resumed)


def test_every_builtin_strategy_is_listed_and_unknown_names_name_the_known_ones():
    assert {"auto", "fewshot", "gepa", "iterative", "pdo", "structural"} <= set(list_strategies())
    with pytest.raises(UsageError, match=r"unknown strategy 'nope' \(known: .*auto.*pdo"):
        Reflex("exact", strategy="nope")
    with pytest.raises(UsageError, match="invalid parameters for strategy 'iterative'"):
        get_strategy("iterative", no_such_param=1)
    with pytest.raises(TypeError, match="not a subclass"):
        register_strategy("bad", dict)
