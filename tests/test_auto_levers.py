"""auto finds the one lever a task has, from measurements: fake task models whose only lever is
demos, only the label set, or only the layout. The data's facts (the label set) are tried on their
own first; every axis is probed before the budget follows the gains, whatever the reasoning model
would say (it writes only unusable replies here)."""

from __future__ import annotations

import json
import re

import pytest
from fakes import LABELS, truth
from strategy_kit import demo_labels, run_strategy

from reflex_dspy.strategies.auto import AXES, Auto
from reflex_dspy.tracking.store import RunStore

LAYOUT_MARKERS = ("## Task", "<task>", "Task:", "Work through these steps")


def unreachable(messages: list[dict]) -> bool:
    """Customer 0's messages are never answered right, so no run stops at the threshold early."""
    return messages[-1]["content"].count("Customer 0:") > 0


def demos_only(system: str, messages: list[dict]) -> str:
    label = truth(messages[-1]["content"])
    right = label in demo_labels(messages) and not unreachable(messages)
    return label if right else f"This is about {label}."


def label_set_only(system: str, messages: list[dict]) -> str:
    label = truth(messages[-1]["content"])
    right = all(lbl in system.lower() for lbl in LABELS) and not unreachable(messages)
    return label if right else f"This is about {label}."


def layout_only(system: str, messages: list[dict]) -> str:
    label = truth(messages[-1]["content"])
    right = any(m in system for m in LAYOUT_MARKERS) and not unreachable(messages)
    return label if right else f"This is about {label}."


def unhelpful_reasoner(system: str, messages: list[dict]) -> str:
    """Every rewrite empty (refused), and it would always send auto to structural if it were asked."""
    prompt = system + messages[-1]["content"]
    if "available_axes" in prompt:
        return json.dumps({"reason": "layout always matters", "axis": "structural"})
    if "restructured_instructions" in prompt:
        return json.dumps({"change_summary": "-", "restructured_instructions": ""})
    return json.dumps({"failure_patterns": "-", "change_summary": "-", "revised_instructions": ""})


@pytest.mark.parametrize(("respond", "levers", "params"), [
    (demos_only, {"fewshot", "joint"}, {}),
    (label_set_only, {"facts"}, {}),
    (label_set_only, {"iterative", "joint", "pdo"}, {"state_facts": False}),  # the axes find it too
    (layout_only, {"structural", "pdo"}, {}),
], ids=["demos", "label-set", "label-set-via-axes", "layout"])
def test_auto_probes_every_axis_and_spends_on_the_lever(respond, levers, params, tmp_path):
    from fakes import routing_examples

    auto = Auto(**params)
    program = run_strategy(auto, unhelpful_reasoner, respond=respond, examples=routing_examples(4),
                           run_dir=tmp_path, track=False, max_iterations=60, max_metric_calls=500,
                           train_ratio=1.0, val_ratio=0.0, score_threshold=1.0)
    result = program.result
    phases = auto.phases[1:] if auto.phases[0]["kind"] == "opening" else auto.phases
    probes = [p["axis"] for p in phases if p["kind"] == "probe"]
    assert sorted(probes) == sorted(AXES)  # every axis probed once ...
    assert [p["kind"] for p in phases[: len(AXES)]] == ["probe"] * len(AXES)  # ... before anything else
    gained = {p["axis"] for p in auto.phases if (p["gain"] or 0) > 0.005}
    assert gained and gained <= levers, auto.phases
    assert result.final.mean > result.baseline.mean + 0.3
    assert result.usage["search_calls"] >= 0.8 * 500 or "converged" not in result.stop_reason
    # After the probes, the budget goes to the axes that gained (the first rung holds only those),
    # or, when no probe gained (the opening took the lever), to the first half in probe order.
    after = [r for r in result.iterations if r.details["auto"]["kind"] not in ("probe", "opening")]
    assert after or result.stop_reason.startswith("score threshold"), result.stop_reason
    first_rung = [r.phase for r in after if r.details["auto"]["kind"] == "rung 1"]
    probe_gains = gained - {"facts"}
    assert set(first_rung) <= (probe_gains or set(auto.probe_order()[:3])), (first_rung, gained)


