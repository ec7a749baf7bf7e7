"""What one evaluator call asks for and hands back: groups of (candidate, examples) requests, and
each request's results cut from the planned union of its candidate's examples.

Apart from the Evaluator's scheduling because it is pure bookkeeping over plans, the part of an
evaluation that decides which pair counts as new, cached or asked twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dspy

from reflex_dspy.candidate import Candidate
from reflex_dspy.data import example_id
from reflex_dspy.eval_results import EvalResult


@dataclass(frozen=True)
class Group:
    """One evaluation of `Evaluator.evaluate_groups`: its (candidate, examples) requests, whether
    the search budget pays for it (reporting on test does not), and which pass it is."""

    requests: Sequence[tuple[Candidate, Sequence[dspy.Example]]]
    budgeted: bool = True
    eval_pass: int = 0


def answers(requests: Sequence[tuple[Candidate, list[dspy.Example]]], plans: Mapping[str, tuple]) -> list[EvalResult]:
    """Each request's results on exactly its examples; a pair asked for twice counts once (first request).

    Identical requests get the same `EvalResult` object, as if the duplicate had not been asked.
    """
    out: dict[tuple[str, tuple[str, ...]], EvalResult] = {}
    counted: set[tuple[str, str]] = set()
    for c, examples in requests:
        ids = tuple(dict.fromkeys(map(example_id, examples)))
        if (c.fingerprint, ids) in out:
            continue
        results, todo, replayed = plans[c.fingerprint]
        new = {eid for eid, _ in todo}
        paid = new | {key[1] for key in replayed}
        fresh = [eid for eid in ids if (c.fingerprint, eid) not in counted]
        counted.update((c.fingerprint, eid) for eid in fresh)
        out[c.fingerprint, ids] = EvalResult(c.fingerprint, {eid: results[eid] for eid in ids},
                                             new_calls=sum(e in new for e in fresh),
                                             cache_hits=sum(e not in paid for e in fresh))
    return [out[c.fingerprint, tuple(dict.fromkeys(map(example_id, examples)))] for c, examples in requests]
