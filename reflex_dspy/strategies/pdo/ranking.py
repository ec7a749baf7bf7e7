"""Ranking prompts from head-to-head duels, and the adaptive fusion of rankers PDO uses for `auto`.

Everything here is a pure function of the duel history, so the same ranking comes out in every
worker that reads the same study, and a test can check a ranker on a hand-written history.

No single ranker is right on every task: Copeland ignores margins, Borda and average win rate
are swayed by who happened to meet whom, Elo depends on order. `auto` fuses them with weights
drawn from a Dirichlet whose parameters grow with how well each ranker's champion went on to
win, so the fusion leans on the rankers that have been predicting winners on this task.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

RANKERS = ("copeland", "borda", "elo", "avg_winrate")
METHODS = (*RANKERS, "fused", "auto")
ELO_K = 32.0
ELO_START = 1000.0


@dataclass(frozen=True)
class Duel:
    """One recorded duel: per-example wins, losses and ties of `first` against `second`."""

    first: str
    second: str
    wins: float
    losses: float
    ties: float

    @property
    def games(self) -> float:
        return self.wins + self.losses + self.ties

    @property
    def first_rate(self) -> float | None:
        """The share of the duel `first` won, a tie counting half (None when nothing was compared)."""
        return (self.wins + self.ties / 2) / self.games if self.games else None


class WinMatrix:
    """Pairwise win counts among `ids` (ties count half to each side); duels with others are ignored."""

    def __init__(self, ids: Sequence[str], duels: Iterable[Duel]) -> None:
        self.ids = list(ids)
        known = set(self.ids)
        self.wins: dict[tuple[str, str], float] = {}
        self.games: dict[tuple[str, str], float] = {}
        for d in duels:
            if d.first == d.second or d.first not in known or d.second not in known or not d.games:
                continue
            for a, b, w in ((d.first, d.second, d.wins), (d.second, d.first, d.losses)):
                self.wins[a, b] = self.wins.get((a, b), 0.0) + w + d.ties / 2
                self.games[a, b] = self.games.get((a, b), 0.0) + d.games

    def n(self, a: str, b: str) -> float:
        return self.games.get((a, b), 0.0)

    def b(self, a: str, b: str) -> float:
        """How often `a` beat `b` (ties half)."""
        return self.wins.get((a, b), 0.0)

    def p(self, a: str, b: str) -> float | None:
        """The estimated probability that `a` beats `b`, None when they never met."""
        n = self.n(a, b)
        return self.b(a, b) / n if n else None

    def played(self, a: str) -> bool:
        return any(self.n(a, b) for b in self.ids if b != a)

    @property
    def total(self) -> float:
        """Per-example comparisons so far (each counted once)."""
        return sum(self.games.values()) / 2


# -- the rankers: each maps a candidate id to a score, higher is better ----------------------
def copeland(m: WinMatrix) -> dict[str, float]:
    """How many rivals a candidate beats on balance (a dead heat counts half)."""
    scores = {}
    for a in m.ids:
        rates = [p for b in m.ids if b != a and (p := m.p(a, b)) is not None]
        scores[a] = sum(1.0 if p > 0.5 else 0.5 if p == 0.5 else 0.0 for p in rates)
    return scores


def borda(m: WinMatrix) -> dict[str, float]:
    """The mean chance of beating a rival drawn at random (0.5 for rivals not met yet)."""
    others = max(len(m.ids) - 1, 1)
    return {a: sum(p if (p := m.p(a, b)) is not None else 0.5 for b in m.ids if b != a) / others for a in m.ids}


def avg_winrate(m: WinMatrix) -> dict[str, float]:
    """Share of all its per-example comparisons a candidate won (ties half)."""
    scores = {}
    for a in m.ids:
        games = sum(m.n(a, b) for b in m.ids if b != a)
        scores[a] = sum(m.b(a, b) for b in m.ids if b != a) / games if games else 0.0
    return scores


def elo(ids: Sequence[str], duels: Iterable[Duel], k: float = ELO_K) -> dict[str, float]:
    """Elo ratings replayed over the duel history in order; a duel's result is its win share."""
    ratings: dict[str, float] = {}
    for d in duels:
        rate = d.first_rate
        if rate is None or d.first == d.second:
            continue
        ra, rb = ratings.get(d.first, ELO_START), ratings.get(d.second, ELO_START)
        expected = 1.0 / (1.0 + 10 ** ((rb - ra) / 400))
        ratings[d.first] = ra + k * (rate - expected)
        ratings[d.second] = rb - k * (rate - expected)
    return {a: ratings.get(a, ELO_START) for a in ids}


