"""A demo set's size, chosen from the scores the sizes tried so far measured.

The first two sets spread out (the largest size that fits, then 4: `SIZE_SCHEDULE`'s first),
so the two ends of the range are measured before anything is inferred. From then on the next size
is the untried one nearest (on a log scale, the larger on ties) to the best-scoring size so far,
among the sizes not cut off by a worse-scoring size on the far side: a size beyond one that scored
below the best is taken to score lower still (one peak), so it waits. When no such size is left, a
new set of the best size is drawn (another composition, as BootstrapFewShotWithRandomSearch
draws its sets at one size).

Why: a fixed schedule spent the rungs of auto's demo axis on ever smaller sets whatever had been
measured (on a 4-label routing task, after 16 demos scored 6 of 8 on validation and 4 demos 2 of
8, the next sets had 8, 2 and 1 demos: 5, 1 and 2 of 8), while the sizes near the best went
untried. The choice is a function of the measured scores only; nothing asks a model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

SIZE_SCHEDULE = (4, 8, 2, 16, 1, 12, 6, 3)  # the sizes a set may have after the largest, each capped by it
SPREAD = 2  # sizes measured in schedule order before the scores choose


def sizes_within(largest: int, cap: int) -> list[int]:
    """The sizes a set may have, in schedule order: `largest` first, each capped by `cap`."""
    return list(dict.fromkeys(max(min(k, largest, cap), 1) for k in (largest, *SIZE_SCHEDULE)))


def best_scores(measured: Iterable[Sequence[float]]) -> dict[int, float]:
    """The best score each size reached, from (size, score) pairs."""
    out: dict[int, float] = {}
    for size, score in measured:
        out[int(size)] = max(out.get(int(size), float("-inf")), score)
    return out


def size_order(sizes: Sequence[int], measured: Mapping[int, float]) -> list[int]:
    """`sizes` in the order the next set should try them (module docstring): the first is the choice,
    the rest are fallbacks for when no untried set of it can be formed."""
    known = {k: v for k, v in measured.items() if k in sizes}
    if len(known) < SPREAD:
        return [*(k for k in sizes if k not in known), *(k for k in sizes if k in known)]
    best = max(known, key=lambda k: (known[k], k))
    worse = [k for k, v in known.items() if v < known[best]]
    lo = max((k for k in worse if k < best), default=0)
    hi = min((k for k in worse if k > best), default=math.inf)

    def near(k: int) -> tuple[float, int]:
        return abs(math.log(k / best)), -k

    open_ = sorted((k for k in sizes if lo < k < hi and k not in known), key=near)
    rest = sorted((k for k in sizes if k != best and k not in open_), key=near)
    return [*open_, best, *rest]
