"""The pick on validation: a model-written rewrite must beat the user's words by more than the margin."""

from __future__ import annotations

from typing import Any

import pytest
from fakes import bangs_respond, bangs_splits, fake_lm, routing_examples

from reflex_dspy import Reflex
from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.candidate import Candidate
from reflex_dspy.proposals import TaskFacts, with_fact
from reflex_dspy.result import selection_label
from reflex_dspy.selection import PickRule
from reflex_dspy.strategies import SearchContext, Step, Strategy

USER = "Say which team should handle the message."


def user_candidate() -> Candidate:
    return Candidate.from_program(program_from_prompt(USER))


def test_a_rewrite_must_win_by_more_than_the_margin():
    user = user_candidate()
    name = next(iter(user.predictors))
    rewrite = user.with_instructions(name, USER + " Think of billing first.")
    rule = PickRule(user, {}, margin=1)
    assert rule.best([(user, 0.5), (rewrite, 0.625)], n=8) == 0  # one example ahead: the user's words stay
    assert rule.best([(rewrite, 0.625), (user, 0.5)], n=8) == 1  # also when the rewrite came first
    assert rule.best([(user, 0.5), (rewrite, 0.75)], n=8) == 1  # two examples ahead: the rewrite
    assert rule.best([(user, 0.7), (rewrite, 0.8)], n=10) == 0  # counted in examples, not in floats
    assert PickRule(user, {}, margin=0).best([(user, 0.5), (rewrite, 0.625)], n=8) == 1
    assert rule.best([(user, None), (rewrite, None)], n=8) is None


def test_demos_and_the_data_s_facts_are_the_user_s_words():
    user = user_candidate()
    name = next(iter(user.predictors))
    examples = routing_examples(2)
    facts = {name: TaskFacts.from_examples(examples, "output")}
    stated = user.with_instructions(name, with_fact(USER, facts[name].missing_from(USER)))
    with_demos = stated.with_demos(name, [{"input": "Customer 0: my card issue.", "output": "billing"}])
    rewrite = user.with_instructions(name, "Route it.")
    rule = PickRule(user, facts, margin=1)
    assert rule.keeps_users_words(stated) and rule.keeps_users_words(with_demos)
    assert not rule.keeps_users_words(rewrite)
    assert rule.best([(rewrite, 0.5), (with_demos, 0.625)], n=8) == 1  # not penalised: one example is enough
    assert rule.best([(stated, 0.5), (rewrite, 0.625)], n=8) == 0


# -- through a run: the lifecycle's final pick ----------------------------------------------------
class Bangs(Strategy):
    """Appends one more "!" to the user's instructions each step: a rewrite one example better each time."""

    name = "bangs"

    def __init__(self, metric: Any = None, *, rewrite_margin: int = 0) -> None:
        super().__init__(metric, rewrite_margin=rewrite_margin)

    def start(self, ctx: SearchContext, initial: Candidate) -> None:
        self.initial = initial

    def step(self, ctx: SearchContext, iteration: int, batch) -> Step:
        name = ctx.predictor_names[0]
        candidate = self.initial.with_instructions(name, USER + " " + "!" * iteration)
        parent, result = ctx.evaluate_many([self.initial, candidate], batch)
        return Step(candidate, result, parent.mean, reasoning="one more !", change_summary="!")

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def run_bangs(tmp_path, margin: int, iterations: int):
    train, val = bangs_splits()
    opt = Reflex("exact", strategy=Bangs(rewrite_margin=margin), task_lm=fake_lm(bangs_respond, name="fake/task"),
                 reasoning_lm=fake_lm(lambda s, m: "-", name="fake/reasoner"), run_dir=tmp_path, track=False,
                 max_iterations=iterations, train_ratio=1.0, early_stopping_patience=0, score_threshold=1.0)
    return opt.compile(program_from_prompt(USER), trainset=train, valset=val).result


@pytest.mark.parametrize(("margin", "iterations", "selected"), [(1, 1, 0), (0, 1, 1), (1, 2, 2)])
def test_the_final_pick_keeps_the_user_s_words_unless_a_rewrite_wins_by_more(tmp_path, margin, iterations, selected):
    result = run_bangs(tmp_path, margin, iterations)
    assert [r.val_score for r in result.iterations] == [0.5 + i / 8 for i in range(1, iterations + 1)]
    assert result.selected_iteration == selected
    assert result.selected_by == "val"  # what readers of result.json compare; the note says why
    note = ("the user's words kept over iteration 1 (0.6250): no rewrite won by more than 1 validation example"
            if margin and selected == 0 else None)
    assert result.selection_note == note and result.to_dict()["selection_note"] == note
    assert (note in result.summary()) if note else "user's words kept" not in result.summary()
    # "best" only for the top score: beside iteration 1's 0.6250 the user's 0.5000 was picked, not best
    label = f"{'picked' if note else 'best'} on val: {result.selected_score:.4f}"
    assert label in result.summary() and label.split(":")[0] == selection_label(result.to_dict())
