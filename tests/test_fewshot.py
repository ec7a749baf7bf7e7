"""The fewshot strategy: bootstrapped demos from successful traces, the selection rules, no demo
scored on its own example, multi-step traces, label-free runs, and resume."""

from __future__ import annotations

import json
import re

import dspy
import pytest
from conftest import KEYWORDS, LABELS, routing_examples, truth
from fakes import fake_lm
from strategy_kit import comparable, demo_labels, interrupted_then_resumed, routing_with_demos, run_strategy

from reflex_dspy import Reflex
from reflex_dspy.adapters import SystemPromptAdapter, program_from_prompt
from reflex_dspy.evaluation import Evaluator
from reflex_dspy.proposals import ProposalRejected, Proposer
from reflex_dspy.strategies.demo_selection import (
    PoolEntry,
    agent_curated,
    cap_pool,
    diverse,
    parse_choice,
    ranked,
    top_k,
)
from reflex_dspy.strategies.fewshot import FewShot, success_bar


# -- fakes ------------------------------------------------------------------------------------
def entry(eid: str, text: str, answer: str, score: float = 1.0, pad: int = 0) -> PoolEntry:
    return PoolEntry(eid, score, {"input": text}, answer, {"predict": {"input": text + " " * pad, "output": answer}})


def curator(system: str, messages: list[dict]) -> str:
    """A stateless reasoning model for CurateDemos: one candidate per distinct answer, then in order."""
    text = "\n".join(m["content"] for m in messages)
    k = int(re.search(r"\[\[ ## how_many ## \]\]\s*(\d+)", text).group(1))
    answers = re.findall(r"^\[(\d+)\].*\n\s+answer: (.*)$", text, flags=re.MULTILINE)
    chosen, seen = [], set()
    for n, answer in answers:
        if answer not in seen:
            seen.add(answer)
            chosen.append(int(n))
    chosen += [int(n) for n, _ in answers if int(n) not in chosen]
    return json.dumps({"reasoning": "one of each answer", "chosen": chosen[:k]})


def refuses(system: str, messages: list[dict]) -> str:
    return json.dumps({"reasoning": "all of them", "chosen": [1, 1, 99]})


def first_keyword(text: str) -> bool:
    return any(words[0] in text.lower() for words in KEYWORDS.values())


def learner(system: str, messages: list[dict]) -> str:
    """A task model that gets the messages with a label's first keyword right unprompted (so some
    traces succeed on every label) and the rest only for labels it was shown as demo answers."""
    text = messages[-1]["content"]
    label = truth(text)
    if first_keyword(text) or label in demo_labels(messages):
        return label
    return f"This is about {label}."


class TwoStep(dspy.Module):
    """extract (input -> summary) then route (summary -> output): demos must come from full traces."""

    def __init__(self) -> None:
        super().__init__()
        self.extract = dspy.Predict(dspy.Signature("input: str -> summary: str").with_instructions("Summarise."))
        self.route = dspy.Predict(dspy.Signature("summary: str -> output: str").with_instructions("Route."))

    def forward(self, input: str) -> dspy.Prediction:
        with dspy.context(adapter=SystemPromptAdapter()):
            return self.route(summary=self.extract(input=input).summary)


def two_step_model(system: str, messages: list[dict]) -> str:
    text = messages[-1]["content"]
    if system == "Summarise.":
        return "about " + next(w for ws in KEYWORDS.values() for w in ws if w in text.lower())
    return learner(system, messages)


def compile_with(strategy, program, respond, examples, metric="exact", reasoner=refuses, **kwargs):
    kwargs.setdefault("max_workers", 2)
    kwargs.setdefault("early_stopping_patience", 0)
    return Reflex(metric, strategy=strategy, task_lm=fake_lm(respond, name="fake/task"),
                  reasoning_lm=fake_lm(reasoner, name="fake/reasoner"), train_ratio=1.0, val_ratio=0.0,
                  score_threshold=1.0, **kwargs).compile(program, trainset=examples).result


