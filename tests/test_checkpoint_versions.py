"""The versioned checkpoint (issue 20, item 4): one `Checkpoint` dataclass (tracking/schema.py)
is built by the lifecycle, handed to trackers, written as checkpoint.json version 2 and read back;
version-1 files (no `version`: the older engine names of tests/data/layout_v0, or the shared names
written before the version existed) are still read and resumed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aevyra_reflex.run_store import RunStore as TheirStore
from conftest import ScriptedReasoner, routing_examples, routing_respond
from fakes import fake_lm

from reflex_dspy import Reflex
from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.errors import UsageError
from reflex_dspy.strategies.gepa import GepaState
from reflex_dspy.strategies.iterative import IterativeState
from reflex_dspy.strategies.structural import StructuralState
from reflex_dspy.tracking.schema import CHECKPOINT_VERSION, Checkpoint
from reflex_dspy.tracking.store import RunStore

V0_CHECKPOINT = next((Path(__file__).parent / "data" / "layout_v0" / "runs").iterdir()) / "checkpoint.json"
PROMPT = "Say which team should handle the message."


def _checkpoint() -> Checkpoint:
    return Checkpoint(
        iteration=2, strategy="iterative", strategy_state={"turn": 2, "log": []}, rng_state=[3, [1, 2], None],
        stop_reason=None, initial_val=0.5, best_val=0.75, stale=1,
        best={"iteration": 1, "score": 0.75, "by": "val", "prompt": "Route it."},
        trajectories={"train": [0.5, 0.25], "val": [0.75, 0.5]},
        evaluator={"usage": {"metric_calls": 40}, "paid_entries": 41}, elapsed_seconds=1.5, updated="2026-12-06",
    )


def test_a_checkpoint_round_trips_through_the_file_as_version_2():
    checkpoint = _checkpoint()
    doc = json.loads(json.dumps(checkpoint.document({"run_id": "007", "initial_prompt": "Route."})))
    assert doc["version"] == CHECKPOINT_VERSION == 2
    # aevyra-reflex's names, as their resume reads them
    assert (doc["completed_iterations"], doc["best_prompt"], doc["best_score"], doc["best_iteration"]) == (
        2, "Route it.", 0.75, 1)
    assert (doc["score_trajectory"], doc["val_trajectory"], doc["run_id"]) == ([0.5, 0.25], [0.75, 0.5], "007")
    assert doc["paid_entries"] == 41 and doc["accumulated_duration_seconds"] == 1.5
    assert Checkpoint.from_document(doc) == checkpoint
    state = checkpoint.to_state()  # what trackers receive: the engine's names
    assert (state["iteration"], state["search_done"], state["paid_entries"], state["version"]) == (2, False, 41, 2)
    assert Checkpoint.from_state(state) == checkpoint
    assert Checkpoint.from_state(Checkpoint(**{**vars(_checkpoint()), "stop_reason": "max iterations"})
                                 .to_state()).search_done


def test_version_1_checkpoints_of_either_layout_are_read():
    old = json.loads(V0_CHECKPOINT.read_text())  # the engine's own names, no version
    assert "version" not in old and "iteration" in old
    checkpoint = Checkpoint.from_document(old)
    assert (checkpoint.iteration, checkpoint.strategy, checkpoint.stale, checkpoint.best_val) == (
        1, "iterative", 1, 0.5)
    assert checkpoint.strategy_state["turn"] == 1 and checkpoint.rng_state == old["rng_state"]
    assert checkpoint.evaluator == {"usage": old["usage"], "paid_entries": 44}
    assert checkpoint.best["prompt"] == PROMPT and checkpoint.trajectories == {"train": [0.0], "val": [0.0]}
    assert checkpoint.elapsed_seconds == 0.088 and checkpoint.stop_reason is None
    # The shared names without a version (what the code wrote before version 2) read the same.
    shared = checkpoint.document({"run_id": "001"})
    del shared["version"]
    assert Checkpoint.from_document(shared) == checkpoint


@pytest.mark.parametrize("version", [3, "2", 0, True])
def test_a_checkpoint_of_an_unknown_version_is_refused_in_one_line(version):
    doc = {**_checkpoint().document({}), "version": version}
    with pytest.raises(UsageError, match=r"^checkpoint.json: version .* is not one this reflex_dspy reads \(1 to 2\)$"):
        Checkpoint.from_document(doc)


def test_a_run_interrupted_with_a_version_1_checkpoint_resumes_and_writes_version_2(tmp_path):
    root = tmp_path / ".reflex"

    def optimizer(reasoner) -> Reflex:
        return Reflex("exact", strategy="iterative", task_lm=fake_lm(routing_respond), run_dir=root, mlflow=False,
                      reasoning_lm=fake_lm(reasoner, name="fake/reasoner"), max_iterations=3,
                      early_stopping_patience=0, score_threshold=1.0, max_workers=1)

    class StopAtSecond(ScriptedReasoner):
        def __call__(self, system, messages):
            if len(self.seen) == 1:
                raise KeyboardInterrupt
            return super().__call__(system, messages)

    with pytest.raises(KeyboardInterrupt):
        optimizer(StopAtSecond(["Be verbose about the team."])).compile(
            program_from_prompt(PROMPT), trainset=routing_examples())
    run = RunStore(root).get_run("001")
    path = run.file("checkpoint.json")
    doc = json.loads(path.read_text())
    assert doc["version"] == 2 and doc["completed_iterations"] == 1
    path.write_text(json.dumps({**doc, "version": 3}))  # from a newer reflex_dspy: refused before any call
    refused = ScriptedReasoner(["never asked"])
    with pytest.raises(UsageError, match=r"^run 001: checkpoint.json: version 3 is not one this reflex_dspy reads"):
        optimizer(refused).compile(program_from_prompt(PROMPT), trainset=routing_examples(), resume="001")
    assert refused.seen == [] and json.loads(path.read_text())["version"] == 3
    del doc["version"]  # as the code before version 2 wrote it
    path.write_text(json.dumps(doc))

    reasoner = ScriptedReasoner(["Be verbose about the team.", "List billing, technical and account."])
    resumed = optimizer(reasoner).compile(program_from_prompt(PROMPT), trainset=routing_examples(), resume="001")
    assert len(reasoner.seen) == 2  # iterations 2 and 3 only: iteration 1 came from the checkpoint
    assert [r.iteration for r in resumed.result.iterations] == [1, 2, 3] and run.status == "completed"
    final = json.loads(path.read_text())
    assert final["version"] == 2 and final["completed_iterations"] == 3 and final["search_done"] is True
    assert TheirStore(root).get_run("001").load_checkpoint().completed_iterations == 3  # their reader takes v2


def test_strategy_states_are_dataclasses_that_read_what_the_dict_code_wrote():
    old = json.loads(V0_CHECKPOINT.read_text())["strategy_state"]  # Iterative's state, as the dict code wrote it
    state = IterativeState.from_dict(old)
    assert state.turn == 1 and state.log[0].summary == "proposal 1" and state.current.render() == PROMPT
    assert state.to_dict() == old
    current = state.current.to_dict()
    structural = {"current": current, "turn": 3, "stats": {"bullets": {"tries": 2, "wins": 1, "hurts": 0,
                  "delta_sum": 0.25}}, "log": [{"iteration": 1, "transform": "bullets"}], "empty_rounds": 1,
                  "n_predictors": 2}
    assert StructuralState.from_dict(structural).to_dict() == structural
    assert StructuralState.from_dict(structural).stats["bullets"].mean_delta == 0.125
    gepa = {"initial": current, "ran": True, "found": [{"gepa_score": 0.5}], "emitted": 1, "summary": {"candidates": 2}}
    assert GepaState.from_dict(gepa).to_dict() == gepa
    assert GepaState.from_dict({}) == GepaState() and StructuralState.from_dict({}) == StructuralState()
