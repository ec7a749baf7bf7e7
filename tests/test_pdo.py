"""PDO: duels between prompts, chosen by an Optuna sampler, decide which prompt wins.

The fake task model answers by keywords in its instructions ("strict" answers every message
with the bare label, "careful" all but technical ones, "verbose" none, anything else only
billing), so which prompt is better is known and a duel between two prompts really has a winner.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import dspy
import optuna
import pytest
from conftest import LABELS, routing_examples, truth
from fakes import fake_lm
from strategy_kit import comparable, interrupted_then_resumed, run_strategy

from reflex_dspy import Reflex
from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.strategies.pdo import PDO
from reflex_dspy.strategies.pdo.ranking import Duel, WinMatrix, dirichlet, fuse, rank, rank_all
from reflex_dspy.strategies.pdo.sampler import DuelSampler, DuelStore, double_thompson


def duel_respond(system: str, messages: list[dict]) -> str:
    label = truth(messages[-1]["content"])
    s = system.lower()
    if "verbose" in s:
        return f"I believe this message concerns {label}, and here is why at length."
    if "strict" in s or ("careful" in s and label != "technical") or label == "billing":
        return label
    return f"This is about {label}."


def score_of(prompt: str) -> float:
    s = prompt.lower()
    return 0.0 if "verbose" in s else 1.0 if "strict" in s else 2 / 3 if "careful" in s else 1 / 3


def _field(text: str, name: str) -> str:
    return text.split(f"[[ ## {name} ## ]]")[1].split("[[ ## ")[0].split("\n\nRespond with")[0].strip()


def _data(text: str, name: str) -> str:
    """A field the prompt wraps in <data> tags, unwrapped."""
    return _field(text, name).removeprefix("<data>").removesuffix("</data>").strip()


def reasoner(strict_mutant: bool = False, seen: list[str] | None = None):
    """A stateless fake reasoning model. Tips give the pool a spread (careful, verbose, plain);
    mutations add "strict" only when `strict_mutant`, else a distinct harmless sentence."""

    def respond(system: str, messages: list[dict]) -> str:
        text = messages[-1]["content"]
        if seen is not None:
            seen.append(text)
        if "[[ ## tip ## ]]" in text:
            tip = _field(text, "tip")
            instructions = ("Be careful: route the message." if "numbered steps" in tip
                            else "Be verbose and explain the routing." if "expert role" in tip
                            else "Route the message. Style: " + " ".join(tip.split()[:4]))
            return json.dumps({"change_summary": "a variant", "revised_instructions": instructions})
        if "[[ ## winner_instructions ## ]]" in text:
            winner = _field(text, "winner_instructions")
            revised = "Be strict: name exactly one team." if strict_mutant else f"{winner} Check the team twice."
            return json.dumps({"change_summary": "a mutant", "revised_instructions": revised})
        if "[[ ## response_a ## ]]" in text:  # pairwise judge: a bare label beats a sentence
            a, b = _data(text, "response_a"), _data(text, "response_b")
            good_a, good_b = a in LABELS, b in LABELS
            winner = "tie" if good_a == good_b else "A" if good_a else "B"
            return json.dumps({"reasoning": "compared", "winner": winner})
        if "[[ ## response ## ]]" in text:  # absolute judge
            response = _data(text, "response")
            return json.dumps({"reasoning": "graded", "score": 5 if response in LABELS else 2})
        raise AssertionError(f"unexpected request: {text[:200]}")

    return respond


def run_pdo(strategy: PDO, fake, **kwargs):
    kwargs = {"train_ratio": 1.0, "val_ratio": 0.0, "respond": duel_respond, **kwargs}
    return run_strategy(strategy, fake, **kwargs).result


def complete_trials(strategy: PDO) -> list[optuna.trial.FrozenTrial]:
    return strategy.store.trials()


# -- the search ------------------------------------------------------------------------------------
def test_pdo_finds_the_better_prompt_and_records_real_scores():
    strategy = PDO(mutation_frequency=2)
    result = run_pdo(strategy, reasoner(strict_mutant=True), max_iterations=6)

    assert result.baseline.mean == pytest.approx(1 / 3)
    # No initial variant is strict; a mutant of the careful variant is, wins its duels, and is selected.
    assert result.final.mean == 1.0
    best = result.iterations[result.selected_iteration - 1]
    assert "strict" in best.candidate["predictors"]["predict"]["instructions"].lower()
    records = strategy.store.records()
    champion = records[best.details["champion"]["fingerprint"]]
    assert champion["name"].startswith("m") and "mutation of" in champion["origin"]
    assert "careful" in records[champion["parent"]]["candidate"]["predictors"]["predict"]["instructions"].lower()
    assert any(d["first"] == champion["fingerprint"] or d["second"] == champion["fingerprint"]
               for d in best.details["duels"]), "the champion earned its place in duels"
    # The recorded score is the champion's metric score on the batch, never a win rate, and Δ is
    # measured against the previous champion on the same batch.
    previous = 1 / 3
    for it in result.iterations:
        assert it.score == pytest.approx(score_of(it.candidate["predictors"]["predict"]["instructions"]))
        assert it.delta == pytest.approx(it.score - previous)
        previous = it.score
        assert it.phase == "pdo" and it.strategy == "pdo"
        assert len(it.details["duels"]) == 3
        assert "Ranking by auto" in it.reasoning and "Duels this round" in it.reasoning


def test_without_gold_a_pairwise_judge_decides_with_random_order():
    seen: list[str] = []
    examples = [dspy.Example(input=ex.input).with_inputs("input") for ex in routing_examples(4)]
    opt = Reflex("judge", strategy=PDO(duels_per_round=4), task_lm=fake_lm(duel_respond, name="fake/task"),
                 reasoning_lm=fake_lm(reasoner(seen=seen), name="fake/reasoner"), max_iterations=2,
                 train_ratio=1.0, val_ratio=0.0, max_workers=2, score_threshold=1.0, early_stopping_patience=0)
    result = opt.compile(program_from_prompt("Say which team should handle the message."), trainset=examples).result

    duels = [d for it in result.iterations for d in it.details["duels"]]
    assert sum(d["judged"] for d in duels) == sum(d["wins"] + d["losses"] + d["ties"] for d in duels) > 0
    pairwise = [t for t in seen if "[[ ## response_a ## ]]" in t]
    positions = {"A" if _data(t, "response_a") in LABELS else "B" for t in pairwise
                 if (_data(t, "response_a") in LABELS) != (_data(t, "response_b") in LABELS)}
    assert positions == {"A", "B"}, "the better answer should be shown in both positions"
    assert "careful" in result.iterations[-1].candidate["predictors"]["predict"]["instructions"].lower()
    assert result.final.mean > result.baseline.mean


# -- the sampler -----------------------------------------------------------------------------------
def test_double_thompson_never_pairs_a_prompt_with_itself():
    rng = random.Random(7)
    for _ in range(300):
        ids = [f"p{i}" for i in range(rng.randint(2, 7))]
        duels = [Duel(*rng.sample(ids, 2), rng.randint(0, 9), rng.randint(0, 9), rng.randint(0, 2))
                 for _ in range(rng.randint(0, 12))]
        first, second = double_thompson(ids, WinMatrix(ids, duels), 1.2, rng)
        assert first != second and {first, second} <= set(ids)


def test_sampler_favours_the_prompt_that_keeps_winning():
    ids = ["a", "b", "c", "d"]
    duels = [Duel("a", x, 9, 1, 0) for x in "bcd"] + [Duel("b", "c", 5, 5, 0), Duel("c", "d", 5, 5, 0),
                                                      Duel("b", "d", 5, 5, 0)]
    rng = random.Random(0)
    firsts = [double_thompson(ids, WinMatrix(ids, duels), 1.2, rng)[0] for _ in range(200)]
    assert firsts.count("a") > 150
    # A prompt that never dueled goes first, so a fresh mutant is tested before anything else.
    assert double_thompson([*ids, "new"], WinMatrix([*ids, "new"], duels), 1.2, rng)[0] == "new"


def test_sampler_picks_pairs_through_optuna_trials():
    sampler = DuelSampler(seed=3)
    store = DuelStore.open(sampler, None, "unit")
    for i, name in enumerate("abc"):
        store.add({"fingerprint": name, "candidate": {}, "name": name, "born": [0, "w", i]})
    for _ in range(20):
        trial, first, second = store.begin({"worker": "w"})
        assert first != second
        assert trial.params["first"] != trial.params["second"]
        store.finish(trial, {"wins": 3, "losses": 1, "ties": 0}, 0.75)
    assert len(store.trials()) == 20
    assert isinstance(store.study.sampler, DuelSampler)


def test_a_run_never_duels_a_prompt_with_itself():
    strategy = PDO(duels_per_round=4, initial_pool_size=4)
    run_pdo(strategy, reasoner(), max_iterations=4)
    trials = complete_trials(strategy)
    assert len(trials) == 16
    assert all(t.user_attrs["first"] != t.user_attrs["second"] for t in trials)


# -- mutation and pruning ------------------------------------------------------------------------------
def test_new_mutants_duel_before_any_pruning():
    strategy = PDO(mutation_frequency=1, num_top_to_mutate=2, max_pool_size=4, initial_pool_size=6)
    result = run_pdo(strategy, reasoner(), max_iterations=6)
    attrs = strategy.store.study.user_attrs
    records = strategy.store.records()
    pruned = {k.removeprefix("pruned:"): v["round"] for k, v in attrs.items() if k.startswith("pruned:")}
    trials = complete_trials(strategy)
    mutants = [r for r in records.values() if r["name"].startswith("m")]
    assert mutants and pruned
    for fp, round_ in pruned.items():
        dueled = [t for t in trials if fp in (t.user_attrs["first"], t.user_attrs["second"])
                  and t.user_attrs["round"] <= round_]
        assert dueled, f"{records[fp]['name']} was pruned in round {round_} without a duel"
    # A mutant born in round r duels in round r + 1 (new prompts go first).
    for m in mutants:
        born = m["born"][0]
        if born < 6:
            assert any(m["fingerprint"] in (t.user_attrs["first"], t.user_attrs["second"])
                       and t.user_attrs["round"] == born + 1 for t in trials), m["name"]
    # Only prompts that dueled count against the cap; undueled mutants may exceed it until they duel.
    last = result.iterations[-1]
    dueled_now = [f for f in (r["fingerprint"] for r in strategy.store.pool())
                  if any(f in (t.user_attrs["first"], t.user_attrs["second"]) for t in trials)]
    assert len(dueled_now) <= 4 and last.details["pool_size"] >= len(dueled_now)


def test_refused_proposals_fall_back_honestly():
    def blank(system: str, messages: list[dict]) -> str:  # never writes any instructions
        return json.dumps({"change_summary": "nothing", "revised_instructions": ""})

    strategy = PDO(mutation_frequency=1)
    result = run_pdo(strategy, blank, max_iterations=2)
    variants = [r for r in strategy.store.records().values() if r["name"] != "initial"]
    assert len(variants) == 5 and len({r["fingerprint"] for r in variants}) == 5
    assert all("deterministic fallback" in r["origin"] and "empty instructions" in r["origin"] for r in variants)
    assert all(m.get("rejected") for it in result.iterations for m in it.details["mutants"])
    assert "refused" in result.iterations[0].reasoning and len(result.iterations) == 2


# -- rankers ---------------------------------------------------------------------------------------
def test_rankers_agree_on_a_clear_winner_and_undueled_prompts_rank_last():
    ids = ["a", "b", "c", "fresh"]
    duels = [Duel("a", "b", 8, 2, 0), Duel("b", "c", 7, 3, 0), Duel("c", "a", 1, 9, 0)]
    for name, ordering in rank_all(ids, duels).items():
        assert ordering == ["a", "b", "c", "fresh"], name
    for method in ("fused", "auto"):
        assert rank(method, ids, duels, dirichlet({"elo": 5}, random.Random(1)))[0][0] == "a"


def test_auto_weights_follow_the_dirichlet_alphas():
    rng = random.Random(0)
    weights = [dirichlet({"copeland": 1, "borda": 1, "elo": 60, "avg_winrate": 1}, rng)["elo"] for _ in range(50)]
    assert sum(weights) / len(weights) > 0.8
    rankings = {"copeland": ["x", "y"], "borda": ["x", "y"], "elo": ["y", "x"], "avg_winrate": ["x", "y"]}
    assert fuse(rankings, {"copeland": 0.05, "borda": 0.05, "elo": 0.85, "avg_winrate": 0.05}) == ["y", "x"]
    assert fuse(rankings, dict.fromkeys(rankings, 1.0)) == ["x", "y"]


def test_auto_rewards_rankers_whose_champion_keeps_winning():
    strategy = PDO(mutation_frequency=0)
    result = run_pdo(strategy, reasoner(), max_iterations=3)
    rewarded = [it.details["rewards"] for it in result.iterations[1:]]
    assert any(rewarded)
    alphas = strategy.store.alphas()
    assert all(alphas[n] == pytest.approx(1 + sum(r.get(n, 0) for r in rewarded)) for n in alphas)
    assert all(it.details["weights"] and sum(it.details["weights"].values()) == pytest.approx(1)
               for it in result.iterations)


# -- persistence -------------------------------------------------------------------------------------
def test_state_survives_a_resume(tmp_path):
    def make() -> PDO:
        return PDO(mutation_frequency=2, max_pool_size=5)

    reference, resumed = interrupted_then_resumed(make, reasoner(), tmp_path, at=3, max_iterations=6,
                                                  respond=duel_respond, train_ratio=1.0, val_ratio=0.0)
    assert len(reference.iterations) == 6
    assert comparable(reference) == comparable(resumed)
    assert [it.details["duels"] for it in reference.iterations] == [it.details["duels"] for it in resumed.iterations]


def test_two_processes_share_one_sqlite_study(tmp_path):
    url, name, rounds = f"sqlite:///{tmp_path / 'pdo.db'}", "shared-pdo", 3
    optuna.create_study(storage=url, study_name=name, direction="maximize")  # the schema, made once up front
    worker = Path(__file__).with_name("pdo_worker.py")
    procs = [subprocess.Popen([sys.executable, str(worker), url, name, str(tmp_path / f"run{i}"), str(rounds)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    workers = {out.strip().splitlines()[-1] for out, _ in outputs}
    assert len(workers) == 2

    store = DuelStore(optuna.load_study(study_name=name, storage=url))
    trials = store.trials()
    assert {t.user_attrs["worker"] for t in trials} == workers
    assert len(trials) == 2 * rounds * 3
    matrix = WinMatrix(list(store.records()), store.duels())
    counted = sum(t.user_attrs["wins"] + t.user_attrs["losses"] + t.user_attrs["ties"] for t in trials)
    assert matrix.total == counted > 0


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="ranking_method"):
        PDO(ranking_method="best")
    with pytest.raises(ValueError, match="study_name"):
        PDO(storage="sqlite:///x.db")
    assert PDO(duels_per_round=5).get_params()["duels_per_round"] == 5