# -- selection rules ----------------------------------------------------------------------------
CRAFTED = [
    entry("a", "my refund for the card", "billing"),
    entry("b", "my refund for the card again", "billing"),
    entry("c", "refund on card", "billing"),
    entry("d", "the invoice price", "billing"),
    entry("e", "a parcel went missing with the courier yesterday", "shipping", pad=5),
    entry("f", "the app crashes with an error whenever I open it", "technical", pad=5),
]


def test_diverse_covers_every_answer_where_top_k_takes_the_best_ranked_duplicates():
    assert {e.answer for e in top_k(CRAFTED, 3)} == {"billing"}
    picked = diverse(CRAFTED, 3)
    assert {e.answer for e in picked} == {"billing", "shipping", "technical"}


def test_diverse_prefers_unlike_inputs_when_answers_are_the_same():
    same = [entry("a", "refund for the card", "x"), entry("b", "refund for the card please", "x"),
            entry("c", "the parcel is late again today", "x")]
    assert [e.example_id for e in diverse(same, 2)] == ["a", "c"]
    # The next variant starts from the next entry in coverage order (c), then the input least like it.
    assert [e.example_id for e in diverse(same, 2, variant=1)] == ["c", "b"]


def test_top_k_takes_the_highest_scores_and_later_variants_take_fewer():
    graded = [entry("a", "one", "x", 0.5), entry("b", "two", "y", 0.9), entry("c", "three", "z", 0.7),
              entry("d", "four", "x", 0.9, pad=3)]
    assert [e.example_id for e in top_k(graded, 2)] == ["b", "d"]  # equal scores: the shorter demo first
    assert [e.example_id for e in top_k(graded, 3, variant=1)] == ["b", "d"]


def test_pool_cap_keeps_the_best_scores_and_the_most_diverse_among_ties():
    pool = [*CRAFTED, entry("low", "a parcel", "shipping", score=0.5)]
    kept = cap_pool(pool, 4)
    assert "low" not in {e.example_id for e in kept}
    assert {e.answer for e in kept} == {"billing", "shipping", "technical"}


def test_success_bar_is_perfect_when_reached_else_the_top_quarter_never_the_floor():
    assert success_bar([1.0, 0.0, 0.0]) == 1.0
    assert success_bar([0.75, 0.5, 0.5, 0.25]) == 0.75
    assert success_bar([0.5, 0.5, 0.5]) is None
    assert success_bar([0.0, 0.0]) is None


@pytest.mark.parametrize("chosen", [[1, 1, 2], [0, 1, 2], [1, 2], "1, 2, 3", [1, 2, True]])
def test_a_malformed_choice_is_refused(chosen):
    with pytest.raises(ProposalRejected):
        parse_choice(chosen, n=6, k=3)


def _proposer(reasoner) -> Proposer:
    program = program_from_prompt("x")
    evaluator = Evaluator(program, lambda ex, pred: 1.0, task_lm=fake_lm(learner))
    return Proposer(fake_lm(reasoner), evaluator)


def test_agent_curated_uses_the_models_choice():
    pick = agent_curated(_proposer(curator), CRAFTED, 3, 0, instructions="Route.", facts="")
    assert pick.fallback is None
    assert {e.answer for e in pick.entries} == {"billing", "shipping", "technical"}
    fixed = agent_curated(_proposer(lambda s, m: json.dumps({"reasoning": "r", "chosen": [2, 3, 1]})),
                          CRAFTED, 3, 0, instructions="Route.", facts="")
    order = ranked(CRAFTED)  # the numbering the model was shown (variant 0: ranked order)
    assert fixed.entries == [order[1], order[2], order[0]]


def test_agent_curated_falls_back_to_diverse_and_says_why():
    pick = agent_curated(_proposer(refuses), CRAFTED, 3, 0, instructions="Route.", facts="")
    assert pick.fallback and "outside" in pick.fallback
    assert [e.example_id for e in pick.entries] == [e.example_id for e in diverse(CRAFTED, 3)]


