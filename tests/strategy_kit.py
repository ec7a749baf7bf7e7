"""Shared helpers for strategy tests: a demo-aware fake task model, running a strategy through
`Reflex`, and checking that a run interrupted after an iteration resumes to the same result.

Fake reasoning models used with `interrupted_then_resumed` must be stateless (answer from what
they are shown, not from a call counter) and have a fixed name: a resumed run replays the
replies it already paid for, so only the unpaid ones reach the fake again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dspy
from conftest import LABELS, routing_examples, routing_respond, truth
from fakes import fake_lm

from reflex_dspy import Reflex
from reflex_dspy.adapters import program_from_prompt
from reflex_dspy.tracking import Tracker
from reflex_dspy.tracking.store import RunStore

INITIAL = "Say which team should handle the message."


def demo_labels(messages: list[dict]) -> set[str]:
    """Labels the model was shown as bare demo answers (assistant turns before the last input)."""
    return {m["content"].strip() for m in messages[:-1] if m["role"] == "assistant"} & set(LABELS)


def routing_with_demos(system: str, messages: list[dict]) -> str:
    """The routing fake, also taught by demos.

    - instructions that say "verbose": always a sentence;
    - instructions listing every label: the bare correct label;
    - otherwise the bare label when the message is billing or its label was shown as a bare
      demo answer, else a sentence. So demos covering more labels score higher.
    """
    label = truth(messages[-1]["content"])
    if label in demo_labels(messages) and "verbose" not in system.lower():
        return label
    return routing_respond(system, messages)


def run_strategy(
    strategy: Any,
    reasoner: Callable[[str, list[dict]], str],
    *,
    respond: Callable[[str, list[dict]], str] = routing_with_demos,
    examples: list[dspy.Example] | None = None,
    initial: str = INITIAL,
    trackers: tuple[Tracker, ...] = (),
    resume: Any = None,
    **kwargs: Any,
) -> dspy.Module:
    """Compile `program_from_prompt(initial)` with `strategy` (a name or an instance) on fakes."""
    kwargs.setdefault("max_workers", 2)
    kwargs.setdefault("early_stopping_patience", 0)
    kwargs.setdefault("score_threshold", 1.0)
    opt = Reflex(
        "exact",
        strategy=strategy,
        task_lm=fake_lm(respond, name="fake/task"),
        reasoning_lm=fake_lm(reasoner, name="fake/reasoner"),
        trackers=trackers,
        **kwargs,
    )
    return opt.compile(program_from_prompt(initial), trainset=examples or routing_examples(), resume=resume)


class InterruptAt(Tracker):
    """Stops the run (as Ctrl-C would) when iteration `n` is recorded, before its checkpoint."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_iteration(self, record) -> None:
        if record.iteration == self.n:
            raise KeyboardInterrupt


def comparable(result: Any) -> dict[str, Any]:
    """What must be equal between an uninterrupted run and an interrupted-then-resumed one."""
    return {
        "iterations": [(r.iteration, r.phase, r.strategy, r.fingerprint, r.score, r.val_score)
                       for r in result.iterations],
        "selected": result.selected_iteration,
        "final": result.final.mean,
        "usage": result.usage,
    }


def interrupted_then_resumed(make_strategy: Callable[[], Any], reasoner, root: Path, at: int, **kwargs: Any):
    """(uninterrupted result, resumed result): the second run is stopped at iteration `at`, then
    resumed in a fresh strategy instance from its checkpoint."""
    reference = run_strategy(make_strategy(), reasoner, run_dir=root / "a", **kwargs).result
    try:
        run_strategy(make_strategy(), reasoner, run_dir=root / "b", trackers=(InterruptAt(at),), **kwargs)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError(f"the run ended before iteration {at}")
    (run,) = RunStore(root / "b").list_runs()
    resumed = run_strategy(make_strategy(), reasoner, run_dir=root / "b", resume=run.run_id, **kwargs).result
    return reference, resumed
