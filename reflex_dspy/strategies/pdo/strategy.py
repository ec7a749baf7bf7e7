"""PDO, the prompt duel optimizer: a pool of prompts compared head to head, driven by Optuna.

Absolute scores on a small batch are noisy; whether prompt A beats prompt B on the same
examples is a much sharper question. So each round runs `duels_per_round` duels between pairs
chosen by double Thompson sampling (an Optuna sampler, so a duel is a trial and several
processes can share one study through a database), ranks the pool from the duel history, and
every `mutation_frequency` rounds asks the reasoning model to improve the top prompts where
they lost. The iteration's recorded score is the champion's real metric score on the batch,
never a win rate, so PDO's iterations compare with every other strategy's.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dspy

import reflex_dspy.strategies.pdo.ranking as ranking
from reflex_dspy.candidate import Candidate
from reflex_dspy.errors import UsageError
from reflex_dspy.library_logs import worker_pool
from reflex_dspy.proposals import ProposalRejected
from reflex_dspy.strategies.base import SearchContext, Step, Strategy, restore_rng, rng_state

if TYPE_CHECKING:  # Optuna is imported only when PDO runs, keeping `import reflex_dspy` light
    from reflex_dspy.strategies.pdo.sampler import DuelSampler, DuelStore


def _seed(*parts: Any) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:12], 16)


class PDO(Strategy):
    """Prompt duel optimizer; see the module docstring.

    `storage` is any Optuna storage URL (e.g. `sqlite:///pdo.db`) for several workers sharing one
    study, which then needs a `study_name`; without it the study lives in memory.
    """

    name = "pdo"

    def __init__(
        self,
        metric: Any = None,
        *,
        duels_per_round: int = 3,
        samples_per_duel: int = 10,
        initial_pool_size: int = 6,
        thompson_alpha: float = 1.2,
        mutation_frequency: int = 5,
        num_top_to_mutate: int = 2,
        max_pool_size: int = 20,
        ranking_method: str = "auto",
        storage: str | None = None,
        study_name: str | None = None,
    ):
        if ranking_method not in ranking.METHODS:
            raise ValueError(f"ranking_method must be one of {', '.join(ranking.METHODS)}")
        if min(duels_per_round, samples_per_duel) < 1 or initial_pool_size < 2 or max_pool_size < 2:
            raise ValueError("duels_per_round and samples_per_duel must be >= 1, pool sizes >= 2")
        if min(mutation_frequency, num_top_to_mutate) < 0 or thompson_alpha < 0:
            raise ValueError("mutation_frequency, num_top_to_mutate and thompson_alpha must be >= 0")
        if storage is not None and not study_name:
            raise ValueError("a shared storage needs a study_name, so that every worker joins the same study")
        super().__init__(metric, duels_per_round=duels_per_round, samples_per_duel=samples_per_duel,
                         initial_pool_size=initial_pool_size, thompson_alpha=thompson_alpha,
                         mutation_frequency=mutation_frequency, num_top_to_mutate=num_top_to_mutate,
                         max_pool_size=max_pool_size, ranking_method=ranking_method, storage=storage,
                         study_name=study_name)
        self.store: DuelStore | None = None
        self.sampler: DuelSampler | None = None
        self.worker = "local"
        self.champion: str | None = None  # fingerprint
        self.ranker_champions: dict[str, str] = {}
        self.turn = 0  # round robin over predictors for mutations
        # Own RNG (duel samples, A/B order, Dirichlet draws), seeded from the run's seed and kept in
        # the state, so a run is reproducible whatever else draws from the context's RNG.
        self.rng = random.Random(0)

    # -- setting up ----------------------------------------------------------------------------
    def _open(self, seed: int, sampler_state: list[Any] | None = None) -> None:
        from reflex_dspy.strategies.pdo.sampler import DuelSampler, DuelStore

        self.sampler = DuelSampler(self.thompson_alpha, _seed(seed, self.worker, "sampler"))
        if sampler_state is not None:
            self.sampler.set_state(sampler_state)
        self.store = DuelStore.open(self.sampler, self.storage, self.study_name or "pdo")

    def start(self, ctx: SearchContext, initial: Candidate) -> None:
        from reflex_dspy.strategies.pdo.variants import initial_variants

        if self.storage is not None:
            self.worker = f"{socket.gethostname()}-{os.getpid()}"
        seed = ctx.config.seed
        self._open(seed)
        self.rng.seed(_seed(seed, self.worker, "pdo"))
        pool = self.store.pool()
        if pool:  # joining a shared study: use its pool, which must be for the same program
            if any(set(r["candidate"]["predictors"]) != set(initial.predictors) for r in pool):
                raise UsageError(f"study {self.study_name!r} holds prompts for other predictors than this program's")
            variants = initial_variants(ctx, initial, 1)  # just this worker's starting prompt (a no-op if known)
        else:
            variants = initial_variants(ctx, initial, self.initial_pool_size)
        for i, variant in enumerate(variants):
            self.store.add(variant.record([0, self.worker, i]))
        self.champion = initial.fingerprint
        self.ranker_champions = {}
        self.turn = 0

    def done(self) -> str | None:
        if self.store is not None and len(self.store.pool()) < 2:
            return "fewer than two prompts in the pool to duel"
        return None

    # -- one round --------------------------------------------------------------------------------
    def step(self, ctx: SearchContext, iteration: int, batch: Sequence[dspy.Example]) -> Step:
        from reflex_dspy.strategies.pdo.duel import judge_criteria

        criteria = None if ctx.has_gold else judge_criteria(ctx.metric)
        duels = self._duels(ctx, iteration, batch, criteria)
        previous = self.champion
        before = Candidate.from_dict(self.store.records()[previous]["candidate"])
        ids = [r["fingerprint"] for r in self.store.pool()]
        records = self.store.records()  # read after the pool, so it holds every id even as other workers add
        history = self.store.duels()
        rewards = self._reward(iteration, duels)
        weights = ranking.dirichlet(self.store.alphas(), self.rng) if self.ranking_method == "auto" else None
        order, rankings = ranking.rank(self.ranking_method, ids, history, weights)
        matrix = ranking.WinMatrix(ids, history)
        self.ranker_champions = {n: r[0] for n, r in rankings.items() if r and matrix.played(r[0])}
        if order and matrix.played(order[0]):
            self.champion = order[0]
        champion = Candidate.from_dict(records[self.champion]["candidate"])
        plans = []
        if self.mutation_frequency and iteration % self.mutation_frequency == 0:
            plans = self._mutation_plans(ctx, iteration, order, matrix, records)
        # The reasoning model writes the mutants while the champion is scored: neither needs the other.
        with worker_pool(1, "reflex-pdo") as pool:
            proposals = pool.submit(self._propose_all, ctx, plans)
            # One evaluation after the duels (the champion depends on them): the champion and the
            # previous one (its parent score) on the batch, and the champion on the val examples the
            # lifecycle scores it on next (then free there), so their waves are shared.
            result, parent, _ = ctx.evaluate_jobs([(champion, batch), (before, batch), (champion, ctx.valset)],
                                                  label=f"iter {iteration}: champion")
            mutants = self._add_mutants(iteration, plans, proposals.result(), records)
        pruned = self._prune(iteration, order, matrix, records)
        label = self._label(records[self.champion])
        verb = "champion" if previous == self.champion else "new champion"
        rivals = len(self.store.pool()) - 1
        top = [{"name": records[f]["name"], "fingerprint": f, "win_rate": self._rate(f, matrix)} for f in order[:3]]
        return Step(
            champion, result, parent.mean,
            reasoning=self._reasoning(order, records, matrix, weights, duels, mutants, pruned),
            change_summary=f"{verb}: {label} over {rivals} rival{'s' * (rivals != 1)}",
            predictor=records[self.champion].get("predictor"),
            details={"duels": duels, "pool_size": len(self.store.pool()), "ranking_method": self.ranking_method,
                     "weights": weights, "rewards": rewards, "top": top, "mutants": mutants, "pruned": pruned,
                     "champion": {"name": records[self.champion]["name"], "fingerprint": self.champion},
                     "worker": self.worker, "total_duels": len(history)},
        )

    def _duels(self, ctx: SearchContext, iteration: int, batch: Sequence[dspy.Example],
               criteria: str | None) -> list[dict[str, Any]]:
        """The round's duels, each one Optuna trial: every pair is asked of the sampler first, all their
        examples are scored in one evaluation, then each duel is told to the study in order. A duel
        this worker already finished (before a crash) is reused, not run again."""
        from reflex_dspy.strategies.pdo.duel import run_duels

        slots: list[dict[str, Any] | None] = []
        begun: list[tuple[int, Any, str, str, list[dspy.Example]]] = []  # (slot, trial, first, second, samples)
        try:
            for k in range(self.duels_per_round):
                key = f"{self.worker}/{iteration}/{k}"
                if (done := self.store.find(key)) is not None:
                    slots.append(self._duel_summary(done.number, done.user_attrs))
                    continue
                slots.append(None)
                if (asked := self.store.begin({"worker": self.worker, "round": iteration, "duel_key": key})):
                    trial, first, second = asked
                    begun.append((len(slots) - 1, trial, first, second,
                                  self.rng.sample(list(batch), min(self.samples_per_duel, len(batch)))))
            records = self.store.records()
            pairs = [(*(Candidate.from_dict(records[fp]["candidate"]) for fp in (first, second)), samples)
                     for _, _, first, second, samples in begun]
            outcomes = run_duels(ctx, pairs, criteria, self.rng, label=f"iter {iteration}: duels")
        except BaseException:
            for _, trial, *_ in begun:
                self.store.abort(trial)
            raise
        for (slot, trial, first, second, _), outcome in zip(begun, outcomes, strict=True):
            self.store.finish(trial, outcome.to_attrs(), outcome.as_duel(first, second).first_rate)
            slots[slot] = self._duel_summary(trial.number, {"first": first, "second": second, **outcome.to_attrs()})
        return [d for d in slots if d is not None]

    def _duel_summary(self, number: int, attrs: dict[str, Any]) -> dict[str, Any]:
        names = self.store.records()
        return {"trial": number, "first": attrs["first"], "second": attrs["second"],
                "first_name": names[attrs["first"]]["name"], "second_name": names[attrs["second"]]["name"],
                **{k: attrs.get(k, 0) for k in ("wins", "losses", "ties", "skipped", "judged", "judge_fallbacks")}}

    def _reward(self, iteration: int, duels: list[dict[str, Any]]) -> dict[str, float]:
        """Credit each ranker with the win share its last champion earned in this round's duels."""
        played = [ranking.Duel(d["first"], d["second"], d["wins"], d["losses"], d["ties"]) for d in duels]
        rewards = {name: rate for name, fp in self.ranker_champions.items()
                   if (rate := ranking.win_rate_of(fp, played)) is not None}
        if rewards:
            self.store.add_reward(self.worker, iteration, rewards)
        return rewards

    def _mutation_plans(self, ctx: SearchContext, iteration: int, order: list[str], matrix, records) -> list[dict]:
        """For each top prompt: the rival it beat least often, the predictor to change, and the
        examples it lost to that rival (scored already in their duels, so normally free)."""
        from reflex_dspy.strategies.pdo.variants import format_losses

        plans = []
        for rank_, fp in enumerate([f for f in order if matrix.played(f)][: self.num_top_to_mutate]):
            rivals = [r for r in order if r != fp and matrix.n(fp, r)]
            if not rivals:
                continue
            rival = min(rivals, key=lambda r: (matrix.p(fp, r), order.index(r)))
            predictor = ctx.predictor_names[self.turn % len(ctx.predictor_names)]
            self.turn += 1
            winner, other = (Candidate.from_dict(records[f]["candidate"]) for f in (fp, rival))
            lost = [ctx.examples_by_id[e] for e in self._losses(fp, rival) if e in ctx.examples_by_id][:5]
            losses = ""
            if lost:
                w, r = ctx.evaluate_many([winner, other], lost, label=f"iter {iteration}: losses")
                losses = format_losses(lost, w.results, r.results)
            plans.append({"rank": rank_ + 1, "fp": fp, "rival": rival, "predictor": predictor, "winner": winner,
                          "other": other, "losses": losses, "shown": len(lost)})
        return plans

    @staticmethod
    def _propose_all(ctx: SearchContext, plans: list[dict]) -> list[Any]:
        """The reasoning model's mutation for each plan, one after another (a refusal is kept, not raised)."""
        from reflex_dspy.strategies.pdo.variants import mutate

        made: list[Any] = []
        for plan in plans:
            try:
                made.append(mutate(ctx, plan["winner"], plan["other"], plan["predictor"], plan["losses"]))
            except ProposalRejected as exc:
                made.append(exc)
        return made

    def _add_mutants(self, iteration: int, plans: list[dict], proposals: list[Any], records) -> list[dict]:
        """Add the mutants to the pool, in rank order; refusals are recorded, never added."""
        from reflex_dspy.strategies.pdo.variants import Variant

        made = []
        for plan, proposal in zip(plans, proposals, strict=True):
            fp, rival, predictor = plan["fp"], plan["rival"], plan["predictor"]
            name = f"m{iteration}.{plan['rank']}" + ("" if self.worker == "local" else f"@{self.worker}")
            if isinstance(proposal, ProposalRejected):
                made.append({"name": name, "parent": records[fp]["name"], "rejected": str(proposal)})
                continue
            variant = Variant(plan["winner"].with_instructions(predictor, proposal.instructions), name,
                              f"mutation of {records[fp]['name']} against {records[rival]['name']}: "
                              f"{proposal.change_summary}", predictor)
            added = self.store.add(variant.record([iteration, self.worker, plan["rank"]], parent=fp))
            made.append({"name": name, "parent": records[fp]["name"], "fingerprint": variant.candidate.fingerprint,
                         "added": added, "losses_shown": plan["shown"], "repaired": proposal.repaired})
        return made

    def _losses(self, winner: str, rival: str) -> list[str]:
        """Example ids on which `winner` did worse than `rival`, across their duels."""
        lost: list[str] = []
        for t in self.store.trials():
            a = t.user_attrs
            if (a["first"], a["second"]) == (winner, rival):
                lost += a.get("first_lost", [])
            elif (a["first"], a["second"]) == (rival, winner):
                lost += a.get("first_won", [])
        return list(dict.fromkeys(lost))

    def _prune(self, iteration: int, order: list[str], matrix, records) -> list[str]:
        """Drop the lowest ranked prompts that have dueled; one that never dueled is never dropped."""
        active = [r["fingerprint"] for r in self.store.pool()]
        excess = len(active) - self.max_pool_size
        droppable = [f for f in order[1:] if f in active and matrix.played(f) and f != self.champion]
        pruned = droppable[::-1][: max(excess, 0)]
        for fp in pruned:
            self.store.prune(fp, {"round": iteration, "worker": self.worker})
        return [records[f]["name"] for f in pruned]

    # -- reporting --------------------------------------------------------------------------------
    @staticmethod
    def _rate(fp: str, matrix) -> float | None:
        games = sum(matrix.n(fp, b) for b in matrix.ids if b != fp)
        return round(sum(matrix.b(fp, b) for b in matrix.ids if b != fp) / games, 4) if games else None

    @staticmethod
    def _label(record: dict[str, Any]) -> str:
        return f"{record['name']} ({record['origin']})" if record["name"] != "initial" else "the initial prompt"

    def _reasoning(self, order, records, matrix, weights, duels, mutants, pruned) -> str:
        method = self.ranking_method
        if weights:
            method += " (weights " + ", ".join(f"{n} {w:.2f}" for n, w in weights.items()) + ")"
        lines = [f"Ranking by {method}:"]
        for i, fp in enumerate(order[:3], 1):
            rate = self._rate(fp, matrix)
            shown = f"win rate {rate:.2f}" if rate is not None else "not dueled yet"
            lines.append(f"{i}. {self._label(records[fp])}: {shown}")
        lines.append("Duels this round: " + ("; ".join(
            f"{d['first_name']} vs {d['second_name']} {d['wins']}-{d['losses']}-{d['ties']}" for d in duels)
            or "none"))
        if mutants:
            lines.append("Mutants: " + "; ".join(f"{m['name']} of {m['parent']}" + (
                f" (refused: {m['rejected']})" if "rejected" in m
                else " (identical to a prompt already in the pool)" if not m["added"] else "") for m in mutants))
        if pruned:
            lines.append("Pruned: " + ", ".join(pruned))
        return "\n".join(lines)

    # -- resuming ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        if self.store is None:
            return {}
        return PdoState(self.worker, self.champion, dict(self.ranker_champions), self.turn, self.sampler.get_state(),
                        rng_state(self.rng),
                        # A shared study lives in its database; an in-memory one is rebuilt from this copy.
                        self.store.snapshot() if self.storage is None else None).to_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        saved = PdoState.from_dict(state)
        self.worker, self.champion = saved.worker, saved.champion
        self.ranker_champions, self.turn = dict(saved.ranker_champions), saved.turn
        restore_rng(self.rng, saved.rng)
        self._open(0, saved.sampler_rng)
        if self.storage is None:
            self.store.restore(saved.study)
        else:
            self.store.fail_running(self.worker)


@dataclass
class PdoState:
    """What a resume needs: this worker's name, the champion (and each ranker's), the mutation turn,
    both RNGs, and the in-memory study's copy (None for a shared one, which lives in its database)."""

    worker: str
    champion: str | None
    ranker_champions: dict[str, str] = field(default_factory=dict)
    turn: int = 0
    sampler_rng: list[Any] | None = None
    rng: list[Any] | None = None
    study: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"worker": self.worker, "champion": self.champion, "ranker_champions": self.ranker_champions,
                "turn": self.turn, "sampler_rng": self.sampler_rng, "rng": self.rng, "study": self.study}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PdoState:
        return cls(data["worker"], data["champion"], dict(data.get("ranker_champions", {})), data.get("turn", 0),
                   data["sampler_rng"], data["rng"], data.get("study"))