# -- runs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("rule,reasoner", [("diverse", refuses), ("agent_curated", curator)])
def test_bootstrapped_demos_covering_every_label_reach_a_perfect_score(rule, reasoner):
    result = run_strategy(FewShot(max_examples=3, selection_strategy=rule), reasoner, max_iterations=3,
                          train_ratio=1.0, val_ratio=0.0).result
    assert result.baseline.mean < 0.5 and result.final.mean == 1.0
    best = result.iterations[result.selected_iteration - 1]
    demos = best.candidate["predictors"]["predict"]["demos"]
    assert {d["output"] for d in demos} == set(LABELS)
    assert all(r.phase == r.strategy == "fewshot" for r in result.iterations)
    assert best.details["bootstrap"]["teacher_labeled_demos"]  # gold exists: DSPy-style labeled teacher
    assert best.details["fallback"] is None


def test_agent_curated_run_survives_a_model_that_cannot_choose():
    result = run_strategy(FewShot(max_examples=3, selection_strategy="agent_curated"), refuses, max_iterations=2,
                          train_ratio=1.0, val_ratio=0.0).result
    first = result.iterations[0]
    assert "outside" in first.details["fallback"] and "diverse" in first.reasoning
    assert result.final.mean == 1.0


def test_no_demo_is_ever_scored_on_its_own_example():
    asked: list[list[dict]] = []

    def recording(system, messages):
        asked.append(messages)
        return routing_with_demos(system, messages)

    result = run_strategy(FewShot(max_examples=2, bootstrap_rounds=1), refuses, respond=recording,
                          examples=routing_examples(10), max_iterations=4, train_ratio=0.6, val_ratio=0.2,
                          score_threshold=1.0).result
    with_demos = [m for m in asked if len(m) > 1]
    assert with_demos, "no prompt carried demos"
    for messages in with_demos:
        shown = {m["content"] for m in messages[:-1] if m["role"] == "user"}
        assert messages[-1]["content"] not in shown
    first = result.iterations[0]
    assert first.details["left_out_of_batch"] == sorted(first.details["selected"])
    assert first.details["scored_on"] == first.batch_size - len(first.details["selected"])


def test_with_a_minibatch_demos_come_from_outside_it_and_the_whole_batch_is_scored():
    """A batch smaller than train: sets are drawn from the examples outside it (up to more than half
    the batch), so no batch example is lost to scoring, and none is scored on its own demo."""
    result = run_strategy(FewShot(max_examples=8, bootstrap_rounds=1), refuses, examples=routing_examples(10),
                          max_iterations=4, batch_size=6, train_ratio=1.0, val_ratio=0.0,
                          score_threshold=1.0).result
    tried = [r for r in result.iterations if r.details.get("selected")]
    assert tried
    for record in tried:
        assert record.details["left_out_of_batch"] == [], record.details
        assert record.details["scored_on"] == record.batch_size == 6
    assert max(r.details["set_size"] for r in tried) > 3  # more than half of the batch


def test_each_predictor_of_a_multi_step_program_gets_demos_from_the_same_full_traces():
    result = compile_with(FewShot(max_examples=3), TwoStep(), two_step_model, routing_examples(), max_iterations=3)
    assert result.final.mean == 1.0 > result.baseline.mean
    predictors = result.iterations[result.selected_iteration - 1].candidate["predictors"]
    extract, route = predictors["extract"]["demos"], predictors["route"]["demos"]
    assert len(extract) == len(route) == 3
    assert all(set(d) == {"input", "summary"} for d in extract)
    assert all(set(d) == {"summary", "output"} for d in route)
    assert [d["summary"] for d in extract] == [d["summary"] for d in route]  # one trace, both steps
    assert {d["output"] for d in route} == set(LABELS)