def order(m: WinMatrix, scores: Mapping[str, float], tiebreak: Mapping[str, float] | None = None) -> list[str]:
    """Ids best first. Candidates that never dueled come last: a score they never earned ranks nothing."""
    tiebreak = tiebreak or {}
    position = {a: i for i, a in enumerate(m.ids)}
    return sorted(m.ids, key=lambda a: (not m.played(a), -scores[a], -tiebreak.get(a, 0.0), position[a]))


def rank_all(ids: Sequence[str], duels: Sequence[Duel]) -> dict[str, list[str]]:
    """Every base ranker's order over `ids` (Borda breaks ties, since Copeland ties often)."""
    m = WinMatrix(ids, duels)
    by_borda = borda(m)
    return {
        "copeland": order(m, copeland(m), by_borda),
        "borda": order(m, by_borda),
        "elo": order(m, elo(ids, duels), by_borda),
        "avg_winrate": order(m, avg_winrate(m), by_borda),
    }


def fuse(rankings: Mapping[str, Sequence[str]], weights: Mapping[str, float]) -> list[str]:
    """Weighted mean of normalised rank positions (1 = top, 0 = bottom); ties keep the first ranking's order."""
    names = [n for n in rankings if weights.get(n, 0.0) > 0] or list(rankings)
    first = rankings[names[0]]
    total = sum(weights.get(n, 1.0) for n in names) or 1.0
    score = {a: 0.0 for a in first}
    for name in names:
        ranked = rankings[name]
        span = max(len(ranked) - 1, 1)
        for pos, a in enumerate(ranked):
            score[a] += weights.get(name, 1.0) * (1 - pos / span) / total
    position = {a: i for i, a in enumerate(first)}
    return sorted(first, key=lambda a: (-round(score[a], 12), position[a]))


def dirichlet(alphas: Mapping[str, float], rng: random.Random) -> dict[str, float]:
    """One draw of ranker weights from Dirichlet(alphas), in `RANKERS` order so the draw is reproducible."""
    draws = {n: rng.gammavariate(max(alphas.get(n, 1.0), 1e-6), 1.0) for n in RANKERS}
    total = sum(draws.values()) or 1.0
    return {n: v / total for n, v in draws.items()}


def rank(method: str, ids: Sequence[str], duels: Sequence[Duel],
         weights: Mapping[str, float] | None = None) -> tuple[list[str], dict[str, list[str]]]:
    """(the order under `method`, every base ranker's order). `auto` needs `weights` (its Dirichlet draw)."""
    if method not in METHODS:
        raise ValueError(f"unknown ranking method {method!r} (known: {', '.join(METHODS)})")
    rankings = rank_all(ids, duels)
    if method in rankings:
        return rankings[method], rankings
    if method == "fused" or weights is None:
        return fuse(rankings, dict.fromkeys(RANKERS, 1.0)), rankings
    return fuse(rankings, weights), rankings


def win_rate_of(candidate: str, duels: Iterable[Duel]) -> float | None:
    """The share of its comparisons `candidate` won in `duels` (None when it took part in none)."""
    won = games = 0.0
    for d in duels:
        if d.first == candidate:
            won, games = won + d.wins + d.ties / 2, games + d.games
        elif d.second == candidate:
            won, games = won + d.losses + d.ties / 2, games + d.games
    return won / games if games else None
