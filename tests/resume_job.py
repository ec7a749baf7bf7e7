"""A real optimization in its own process, for the kill -9 / resume tests (tests/test_resume.py).

    python resume_job.py RUN_ROOT CALL_LOG [--kill-at KIND:N] [--resume RUN_ID]

Fake models, real everything else (run layout, SQLite MLflow store, journal). Every model
call that gets an answer appends one line ("task" or "reason") to CALL_LOG, and progress
labels are logged as "# label" lines, so the test can count paid calls and aim kills.
`--kill-at` sends SIGKILL to this process: `task:N` / `reason:N` just before the Nth call
of that kind is answered (so that call is unpaid), `iteration:N` / `checkpoint:N` / `final:1`
from a tracker that runs before the run's own writers record that event.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import routing_examples, routing_respond  # noqa: E402
from fakes import fake_lm  # noqa: E402

from reflex_dspy import Reflex  # noqa: E402
from reflex_dspy.adapters import program_from_prompt  # noqa: E402
from reflex_dspy.tracking import Tracker  # noqa: E402

INITIAL = "Say which team should handle the message."
PROPOSALS = [
    "Be verbose. Explain which of billing, shipping, technical applies.",
    "Be verbose and thorough about whether billing, shipping or technical applies.",
    "Route the message. Answer with one word: billing, shipping or technical.",
]


def reasoner(system: str, messages: list[dict]) -> str:
    """Stateless, so a resumed process answers exactly as the first one would have."""
    n = messages[-1]["content"].count("Iter ")
    return json.dumps({
        "failure_patterns": "outputs are sentences, not labels",
        "change_summary": f"proposal {n + 1}",
        "revised_instructions": PROPOSALS[min(n, len(PROPOSALS) - 1)],
    })


class Calls:
    def __init__(self, log: Path, kill_at: str | None) -> None:
        self.log = open(log, "a", encoding="utf-8")  # noqa: SIM115 (lives as long as the process)
        self.kind, _, n = (kill_at or ":").partition(":")
        self.n = int(n or 0)
        self.counts = {"task": 0, "reason": 0}

    def write(self, line: str) -> None:
        self.log.write(line + "\n")
        self.log.flush()

    def wrap(self, kind: str, respond):
        def answer(system: str, messages: list[dict]) -> str:
            self.counts[kind] += 1
            if self.kind == kind and self.counts[kind] == self.n:
                os.kill(os.getpid(), signal.SIGKILL)
            text = respond(system, messages)
            self.write(kind)
            return text

        return answer


class Killer(Tracker):
    """Logs progress labels and kills the process at a lifecycle event."""

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def _maybe_kill(self, kind: str, n: int) -> None:
        if self.calls.kind == kind and self.calls.n == n:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_progress(self, label, done, total):
        if done == 0:
            self.calls.write(f"# {label}")

    def on_iteration(self, record):
        self._maybe_kill("iteration", record.iteration)

    def on_checkpoint(self, state):
        if not state["search_done"]:
            self._maybe_kill("checkpoint", state["iteration"])

    def on_status(self, phase, detail=""):
        if phase == "evaluating best":
            self._maybe_kill("final", 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("log")
    parser.add_argument("--kill-at")
    parser.add_argument("--resume")
    args = parser.parse_args()
    calls = Calls(Path(args.log), args.kill_at)
    optimizer = Reflex(
        "exact",
        strategy="iterative",
        task_lm=fake_lm(calls.wrap("task", routing_respond), name="fake/task"),
        reasoning_lm=fake_lm(calls.wrap("reason", reasoner), name="fake/reasoner"),
        trackers=[Killer(calls)],
        run_dir=args.root,
        max_workers=1,
        max_iterations=5,
        early_stopping_patience=0,
        score_threshold=1.0,
        metadata={"dataset_path": "routing"},
    )
    program = optimizer.compile(program_from_prompt(INITIAL), trainset=routing_examples(), resume=args.resume)
    print(json.dumps({"run_id": program.run_id}))


if __name__ == "__main__":
    main()