@pytest.mark.parametrize(("respond", "levers"), [
    (demos_only, {"fewshot", "joint"}),
    (label_set_only, {"facts"}),
], ids=["demos", "label-set"])
def test_auto_finds_the_lever_at_the_bench_budget_with_a_val_split(respond, levers, tmp_path):
    """The bench's shape (16 train, 8 val, 150 calls): a probe affords a few batch examples only,
    and on a demo probe those mostly lent the demos. Measured on val, demos still show their gain
    and get the budget (measured on the probe's batch, demos gained nothing and never got a rung)."""
    from fakes import routing_examples

    auto = Auto()
    examples = routing_examples(16)  # 48: 16 / 8 / 24 with the ratios below
    program = run_strategy(auto, unhelpful_reasoner, respond=respond, examples=examples,
                           run_dir=tmp_path, track=False, max_iterations=50, max_metric_calls=150,
                           train_ratio=0.5, val_ratio=1 / 6, score_threshold=1.0, max_workers=1)
    result = program.result
    assert (result.split_sizes["train"], result.split_sizes["val"]) == (16, 8)
    assert all(p["scored_on"] == 8 for p in auto.phases), auto.phases  # every gain measured on val
    gained = {p["axis"] for p in auto.phases if (p["gain"] or 0) > 0.005}
    if result.stop_reason.startswith("score threshold"):  # the running phase reached it: its axis gained
        gained.add(result.iterations[-1].phase)
    assert gained and gained <= levers, auto.phases
    after = [r.phase for r in result.iterations if r.details["auto"]["kind"] not in ("probe", "opening")]
    # After the probes, only the axes that gained; none did when the opening took the lever.
    assert set(after) <= (gained - {"facts"} or set(auto.probe_order()[:3])), (after, gained)
    assert after or result.stop_reason.startswith("score threshold"), result.stop_reason
    assert result.final.mean > result.baseline.mean + 0.3


def test_a_demo_phase_measured_on_val_scores_its_sets_there_only(tmp_path):
    """Where validation measures a phase (and scores every step's set anyway), a batch score would
    decide nothing: a demo set costs one validation pass and nothing on the batch, and sets draw on
    all of train (a batch score leaves its demos' sources out, which capped the sets)."""
    from fakes import routing_examples

    auto = Auto(axes=["fewshot"])
    program = run_strategy(auto, unhelpful_reasoner, respond=demos_only, examples=routing_examples(16),
                           run_dir=tmp_path, track=False, max_iterations=50, max_metric_calls=150,
                           train_ratio=0.5, val_ratio=1 / 6, score_threshold=1.0, max_workers=1)
    result = program.result
    n_val = round(48 / 6)
    steps = [r for r in result.iterations if r.details.get("selected")]
    assert steps, [r.details for r in result.iterations]
    for r in steps:
        assert r.details["auto"]["probe_batch"] is None and r.details["scored_on"] == 0 and r.score is None
        assert r.val_score is not None  # validation scored the set: that is what auto compares
        labeled = r.details["set_kind"] == "labeled"  # the other kinds pay for a bootstrap first
        check = r.details.get("threshold_check")  # a set that reached 1.0 on val, checked on train too
        assert not labeled or r.metric_calls - (check["train_examples"] if check else 0) <= n_val, (
            r.metric_calls, r.details)
    assert max(r.details["set_size"] for r in steps) == 16  # every train example can be a demo
    assert result.final.mean > result.baseline.mean + 0.3


def test_with_a_tiny_validation_set_demo_sets_are_scored_on_the_batch(tmp_path):
    """Below `MIN_PROBE_BATCH` validation examples auto measures its phases on the batch, so its demo
    sets are scored there (a set scored on 2 validation examples alone could not show a gain)."""
    from fakes import routing_examples

    auto = Auto(axes=["fewshot", "joint"])
    program = run_strategy(auto, unhelpful_reasoner, respond=demos_only, examples=routing_examples(4),
                           run_dir=tmp_path, track=False, max_iterations=6, max_metric_calls=150,
                           train_ratio=0.75, val_ratio=0.2, score_threshold=1.0, max_workers=1)
    result = program.result
    assert result.split_sizes["val"] < 4
    demo_steps = [r for r in result.iterations if r.phase in ("fewshot", "joint")]
    assert demo_steps and all(r.score is not None for r in demo_steps), [(r.phase, r.details) for r in demo_steps]


def never_right(system: str, messages: list[dict]) -> str:
    return f"This is about {truth(messages[-1]['content'])}."


def counting_reasoner(system: str, messages: list[dict]) -> str:
    """A greedy proposer: its rewrite depends only on how many earlier rewrites the prompt shows."""
    n = messages[-1]["content"].count("Iter ")
    return json.dumps({"failure_patterns": "-", "change_summary": f"rewrite {n}",
                       "revised_instructions": f"Say which team handles the message (attempt {n})."})