def test_works_label_free_with_a_judging_metric():
    def judge(example, prediction):
        said, right = prediction.output.strip(), truth(example.input)
        return 1.0 if said == right else 0.5 if right in said else 0.0

    examples = [dspy.Example(input=ex.input).with_inputs("input") for ex in routing_examples()]
    result = compile_with(FewShot(max_examples=3), program_from_prompt("Route it."), learner, examples,
                          metric=judge, max_iterations=3)
    assert result.baseline.mean < 0.75 and result.final.mean == 1.0
    boot = result.iterations[0].details["bootstrap"]
    assert boot["teacher_labeled_demos"] == [] and boot["bar"] == 1.0


def test_iterations_try_different_sets_and_re_bootstrap_on_schedule():
    result = run_strategy(FewShot(max_examples=1, bootstrap_rounds=2), refuses, max_iterations=4,
                          train_ratio=1.0, val_ratio=0.0).result
    assert len(result.iterations) == 4
    sets = [tuple(r.details["selected"]) for r in result.iterations]
    assert len(set(sets)) == 4
    assert [r.details["bootstrap"] is not None for r in result.iterations] == [True, False, True, False]
    assert [r.details["bootstrap"]["round"] for r in result.iterations[::2]] == [1, 2]


@pytest.mark.parametrize("rule,reasoner", [("diverse", refuses), ("top_k", refuses), ("agent_curated", curator)])
def test_state_survives_an_interruption(tmp_path, rule, reasoner):
    def make():
        return FewShot(max_examples=1, bootstrap_rounds=2, candidate_pool_size=6, selection_strategy=rule)

    reference, resumed = interrupted_then_resumed(make, reasoner, tmp_path, at=2, max_iterations=4,
                                                  train_ratio=1.0, val_ratio=0.0)
    assert len(reference.iterations) >= 3
    assert comparable(reference) == comparable(resumed)


def test_parameters_are_checked_and_reported():
    params = FewShot(max_examples=4, selection_strategy="top_k").get_params()
    assert params["max_examples"] == 4 and params["selection_strategy"] == "top_k"
    assert params["candidate_pool_size"] == 20 and params["bootstrap_rounds"] == 3
    with pytest.raises(ValueError, match="selection_strategy"):
        FewShot(selection_strategy="random")
    with pytest.raises(ValueError, match="candidate_pool_size"):
        FewShot(max_examples=6, candidate_pool_size=5)


def test_labeled_first_pays_for_no_bootstrap_before_its_first_set():
    """auto's order (labeled, rule, random): the first set is gold train examples, so the first step
    runs no bootstrap; the next kind needs the pool and bootstraps then."""
    def never_perfect(system, messages):  # customer 0 is never answered right: no early stop at 1.0
        return "?" if "Customer 0:" in messages[-1]["content"] else routing_with_demos(system, messages)

    result = run_strategy(FewShot(max_examples=3, set_kinds=["labeled", "rule", "random"]), refuses,
                          respond=never_perfect, max_iterations=3, train_ratio=1.0, val_ratio=0.0).result
    first, second, third = result.iterations[:3]
    assert (first.details["set_kind"], first.details["bootstrap"]) == ("labeled", None)
    assert second.details["set_kind"] == "rule" and second.details["bootstrap"]["round"] == 1
    # Each summary names what its set was drawn from (before: "3 demos by labeled from a pool of 0").
    assert first.change_summary.startswith("3 labeled demos from 24 train examples (answers: ")
    assert re.match(rf"\d demos by diverse from a pool of {second.details['pool_size']} \(answers: ", second.change_summary)
    assert re.match(r"3 demos at random from \d+ bootstrapped and labeled \(answers: ", third.change_summary)
    default = run_strategy(FewShot(max_examples=3), refuses, max_iterations=1, train_ratio=1.0,
                           val_ratio=0.0).result.iterations[0]
    assert default.details["set_kind"] == "rule" and default.details["bootstrap"]["round"] == 1


