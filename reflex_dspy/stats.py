"""Paired significance of baseline → final on the test set.

Why not just `scipy.stats.wilcoxon` everywhere: most prompt metrics are 0/1, where almost every
|difference| is 1, so the signed-rank test runs on one giant tie and its normal approximation
overstates significance. For 0/1 scores the right test is the exact sign test on the discordant
pairs (McNemar's exact test). For graded scores we use Wilcoxon with an exact null only when it is
valid (small n, no ties) and a sign-flip permutation null otherwise. With fewer than
`MIN_DIFFERENCES` examples that changed, no test can say anything, so we report "not enough data"
rather than a p-value that looks meaningful.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

MIN_DIFFERENCES = 5  # with fewer changed examples even a perfect 5-0 record cannot reach p < 0.05
EXACT_WILCOXON_MAX_N = 25
PERMUTATIONS = 9999  # an exact enumeration whenever 2**n <= this (n <= 13)
_ZERO = 1e-12  # differences this small are float noise from averaging, not changes


@dataclass
class Significance:
    """Outcome of a paired test; `n` is the number of pairs that differ (what the test uses)."""

    test: str
    n: int
    p_value: float | None
    significant: bool | None
    alpha: float
    note: str

    def describe(self) -> str:
        """One line for summaries, e.g. `p=0.0234 ✓ significant (α=0.05, sign test, n=20)`."""
        if self.p_value is None:
            return f"{self.note} (n={self.n} paired examples with a difference)"
        verdict = "✓ significant" if self.significant else "✗ not significant"
        return f"p={self.p_value:.4f} {verdict} (α={self.alpha:g}, {self.test}, n={self.n})"


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of `eval_runs` passes."""
    data = [float(v) for v in values]
    if not data:
        raise ValueError("mean_std needs at least one value")
    mean = math.fsum(data) / len(data)
    if len(data) == 1:
        return mean, 0.0
    variance = math.fsum((v - mean) ** 2 for v in data) / (len(data) - 1)
    return mean, math.sqrt(variance)


def _is_binary(values: Iterable[float]) -> bool:
    return all(v == 0.0 or v == 1.0 for v in values)


def paired_significance(
    baseline: Mapping[str, float], final: Mapping[str, float], alpha: float = 0.05
) -> Significance:
    """Test whether `final` differs from `baseline`, pairing scores by example id.

    Only ids scored in both runs are paired (failed or missing examples drop out); non-finite
    scores are dropped too. Two-sided throughout.
    """
    pairs = [
        (float(baseline[i]), float(final[i]))
        for i in baseline
        if i in final and _finite(baseline[i]) and _finite(final[i])
    ]
    diffs = [f - b for b, f in pairs]
    diffs = [0.0 if abs(d) <= _ZERO else d for d in diffs]
    changed = [d for d in diffs if d != 0.0]
    binary = _is_binary(v for pair in pairs for v in pair)
    test = "sign test" if binary else "Wilcoxon signed-rank"
    counts = (
        f"{sum(d > 0 for d in changed)} improved, {sum(d < 0 for d in changed)} worse of {len(pairs)} paired"
    )

    if not changed:
        return Significance(test, 0, 1.0, False, alpha, f"no differences ({len(pairs)} paired)")
    if len(changed) < MIN_DIFFERENCES:
        return Significance(test, len(changed), None, None, alpha, "not enough data")
    if binary:
        return _sign_test(changed, alpha, counts)
    return _wilcoxon(changed, alpha, counts)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(float(value))


def _sign_test(changed: list[float], alpha: float, counts: str) -> Significance:
    """Exact two-sided binomial test on improvements vs regressions (McNemar's exact test)."""
    from scipy.stats import binomtest

    improved = sum(d > 0 for d in changed)
    p = float(binomtest(improved, len(changed), 0.5, alternative="two-sided").pvalue)
    return Significance("sign test", len(changed), p, p < alpha, alpha, counts)


def _wilcoxon(changed: list[float], alpha: float, counts: str) -> Significance:
    """Wilcoxon signed-rank on the non-zero differences; exact, permutation, or t-test fallback."""
    import numpy as np
    from scipy import stats

    d = np.asarray(changed, dtype=float)
    n = len(d)
    magnitudes = np.round(np.abs(d), 12)  # ties decided on rounded values, immune to float noise
    has_ties = len(np.unique(magnitudes)) < n
    try:
        if n <= EXACT_WILCOXON_MAX_N and not has_ties:
            p = float(stats.wilcoxon(d, zero_method="wilcox", method="exact").pvalue)
            return Significance("Wilcoxon signed-rank, exact", n, p, p < alpha, alpha, counts)
        ranks = stats.rankdata(magnitudes)  # average ranks for ties; unchanged by sign flips

        def positive_rank_sum(x: np.ndarray, axis: int) -> np.ndarray:
            return np.sum(np.where(np.moveaxis(x, axis, -1) > 0, ranks, 0.0), axis=-1)

        result = stats.permutation_test(
            (d,),
            positive_rank_sum,
            permutation_type="samples",  # one sample: the null flips the sign of each difference
            vectorized=True,
            n_resamples=PERMUTATIONS,
            batch=1000,
            alternative="two-sided",
            rng=np.random.default_rng(0),  # reproducible p-values from run to run
        )
        p = min(1.0, float(result.pvalue))
        kind = "exact" if 2**n <= PERMUTATIONS else "permutation"
        note = counts + ("; tied differences" if has_ties else "")
        return Significance(f"Wilcoxon signed-rank, {kind}", n, p, p < alpha, alpha, note)
    except (ValueError, FloatingPointError, ArithmeticError) as exc:
        t = stats.ttest_1samp(d, 0.0)
        p = float(t.pvalue)
        if not math.isfinite(p):
            return Significance("paired t-test", n, None, None, alpha, f"test failed: {exc}")
        return Significance("paired t-test", n, p, p < alpha, alpha, f"{counts}; Wilcoxon failed: {exc}")