def test_a_later_phase_of_an_axis_tries_what_the_earlier_ones_did_not(tmp_path):
    """Nothing gains here, so the rungs run each axis again from the same handed-on candidate. Started
    afresh, a greedy reasoning model wrote the probe's rewrite again and fewshot drew the probe's sets
    again: the phase measured nothing new and its "no gain" counted towards convergence. Each later
    phase takes up the axis's memory (the rewrite log, the sets tried) and tries new candidates."""
    from fakes import routing_examples

    # Phases of two iterations at most: a lone arm's rung (here iterative's, 25-50 calls an iteration) that
    # ran until 20% of the budget is left would end the run converged before the axes are reopened.
    auto = Auto(axes=["iterative", "fewshot"], phase_iterations={"iterative": 2, "fewshot": 2})
    program = run_strategy(auto, counting_reasoner, respond=never_right, examples=routing_examples(16),
                           run_dir=tmp_path, track=False, max_iterations=50, max_metric_calls=250,  # the search gets 225 (confirmation.py holds 25 back)
                           train_ratio=0.5, val_ratio=1 / 6, score_threshold=1.0, max_workers=1)
    result = program.result
    seen: dict[str, set[str]] = {"iterative": set(), "fewshot": set()}
    later = 0
    for number in sorted({r.details["phase_number"] for r in result.iterations if r.phase in seen}):
        records = [r for r in result.iterations if r.details.get("phase_number") == number]
        axis = records[0].phase
        tried = ({f for r in records for f in re.findall(r"Change: (rewrite \d+)", r.reasoning)}
                 if axis == "iterative" else {r.fingerprint for r in records if r.details.get("selected")})
        assert tried, (number, axis, [r.reasoning for r in records])
        assert not tried & seen[axis], (number, axis, [r.change_summary for r in records])
        later += bool(seen[axis])
        seen[axis] |= tried
    assert later >= 2, [(p["axis"], p["kind"]) for p in auto.phases]  # both axes ran again


def test_a_run_that_converges_has_spent_four_fifths_of_its_whole_budget(tmp_path):
    """Measured on the bench: counted on the search's own share (150 less the 15 calls held back to
    confirm the pick, less the baseline), routing seed 0 converged after 118 of 150 calls, and the
    held calls went unspent (no close call). "Converged" now needs at most 20% of the *whole*
    budget left, the held calls counted as unspent: here at most 30 - 15 search calls."""
    from types import SimpleNamespace

    from fakes import routing_examples

    auto = Auto()
    program = run_strategy(auto, counting_reasoner, respond=never_right, examples=routing_examples(16),
                           run_dir=tmp_path, track=False, max_iterations=60, max_metric_calls=150,
                           train_ratio=0.5, val_ratio=1 / 6, score_threshold=1.0, max_workers=1)
    result = program.result
    assert not result.stop_reason.startswith("score threshold"), result.stop_reason  # nothing gains here
    assert result.usage["search_calls"] >= 0.8 * 150, (result.usage, result.stop_reason)
    assert auto.s.alloc.converge_left == 15
    # The routing seed-0 moment: every axis probed, the last phase gained nothing, 17 search calls left.
    auto.s.finished, auto.s.alloc.queue = None, []
    auto.s.phases = [*auto.s.phases, {"axis": "pdo", "kind": "rung 2", "gain": 0.0, "metric_calls": 10}]
    ctx = SimpleNamespace(config=SimpleNamespace(max_iterations=60))
    assert auto._finish_reason(SimpleNamespace(budget_left=17, **vars(ctx)), iteration=20) is None
    assert "converged" in auto._finish_reason(SimpleNamespace(budget_left=15, **vars(ctx)), iteration=20)


def test_a_budget_is_the_limit_when_max_iterations_is_left_at_its_default(tmp_path, monkeypatch):
    """auto's phases are iterations: with the default cap of 10 a run ended after its probes and
    three more phases, over a third of its budget unspent (230 of 400 calls spent here). Left at
    its default, `max_iterations` rises to the budget (the run's config says so; progress shows
    no iteration cap); a cap the user sets is kept."""
    from fakes import routing_examples

    import reflex_dspy.lifecycle
    from reflex_dspy.progress import status_text
    from reflex_dspy.tracking import Tracker

    class Beats(Tracker):
        def __init__(self):
            self.beats = []

        def on_heartbeat(self, state):
            self.beats.append(state)

    def demos_help_most(system: str, messages: list[dict]) -> str:  # every fourth customer: never right
        number = int(re.search(r"Customer (\d+)", messages[-1]["content"]).group(1))
        return "unsure" if number % 4 == 0 else demos_only(system, messages)

    def run(**cap):
        beats = Beats()
        result = run_strategy(Auto(), unhelpful_reasoner, respond=demos_help_most, examples=routing_examples(16),
                              run_dir=tmp_path, mlflow=False, max_metric_calls=400, train_ratio=0.5,
                              val_ratio=1 / 6, max_workers=1, trackers=(beats,), **cap).result
        shown = [status_text(b) for b in beats.beats if b["iteration"]]
        return result, RunStore(tmp_path).get_run(result.run_id).load_config()["optimizer_config"], shown

    monkeypatch.setattr(reflex_dspy.lifecycle, "HEARTBEAT_SECONDS", 0.02)
    free, recorded, shown = run()
    assert free.stop_reason != "max iterations" and len(free.iterations) > 10, free.stop_reason
    assert free.usage["search_calls"] >= 0.8 * 400, free.usage
    assert recorded["max_iterations"] == 400
    assert shown and all(re.match(r"iter \d+ · calls \d+/400", line) for line in shown), shown[:3]
    capped, recorded, shown = run(max_iterations=10)
    assert capped.stop_reason == "max iterations" and len(capped.iterations) == 10
    assert recorded["max_iterations"] == 10
    assert shown and all(re.match(r"iter \d+/10 · calls", line) for line in shown), shown[:3]