@pytest.mark.parametrize("kinds", [[], ["labeled", "labeled"], ["gold"]])
def test_invalid_set_kinds_are_one_line_errors(kinds):
    from reflex_dspy.errors import UsageError
    from reflex_dspy.strategies import get_strategy

    with pytest.raises(UsageError, match="set_kinds"):
        get_strategy("fewshot", set_kinds=kinds)


def test_demo_sets_fit_the_task_models_stated_context():
    """A model that states its context (`n_ctx`, the embedded model's 4096) gets no set longer than 60%
    of it: on the bench, a set of 12 facility e-mails would take about 3,600 of its 4096 tokens."""
    from reflex_dspy.strategies.fewshot import demos_that_fit

    padding = " It has been like this for weeks and nobody has answered my earlier letters." * 6
    examples = [dspy.Example(input=ex.input + padding, output=ex.output).with_inputs("input")
                for ex in routing_examples()]
    task = fake_lm(routing_with_demos)
    task.fake_engine.n_ctx = 1200
    opt = Reflex("exact", strategy=FewShot(max_examples=16, bootstrap_rounds=1), task_lm=task,
                 reasoning_lm=fake_lm(refuses), max_iterations=4, train_ratio=1.0, val_ratio=0.0,
                 early_stopping_patience=0, score_threshold=1.0)
    result = opt.compile(program_from_prompt("Route it."), trainset=examples).result
    sizes = [r.details["set_size"] for r in result.iterations if r.details.get("selected")]
    demo_chars = len(json.dumps({"input": examples[0].input, "output": "shipping"}))
    fit = int(1200 * 0.6 / (demo_chars / 3))
    assert sizes and max(sizes) <= fit < 16, (sizes, fit)
    assert demos_that_fit(None, []) is None  # a model that states no context: no cap
    shown = [m for _, m in task.fake_engine.requests if len(m) > 1]
    assert shown and max((len(m) - 1) // 2 for m in shown) <= fit  # the bootstrap's teacher too


def test_memory_carries_the_pool_always_and_the_tried_sets_only_to_the_same_instructions():
    """A later search of the same kind (auto's next fewshot phase) draws after the sets an earlier one
    tried on these instructions; on other instructions those sets are new candidates, and only the
    pool (sound demos whatever the instructions) is carried."""
    from reflex_dspy.candidate import Candidate, PredictorState
    from reflex_dspy.strategies.demo_selection import PoolEntry

    def started(instructions: str) -> FewShot:
        strategy = FewShot()
        strategy.state.current = Candidate({"predict": PredictorState(instructions)})
        return strategy

    first = started("Route the message.")
    first.state.pool = [PoolEntry("ex-1", 1.0, {"message": "m"}, "billing", {"predict": {"message": "m"}}, 1)]
    first.state.tried, first.state.variant, first.state.round = ["ex-1", "ex-2|ex-3"], 5, 1
    memory = json.loads(json.dumps(first.memory()))  # auto keeps it in a JSON checkpoint

    same = started("Route the message.")
    same.recall(memory)
    assert (same.state.tried, same.state.variant, same.state.round) == (["ex-1", "ex-2|ex-3"], 5, 1)
    assert [e.example_id for e in same.state.pool] == ["ex-1"]

    other = started("Route the message to a team.")
    other.recall(memory)
    assert (other.state.tried, other.state.variant) == ([], 0)
    assert [e.example_id for e in other.state.pool] == ["ex-1"] and other.state.round == 1


def test_on_validation_a_start_whose_demos_came_from_all_of_train_still_gets_new_sets():
    """With `score_on_val` a set replaces the current demos and validation never lends one, so the
    current demos' sources stay drawable: started from a set of all of train (auto's rung after a
    16-demo probe), fewshot had nothing left to draw and tried no set at all."""
    from reflex_dspy.candidate import Candidate

    examples = routing_examples(4)
    train, val = examples[:6], examples[6:]
    program = program_from_prompt("Route it.")
    start = Candidate.from_program(program)
    name = next(iter(start.predictors))
    start = start.with_demos(name, [{"input": ex.input, "output": ex.output} for ex in train])
    program = start.apply(program)
    result = Reflex("exact", strategy=FewShot(score_on_val=True, set_kinds=["labeled"]),
                    task_lm=fake_lm(lambda system, messages: "no idea", name="fake/task"),
                    reasoning_lm=fake_lm(refuses, name="fake/reasoner"), train_ratio=1.0, val_ratio=0.0, score_threshold=1.0, max_iterations=3, early_stopping_patience=0, track=False,
                    max_workers=1).compile(program, trainset=train, valset=val).result
    tried = [r for r in result.iterations if r.details.get("selected")]
    assert len(tried) == 3, [r.change_summary for r in result.iterations]
    assert len({r.fingerprint for r in tried} | {start.fingerprint}) == 4  # each a new set


def test_set_size_order_follows_the_measured_scores():
    """The largest size, then 4; then the untried size nearest the best-scoring one,
    never beyond a size that scored lower (one peak), and a new set of the best size when none is left."""
    from reflex_dspy.strategies.set_sizes import best_scores, size_order, sizes_within

    sizes = sizes_within(16, 16)
    assert size_order(sizes, {})[:2] == [16, 4]
    assert size_order(sizes, {16: 0.75})[0] == 4
    assert size_order(sizes, {16: 0.75, 4: 0.25})[0] == 12  # the old schedule's next was 8, then 2 and 1
    assert size_order(sizes, {16: 0.75, 4: 0.25, 12: 0.5})[0] == 16  # 12 < 16 cuts off 8 and 6: redraw 16
    assert size_order(sizes, {16: 0.5, 4: 0.875})[0] == 3  # the peak is small: its neighbours next
    assert size_order(sizes, {16: 0.75, 4: 0.75})[0] == 12  # a tie cuts nothing off; the larger is the best
    assert sizes_within(16, 6) == [6, 4, 2, 1, 3]  # capped sizes collapse onto the cap
    assert best_scores([[4, 0.5], [4, 0.75], [16, 0.25]]) == {4: 0.75, 16: 0.25}


def test_fewshot_searches_set_sizes_near_the_best_measured_on_validation():
    """A task model that answers right only when shown at least 10 demos: after 16 demos scored and 4
    did not, the sets stay at 10 or more once a smaller one (8) has scored lower, where the fixed
    schedule (16, 4, 8, 2, 16, 1, ...) went on to 2 and 1. The sizes come from the validation scores
    the strategy reads back (the run's own, no call more)."""

    def needs_ten(system: str, messages: list[dict]) -> str:
        text = messages[-1]["content"]
        label = truth(text)  # never right on one label, so no set reaches the score threshold
        return label if (len(messages) - 1) // 2 >= 10 and label != "technical" else "no idea"

    opt = Reflex("exact", strategy=FewShot(set_kinds=["labeled", "random"], score_on_val=True),
                 task_lm=fake_lm(needs_ten), reasoning_lm=fake_lm(refuses), max_iterations=7,
                 train_ratio=0.8, val_ratio=8 / 30, early_stopping_patience=0, score_threshold=1.0)
    result = opt.compile(program_from_prompt("Route it."), trainset=routing_examples(10)).result  # 16 / 8 / 6
    tried = [r for r in result.iterations if r.details.get("selected")]
    sizes = [r.details["set_size"] for r in tried]
    scores = {r.details["set_size"]: r.val_score for r in tried}
    assert sizes[:4] == [16, 4, 12, 8], sizes
    assert scores[16] > 0 and scores[4] == 0 and scores[8] == 0, scores
    assert all(k >= 10 for k in sizes[4:]) and len(sizes) == 7, sizes
    # A labeled set needs no bootstrap: its step costs one validation pass, read by the step and the run alike.
    assert {r.metric_calls for r in tried if r.details["set_kind"] == "labeled"} == {8}
