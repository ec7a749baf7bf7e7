"""Close calls on a small validation split, settled on train examples no contender learned from.

Validation is small in prompt optimization and a run scores a dozen candidates on it: in the
bench's auto runs (8 validation examples) three to six candidates tied the best validation
score, and the tie went to the earliest; one run stopped at the score threshold on a 4-demo set
that scored 8 of 8 on validation and 16 of 24 on test. Scoring the close contenders on more
examples needs no judgement: the train examples, those no contender shows as a demo first, and
where those run out, each scored on a contender without the demo that shows it (leave-one-out: a
demo's source would be a free answer, and a demo set drawn from all of train, the common case
with 16 train examples, could otherwise be confirmed on nothing).
So the run holds back a small part of its call budget (`CONFIRM_SHARE`) from the search, and

- the pick: the candidates within `CONFIRM_WITHIN` validation examples of the best (by the
  run's `PickRule`; at most `CONFIRM_MAX`) are scored on the same train examples (in a seeded
  order, those fewest contenders show first; at most as many as the held-back calls, and as
  many as the calls left afford: the held-back ones and any the search left; scores already
  paid for are free), and the pick is made by the same rule, its margin scaled (below), on
  validation and those examples together (the last contenders drop out while the calls leave
  fewer than `MIN_CONFIRM` examples);
- the score threshold: an iteration that reaches it on validation stops the run only when it
  still reaches it on validation and those examples together (as many as the held-back calls,
  paid from the search's own calls; when those are spent, validation alone decides, as before).

Instructions the reasoning model wrote were written from train examples' failures, so train
flatters them; the rule's `rewrite_margin` therefore keeps its size as a score on the pooled
examples (1 of 8 validation examples is 2.5 of 20 pooled ones), where counted in examples it
would shrink to 1 of 20. Held-out test never chooses.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

import dspy

from reflex_dspy.candidate import Candidate, content_sources, leaving_out
from reflex_dspy.data import example_id
from reflex_dspy.eval_requests import Group
from reflex_dspy.evaluation import EvalResult, Evaluator
from reflex_dspy.selection import PickRule

CONFIRM_SHARE = 0.1  # of the call budget, held back from the search to confirm the pick
CONFIRM_WITHIN = 1  # validation examples: contenders this close to the best are confirmed
CONFIRM_MAX = 3  # contenders confirmed at most (the best by the pick rule's order)
MIN_CONFIRM = 4  # fewer train examples than this settle nothing


def held_back(budget: int | None, n_train: int, n_val: int) -> int:
    """Calls the search leaves for confirming the pick: a share of the budget, when it affords at
    least two contenders on `MIN_CONFIRM` examples and there is validation to confirm."""
    if budget is None or not n_val or n_train < MIN_CONFIRM:
        return 0
    share = int(budget * CONFIRM_SHARE)
    return share if share >= 2 * MIN_CONFIRM else 0


@dataclass
class Contender:
    """One candidate in a close call: where it was found and its score on validation."""

    iteration: int
    candidate: Candidate
    val: float


@dataclass
class Confirmation:
    """Scores close contenders on train examples (none with its own demo) with the held-back calls
    (module docstring)."""

    evaluator: Evaluator
    trainset: Sequence[dspy.Example]  # already in the run's seeded order
    valset: Sequence[dspy.Example]
    rule: PickRule
    held: int  # the calls held back for the pick: also the most a threshold check scores

    @classmethod
    def for_run(cls, evaluator: Evaluator, trainset: Sequence[dspy.Example], valset: Sequence[dspy.Example],
                rule: PickRule, seed: int, held: int) -> Confirmation:
        order = list(trainset)
        random.Random(f"confirm:{seed}").shuffle(order)
        return cls(evaluator, order, list(valset), rule, held)

    def contenders(self, scored: Sequence[tuple[int, Candidate, float | None]]) -> list[Contender]:
        """The distinct candidates within `CONFIRM_WITHIN` validation examples of the best (by the
        rule's keys, the margin counted), best first."""
        n = len(self.valset)
        ranked = sorted(((self.rule.key(c, s, n), i, c, s) for i, c, s in scored if s is not None),
                        key=lambda e: e[0], reverse=True)  # stable: the earlier first on ties, as the pick
        seen: set[str] = set()
        out = []
        for key, i, c, s in ranked:
            if key[0] >= ranked[0][0][0] - CONFIRM_WITHIN and c.fingerprint not in seen:
                seen.add(c.fingerprint)
                out.append(Contender(i, c, s))
        return out[:CONFIRM_MAX]

    def pooled_rule(self, n_train: int) -> PickRule:
        """The pick rule on validation and `n_train` train examples together: the margin keeps its
        size as a score (`margin` of the validation examples), so pooling more examples never
        shrinks the user's words' protection, while train flatters model-written instructions."""
        n_val = len(self.valset)
        return replace(self.rule, margin=self.rule.margin * (n_val + n_train) / n_val)

    def examples(self, candidates: Sequence[Candidate], held: bool, limit: int | None = None) -> list[dspy.Example]:
        """Train examples, at most `limit` and as many as the calls left afford for every candidate
        (the held-back calls too when `held`); none when fewer than `MIN_CONFIRM`. The examples
        fewest candidates show as a demo come first: a score there is of the candidate itself, a
        leave-one-out score of a neighbour (one demo fewer) fills in where those run out."""
        shown = [content_sources(c, self.trainset) for c in candidates]
        pool = sorted(self.trainset, key=lambda ex: sum(example_id(ex) in s for s in shown))[:limit]  # stable
        with self._spending(held):
            left = self.evaluator.budget_left
        while pool and left is not None and self.evaluator.cost(
                [r for c in candidates for r in on_train(c, pool)]) > left:
            pool.pop()
        return pool if len(pool) >= MIN_CONFIRM else []

    def _spending(self, held: bool) -> AbstractContextManager[None]:
        return self.evaluator.ledger.spending_held() if held else nullcontext()

    def _pooled(self, candidates: Sequence[Candidate], train: Sequence[dspy.Example], label: str,
                held: bool) -> list[tuple[EvalResult, EvalResult]]:
        """Each candidate's (validation, train) results: validation from the cache, train paid
        (with the held-back calls when `held`), each example left out of the demos (`on_train`)."""
        per_candidate = [on_train(c, train) for c in candidates]
        requests = [(c, self.valset) for c in candidates] + [r for rs in per_candidate for r in rs]
        with self._spending(held):
            results = iter(self.evaluator.evaluate_groups([Group(requests)], label=label)[0])
        on_val = [next(results) for _ in candidates]
        return [(val, _joined(c, [next(results) for _ in rs]))
                for c, val, rs in zip(candidates, on_val, per_candidate, strict=True)]

    def settle(self, scored: Sequence[tuple[int, Candidate, float | None]]) -> tuple[int, dict[str, Any]] | None:
        """(the iteration picked on validation and train together, the record of it), or None when
        there is no close call or nothing to settle it on."""
        contenders = self.contenders(scored)
        train: list[dspy.Example] = []
        while len(contenders) >= 2 and not train:  # the last drops out when the calls leave too few
            train = self.examples([c.candidate for c in contenders], held=True, limit=self.held)
            if not train:
                contenders.pop()
        if not train:
            return None
        calls = self.evaluator.usage.search_calls
        pooled = self._pooled([c.candidate for c in contenders], train, "confirm the pick", held=True)
        rows, ranked = [], []
        for contender, (val, on_train) in zip(contenders, pooled, strict=True):
            both = _mean(val, on_train)
            rows.append({"iteration": contender.iteration, "val": contender.val, "train": on_train.mean,
                         "val_and_train": both, "train_failed": on_train.n_failed,
                         "train_left_one_out": len(content_sources(contender.candidate, train))})
            ranked.append((contender.candidate, both))
        rule = self.pooled_rule(len(train))
        pick = rule.best(ranked, len(self.valset) + len(train))
        if pick is None:  # every answer failed: nothing was measured, the pick on validation stands
            return None
        record = {"within": CONFIRM_WITHIN, "train_examples": len(train), "contenders": rows,
                  "picked": contenders[pick].iteration, "metric_calls": self.evaluator.usage.search_calls - calls,
                  "margin": rule.margin, "val_examples": len(self.valset)}
        return contenders[pick].iteration, record

    def threshold_check(self, candidate: Candidate, val: float, threshold: float) -> dict[str, Any] | None:
        """Whether a candidate that reached the threshold on validation still reaches it on
        validation and train examples together; None when there is nothing to check on. The
        search's own calls pay for it: the held-back ones stay for the pick."""
        train = self.examples([candidate], held=False, limit=self.held)
        if not train:
            return None
        (val_result, on_train), = self._pooled([candidate], train, "confirm the score threshold", held=False)
        both = _mean(val_result, on_train)
        return {"threshold": threshold, "val": val, "train": on_train.mean, "train_examples": len(train),
                "val_and_train": both, "holds": both is not None and both >= threshold}


def describe(record: dict[str, Any]) -> str:
    """The selection note of a settled close call: every contender's two scores, the pick first."""
    def name(row: dict[str, Any]) -> str:
        both = "n/a" if row["val_and_train"] is None else f"{row['val_and_train']:.3f}"
        where = "the initial prompt" if row["iteration"] == 0 else f"iteration {row['iteration']}"
        return f"{where} (val {row['val']:.3f}, val + train {both})"

    rows = record["contenders"]
    picked = next(r for r in rows if r["iteration"] == record["picked"])
    others = "; ".join(name(r) for r in rows if r is not picked)
    left_out = sum(r.get("train_left_one_out", 0) for r in rows)
    how = (f" ({left_out} of those scores without the example's own demo)" if left_out
           else " none of them took demos from")
    text = (f"{len(rows)} candidates within {record['within']} validation example of the best, scored on "
            f"{record['train_examples']} train examples{how}: {name(picked)}, over {others}")
    top = max((r["val_and_train"] for r in rows if r["val_and_train"] is not None), default=None)
    if record.get("margin") and picked["val_and_train"] != top:  # the rewrite margin decided it
        n_val = record["val_examples"]
        n, margin = n_val + record["train_examples"], record["margin"]
        text += (f"; instructions the reasoning model wrote must win by {margin:g} of these {n} examples (the "
                 f"rewrite margin, {margin * n_val / n:g} of the {n_val} validation examples, at the same share)")
    return text


def on_train(candidate: Candidate, train: Sequence[dspy.Example]) -> list[tuple[Candidate, list[dspy.Example]]]:
    """The requests that score `candidate` honestly on `train`: itself on the examples no demo of
    it shows, and on each one a demo shows, itself without that demo (leave-one-out)."""
    shown = content_sources(candidate, train)
    own = [ex for ex in train if example_id(ex) not in shown]
    return ([(candidate, own)] if own else []) + [
        (leaving_out(candidate, ex), [ex]) for ex in train if example_id(ex) in shown]


def _joined(candidate: Candidate, results: Sequence[EvalResult]) -> EvalResult:
    """One result of `candidate` on the examples its leave-one-out requests scored."""
    return EvalResult(candidate.fingerprint, {k: v for r in results for k, v in r.results.items()},
                      new_calls=sum(r.new_calls for r in results), cache_hits=sum(r.cache_hits for r in results))


def _mean(*results: EvalResult) -> float | None:
    """The mean over every scored example of `results` (failed answers are left out, never 0)."""
    scores = [s for r in results for s in r.scores.values()]
    return sum(scores) / len(scores) if scores else None
