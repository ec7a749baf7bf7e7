"""aevyra-reflex's live-run marker (issue 19): their RunStore and dashboard show a reflex_dspy run
that is still going as `running`, and as `interrupted`/`completed` once it stops; our `run.pid` stays.

The fake reasoning model looks at the run directory from inside the run (each proposal it is asked
for), through aevyra-reflex 0.2.0's own `RunStore` and its own dashboard server on a loopback port.
"""

from __future__ import annotations

import os

import pytest
from aevyra_kit import get_their_json, their_dashboard_over
from aevyra_reflex.run_store import RunStore as TheirStore
from conftest import ScriptedReasoner, routing_respond
from strategy_kit import run_strategy

from reflex_dspy.tracking.base import Tracker
from reflex_dspy.tracking.store import RunStore


@pytest.fixture
def their_dashboard(tmp_path):
    with their_dashboard_over(tmp_path / ".reflex") as url:
        yield url


class Watcher(ScriptedReasoner):
    """Records how both stores and their dashboard see run 001 each time a proposal is asked for;
    raises `stop_with` at call number `stop_at` (1-based) to end the run that way."""

    def __init__(self, root, dashboard: str, stop_at: int = 0, stop_with: BaseException | None = None):
        super().__init__(["Be verbose about the team."])  # "verbose": below 1.0, both iterations run
        self.root, self.dashboard, self.stop_at, self.stop_with = root, dashboard, stop_at, stop_with
        self.views: list[tuple] = []

    def __call__(self, system: str, messages: list[dict]) -> str:
        theirs = TheirStore(self.root).get_run("001")
        [row] = TheirStore(self.root).list_runs()
        served = get_their_json(f"{self.dashboard}/api/runs/001")
        self.views.append((row.status, theirs.is_running, served["status"], served["is_running"],
                           theirs.running_path.read_text(), RunStore(self.root).get_run("001").status))
        if len(self.views) == self.stop_at:
            raise self.stop_with
        return super().__call__(system, messages)


class Broken(Tracker):
    """A tracker with a bug: the run stops on its exception and is `failed`."""

    def on_iteration(self, record) -> None:
        raise RuntimeError("disk on fire")


def _run(root, reasoner: Watcher, trackers=(), resume: str | None = None):
    """Two iterative iterations on the routing fakes, one worker, no MLflow."""
    return run_strategy("iterative", reasoner, respond=routing_respond, run_dir=root, trackers=tuple(trackers),
                        resume=resume, mlflow=False, max_iterations=2, max_workers=1)


def _after(root) -> tuple:
    run = TheirStore(root).get_run("001")
    [row] = TheirStore(root).list_runs()
    ours = RunStore(root).get_run("001")
    return row.status, run.running_path.exists(), ours.file("run.pid").exists(), ours.status


LIVE = ("running", True, "running", True, str(os.getpid()), "running")


def test_a_live_run_is_running_for_their_store_and_dashboard_then_completed(tmp_path, their_dashboard):
    root = tmp_path / ".reflex"
    reasoner = Watcher(root, their_dashboard)
    _run(root, reasoner)
    assert reasoner.views and all(view == LIVE for view in reasoner.views)  # after the first checkpoint too
    assert _after(root) == ("completed", False, False, "completed")


def test_an_interrupted_run_drops_the_marker_and_a_resume_sets_it_again(tmp_path, their_dashboard):
    root = tmp_path / ".reflex"
    stopped = Watcher(root, their_dashboard, stop_at=2, stop_with=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        _run(root, stopped)
    assert stopped.views == [LIVE, LIVE]
    assert _after(root) == ("interrupted", False, False, "interrupted")
    assert get_their_json(f"{their_dashboard}/api/runs/001")["status"] == "interrupted"

    resumed = Watcher(root, their_dashboard)
    _run(root, resumed, resume="001")
    assert resumed.views == [LIVE]  # the interrupted proposal is asked again, with the marker back
    assert _after(root) == ("completed", False, False, "completed")


def test_a_failed_run_drops_the_marker(tmp_path, their_dashboard):
    root = tmp_path / ".reflex"
    failing = Watcher(root, their_dashboard)
    with pytest.raises(RuntimeError, match="disk on fire"):
        _run(root, failing, [Broken()])
    assert failing.views == [LIVE]
    # Theirs has no `failed`: a run with a checkpoint and no live marker is `interrupted` there.
    assert _after(root) == ("interrupted", False, False, "failed")
