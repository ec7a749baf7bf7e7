"""The Optuna side of PDO: a study that holds the prompt pool and every duel, and the sampler
that picks which two prompts duel next.

Every duel is one trial: the sampler chooses the pair through `suggest_int("first")` and
`suggest_int("second")`, the strategy runs the duel and `tell`s the first prompt's win share.
All state a worker needs lives in the study, written so that concurrent workers never overwrite
each other: candidates are one study attribute each (keyed by fingerprint, so adding the same
prompt twice is a no-op), prunings and ranker rewards likewise, and the win matrix is derived
from COMPLETE trials rather than kept as one shared counter. Any Optuna storage URL therefore
lets several processes on several machines run one PDO search together.

The pool a trial chooses from is snapshotted into the trial (a system attribute, the way
Optuna's own samplers keep per-trial state), so the indices the sampler returns always refer to
the list the strategy reads back, even while another worker is adding or pruning prompts.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, IntDistribution, distribution_to_json, json_to_distribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, Trial, TrialState, create_trial

from reflex_dspy.strategies.base import restore_rng, rng_state
from reflex_dspy.strategies.pdo.ranking import RANKERS, Duel, WinMatrix

optuna.logging.set_verbosity(optuna.logging.WARNING)  # Optuna logs every trial at INFO

CANDIDATE = "candidate:"
PRUNED = "pruned:"
REWARD = "reward:"
POOL_ATTR = "pdo:pool"
PAIR_ATTR = "pdo:pair"
SQLITE_TIMEOUT_S = 60  # concurrent workers on one SQLite file wait for its lock instead of failing


def double_thompson(ids: Sequence[str], m: WinMatrix, alpha: float, rng: random.Random,
                    pending: Sequence[tuple[str, str]] = ()) -> tuple[str, str]:
    """The next pair by double Thompson sampling (Wu & Liu, 2016), `alpha` the confidence width.

    First: among the prompts whose optimistic Copeland score (pairs counted won when the upper
    bound u_ij = p_ij + sqrt(alpha ln t / n_ij) exceeds 1/2; unexplored pairs have u = 1) is
    maximal, the Copeland winner under one Beta sample of the whole matrix. Second: the prompt
    with the largest Beta sample of beating the first, among those not yet shown to lose to it
    (lower bound <= 1/2). A prompt that has never dueled goes first, oldest first: this is what
    lets pruning spare new mutants without keeping them forever. Never the same prompt twice.

    `pending` are the pairs of duels asked but not yet told (the rest of a round, or other
    workers' duels in flight): a prompt in one is no longer fresh, and a pending pair is not
    asked again while another rival is allowed, so a round asked all at once spreads over the
    pool as a round asked one duel at a time does.
    """
    ids = list(ids)
    if len(ids) < 2:
        raise ValueError("a duel needs at least two prompts")
    log_t = math.log(m.total + 1)

    def bounds(a: str, b: str) -> tuple[float, float]:
        n = m.n(a, b)
        if not n:
            return 1.0, 0.0
        p, width = m.b(a, b) / n, math.sqrt(alpha * log_t / n)
        return p + width, p - width

    busy = {a for pair in pending for a in pair}
    fresh = [a for a in ids if not m.played(a) and a not in busy]
    if fresh:
        first = fresh[0]
    else:
        optimistic = {a: sum(bounds(a, b)[0] > 0.5 for b in ids if b != a) for a in ids}
        best = max(optimistic.values())
        contenders = [a for a in ids if optimistic[a] == best]
        theta: dict[tuple[str, str], float] = {}
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                theta[a, b] = rng.betavariate(m.b(a, b) + 1, m.b(b, a) + 1)
                theta[b, a] = 1 - theta[a, b]
        sampled = {a: sum(theta[a, b] > 0.5 for b in ids if b != a) for a in contenders}
        top = max(sampled.values())
        first = rng.choice([a for a in contenders if sampled[a] == top])
    rivals = [b for b in ids if b != first and bounds(b, first)[1] <= 0.5]
    asked = {b for pair in pending if first in pair for b in pair}
    rivals = [b for b in rivals if b not in asked] or rivals
    if not rivals:
        return first, rng.choice([b for b in ids if b != first])
    draws = {b: rng.betavariate(m.b(b, first) + 1, m.b(first, b) + 1) for b in rivals}
    return first, max(rivals, key=lambda b: draws[b])


class DuelStore:
    """One PDO study: the pool, the duels, the ranker rewards. Read by workers, never overwritten."""

    def __init__(self, study: Study) -> None:
        self.study = study

    @classmethod
    def open(cls, sampler: BaseSampler, storage: str | None, study_name: str) -> DuelStore:
        """In memory when `storage` is None; else create or join the named study at that URL."""
        if storage is None:
            study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), study_name=study_name,
                                        direction="maximize", sampler=sampler)
            return cls(study)
        return cls(_retry_on_lock(lambda: optuna.create_study(
            storage=_storage(storage), study_name=study_name, load_if_exists=True,
            direction="maximize", sampler=sampler)))

    # -- the pool ---------------------------------------------------------------------------
    def records(self) -> dict[str, dict[str, Any]]:
        """Every candidate ever added (pruned ones too), by fingerprint."""
        return {k.removeprefix(CANDIDATE): v for k, v in self.study.user_attrs.items() if k.startswith(CANDIDATE)}

    def pool(self) -> list[dict[str, Any]]:
        """The active candidates, oldest first (the order every worker sees)."""
        attrs = self.study.user_attrs
        active = [v for k, v in attrs.items()
                  if k.startswith(CANDIDATE) and PRUNED + k.removeprefix(CANDIDATE) not in attrs]
        return sorted(active, key=lambda r: (r["born"], r["fingerprint"]))

    def add(self, record: dict[str, Any]) -> bool:
        """Add a candidate record (with `fingerprint` and `born`); False when it is already there."""
        key = CANDIDATE + record["fingerprint"]
        if key in self.study.user_attrs:
            return False
        self.study.set_user_attr(key, record)
        return True

    def prune(self, fingerprint: str, note: dict[str, Any]) -> None:
        self.study.set_user_attr(PRUNED + fingerprint, note)

    # -- duels ------------------------------------------------------------------------------
    def trials(self) -> list[FrozenTrial]:
        """Finished duels in trial order."""
        return sorted(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)

    def duels(self) -> list[Duel]:
        return [duel_of(t) for t in self.trials()]

    def running_pairs(self) -> list[tuple[str, str]]:
        """The pairs of duels asked but not told yet (their trials are RUNNING), in trial order."""
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return [(t.user_attrs["first"], t.user_attrs["second"]) for t in sorted(running, key=lambda t: t.number)
                if "first" in t.user_attrs and "second" in t.user_attrs]

    def find(self, key: str) -> FrozenTrial | None:
        """The finished duel recorded under `key`, so a resumed worker never counts a duel twice."""
        return next((t for t in self.trials() if t.user_attrs.get("duel_key") == key), None)

    def begin(self, attrs: dict[str, Any]) -> tuple[Trial, str, str] | None:
        """Ask a trial and let the sampler pick its pair from the pool snapshotted into it."""
        trial = self.study.ask()
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        pool = self.study._storage.get_trial_system_attrs(trial._trial_id).get(POOL_ATTR) or []
        if len(pool) < 2:
            self.study.tell(trial, state=TrialState.FAIL)
            return None
        i = trial.suggest_int("first", 0, len(pool) - 1)
        j = trial.suggest_int("second", 0, len(pool) - 1)
        if i == j:  # the sampler never does this; a foreign sampler must not corrupt the matrix
            self.study.tell(trial, state=TrialState.FAIL)
            raise RuntimeError(f"the sampler paired prompt {i} with itself")
        trial.set_user_attr("first", pool[i])
        trial.set_user_attr("second", pool[j])
        return trial, pool[i], pool[j]

    def finish(self, trial: Trial, outcome: dict[str, Any], first_rate: float | None) -> None:
        for key, value in outcome.items():
            trial.set_user_attr(key, value)
        if first_rate is None:  # nothing comparable (every example failed): not a duel
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            self.study.tell(trial, first_rate)

    def abort(self, trial: Trial) -> None:
        self.study.tell(trial, state=TrialState.FAIL)

    def fail_running(self, worker: str) -> None:
        """Close duels this worker left running when it was interrupted."""
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("worker") == worker:
                self.study.tell(t.number, state=TrialState.FAIL)

    # -- ranker rewards (PDO `auto`) ------------------------------------------------------------
    def add_reward(self, worker: str, round_: int, rewards: dict[str, float]) -> None:
        self.study.set_user_attr(f"{REWARD}{worker}:{round_}", rewards)

    def alphas(self) -> dict[str, float]:
        """Dirichlet parameters: 1 for each ranker plus every reward any worker recorded."""
        alphas = dict.fromkeys(RANKERS, 1.0)
        attrs = self.study.user_attrs
        for key in sorted(k for k in attrs if k.startswith(REWARD)):
            for name, value in attrs[key].items():
                alphas[name] = alphas.get(name, 1.0) + float(value)
        return alphas

    # -- an in-memory study as JSON, for resuming ----------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        trials = [
            {"state": t.state.name, "value": t.value, "params": t.params, "user_attrs": t.user_attrs,
             "distributions": {k: distribution_to_json(d) for k, d in t.distributions.items()}}
            for t in sorted(self.study.get_trials(deepcopy=False), key=lambda t: t.number)
            if t.state in (TrialState.COMPLETE, TrialState.FAIL)
        ]
        return {"user_attrs": self.study.user_attrs, "trials": trials}

    def restore(self, snapshot: dict[str, Any]) -> None:
        for key, value in snapshot.get("user_attrs", {}).items():
            self.study.set_user_attr(key, value)
        for t in snapshot.get("trials", []):
            self.study.add_trial(create_trial(
                state=TrialState[t["state"]], value=t["value"], params=t["params"], user_attrs=t["user_attrs"],
                distributions={k: json_to_distribution(d) for k, d in t["distributions"].items()}))


def duel_of(trial: FrozenTrial) -> Duel:
    a = trial.user_attrs
    return Duel(a["first"], a["second"], a.get("wins", 0), a.get("losses", 0), a.get("ties", 0))


class DuelSampler(BaseSampler):
    """Chooses which two prompts of the study's pool duel next, by double Thompson sampling.

    Only the integer parameters "first" and "second" are PDO's; any other parameter is drawn
    uniformly, so the sampler stays a valid Optuna sampler. Its RNG is seeded and its state can
    be saved (`get_state`) and restored (`set_state`) so a resumed run makes the same choices.
    """

    def __init__(self, alpha: float = 1.2, seed: int = 0) -> None:
        self.alpha = alpha
        self.rng = random.Random(seed)

    def get_state(self) -> list[Any]:
        return rng_state(self.rng)

    def set_state(self, state: Sequence[Any]) -> None:
        restore_rng(self.rng, state)

    def reseed_rng(self) -> None:
        self.rng.seed()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        pool = [r["fingerprint"] for r in DuelStore(study).pool()]
        study._storage.set_trial_system_attr(trial._trial_id, POOL_ATTR, pool)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        pool = trial.system_attrs.get(POOL_ATTR)
        if param_name not in ("first", "second") or not isinstance(param_distribution, IntDistribution) or not pool:
            return _uniform(param_distribution, self.rng)
        pair = trial.system_attrs.get(PAIR_ATTR)
        if pair is None:
            ids = pool[: param_distribution.high + 1]
            first, second = double_thompson(ids, WinMatrix(ids, DuelStore(study).duels()), self.alpha, self.rng,
                                            DuelStore(study).running_pairs())
            pair = [ids.index(first), ids.index(second)]
            study._storage.set_trial_system_attr(trial._trial_id, PAIR_ATTR, pair)
        return pair[0] if param_name == "first" else pair[1]


def _uniform(distribution: BaseDistribution, rng: random.Random) -> Any:
    """A uniform draw for parameters that are not PDO's (keeps the sampler usable in any study)."""
    return optuna.samplers.RandomSampler(seed=rng.randrange(2**31)).sample_independent(
        None, None, "", distribution)  # type: ignore[arg-type]


def _storage(url: str) -> str | optuna.storages.BaseStorage:
    """SQLite gets a lock timeout so concurrent workers queue for the file instead of erroring."""
    if url.startswith("sqlite"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}})
    return url


def _retry_on_lock(open_study: Callable[[], Study], attempts: int = 5) -> Study:
    """Open the study, retrying when a worker starting at the same moment holds the schema lock."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(attempts):
        try:
            return open_study()
        except (IntegrityError, OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")
