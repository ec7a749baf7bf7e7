"""Significance tests: known p-values, the binary/graded split, pairing by id, and honest refusals."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import pytest
from scipy import stats as scipy_stats

from reflex_dspy.stats import Significance, mean_std, paired_significance


def _binary(changes: str, ties: int = 0) -> tuple[dict[str, float], dict[str, float]]:
    """Baseline/final from a string of '+' (0 -> 1) and '-' (1 -> 0), plus unchanged pairs."""
    baseline, final = {}, {}
    for i, c in enumerate(changes):
        baseline[f"e{i}"], final[f"e{i}"] = (0.0, 1.0) if c == "+" else (1.0, 0.0)
    for j in range(ties):
        value = float(j % 2)
        baseline[f"t{j}"] = final[f"t{j}"] = value
    return baseline, final


def test_sign_test_nine_improvements_one_regression():
    baseline, final = _binary("+" * 9 + "-")
    result = paired_significance(baseline, final)
    # two-sided exact binomial: 2 * P(X <= 1 | n=10, p=0.5) = 2 * 11 / 1024
    assert result.test == "sign test"
    assert result.n == 10
    assert result.p_value == pytest.approx(22 / 1024)
    assert result.significant is True
    assert result.describe() == "p=0.0215 ✓ significant (α=0.05, sign test, n=10)"


def test_sign_test_ignores_concordant_pairs():
    """Examples right (or wrong) both times carry no information about the change."""
    alone = paired_significance(*_binary("+" * 7 + "--"))
    with_ties = paired_significance(*_binary("+" * 7 + "--", ties=30))
    assert with_ties.n == alone.n == 9
    assert with_ties.p_value == pytest.approx(alone.p_value)
    assert with_ties.p_value == pytest.approx(2 * (1 + 9 + 36) / 512)  # 2 * P(X <= 2 | n=9)
    assert with_ties.significant is False
    assert "7 improved, 2 worse of 39 paired" in with_ties.note


def test_no_differences_gives_p_one():
    baseline = {"a": 1.0, "b": 0.0, "c": 0.5}
    result = paired_significance(baseline, dict(baseline))
    assert result.p_value == 1.0
    assert result.significant is False
    assert result.n == 0
    assert "no differences" in result.note


def test_not_enough_data_refuses_to_give_a_p_value():
    baseline, final = _binary("++++", ties=20)  # 4 changes: even 4-0 cannot reach p < 0.05
    result = paired_significance(baseline, final)
    assert result.p_value is None
    assert result.significant is None
    assert result.n == 4
    assert result.describe() == "not enough data (n=4 paired examples with a difference)"


def test_wilcoxon_exact_matches_hand_computation():
    # differences (no ties): ranks of |d| are 0.05->1, 0.12->3 for the two negatives, so T- = 4.
    # subsets of ranks 1..8 summing to <= 4: {}, {1}, {2}, {3}, {1,2}, {4}, {1,3} = 7 of 256.
    diffs = [0.1, 0.2, -0.05, 0.3, 0.15, 0.25, -0.12, 0.4]
    baseline = {f"x{i}": 0.5 for i in range(len(diffs))}
    final = {f"x{i}": 0.5 + d for i, d in enumerate(diffs)}
    result = paired_significance(baseline, final)
    assert result.test == "Wilcoxon signed-rank, exact"
    assert result.n == 8
    assert result.p_value == pytest.approx(2 * 7 / 256)
    assert result.significant is False


def test_wilcoxon_drops_zero_differences():
    diffs = [0.1, 0.2, -0.05, 0.3, 0.15, 0.25, -0.12, 0.4]
    baseline = {f"x{i}": 0.5 for i in range(len(diffs) + 5)}
    final = {f"x{i}": 0.5 + d for i, d in enumerate(diffs)} | {f"x{i}": 0.5 for i in range(8, 13)}
    result = paired_significance(baseline, final)
    assert result.n == 8
    assert result.p_value == pytest.approx(2 * 7 / 256)


def _brute_force_signed_rank_p(diffs: list[float]) -> float:
    """Two-sided sign-flip p of the positive rank sum, by enumerating all 2**n sign patterns."""
    ranks = scipy_stats.rankdata([abs(d) for d in diffs])
    observed = sum(r for r, d in zip(ranks, diffs, strict=True) if d > 0)
    null = [
        sum(r for r, s in zip(ranks, signs, strict=True) if s)
        for signs in itertools.product([0, 1], repeat=len(diffs))
    ]
    low = sum(t <= observed + 1e-9 for t in null) / len(null)
    high = sum(t >= observed - 1e-9 for t in null) / len(null)
    return min(1.0, 2 * min(low, high))


def test_wilcoxon_with_tied_magnitudes_uses_exact_sign_flip_enumeration():
    diffs = [0.25, 0.25, 0.5, -0.25, 0.75, 0.5, 0.25, -0.5, 0.5, 0.75]
    baseline = {f"x{i}": 0.25 for i in range(len(diffs))}
    final = {f"x{i}": 0.25 + d for i, d in enumerate(diffs)}
    result = paired_significance(baseline, final)
    assert result.test == "Wilcoxon signed-rank, exact"
    assert "tied differences" in result.note
    assert result.p_value == pytest.approx(_brute_force_signed_rank_p(diffs))
    # ranks 2.5 (x4), 6.5 (x4), 9.5 (x2); T- = 9; 35 of 1024 sign patterns have T- <= 9
    assert result.p_value == pytest.approx(2 * 35 / 1024)


def test_all_equal_magnitudes_reduce_to_the_sign_test():
    """Graded scores whose changes are all the same size carry only signs: p equals the sign test."""
    baseline = {f"x{i}": 0.5 for i in range(10)}
    final = {f"x{i}": 0.75 if i < 8 else 0.25 for i in range(10)}
    result = paired_significance(baseline, final)
    assert result.p_value == pytest.approx(2 * (1 + 10 + 45) / 1024)


def test_large_tied_sample_uses_permutation_close_to_exact():
    baseline = {f"x{i}": 0.5 for i in range(40)}
    final = {f"x{i}": 0.75 if i < 28 else 0.25 for i in range(40)}
    result = paired_significance(baseline, final)
    assert result.test == "Wilcoxon signed-rank, permutation"
    exact = scipy_stats.binomtest(28, 40, 0.5).pvalue  # the exact answer for all-equal magnitudes
    assert result.p_value == pytest.approx(exact, abs=0.005)
    assert result.significant is True
    # a fixed generator: the same data gives the same p on every run
    assert paired_significance(baseline, final).p_value == result.p_value


def test_pairs_by_id_and_drops_unpaired_and_non_finite():
    baseline, final = _binary("+" * 9 + "-")
    baseline_extra = baseline | {"only_in_baseline": 0.0, "nan": 0.0}
    # shuffled order, an id missing from the baseline, and a NaN score (a failed example)
    final_extra = dict(reversed(list(final.items()))) | {"only_in_final": 1.0, "nan": math.nan}
    result = paired_significance(baseline_extra, final_extra)
    assert result.n == 10
    assert result.p_value == pytest.approx(22 / 1024)
    assert "of 10 paired" in result.note


def test_fractional_scores_are_not_treated_as_binary():
    baseline = {f"x{i}": 0.0 for i in range(6)} | {"half": 0.5}
    final = {f"x{i}": 1.0 for i in range(6)} | {"half": 0.5}
    assert paired_significance(baseline, final).test.startswith("Wilcoxon")


def test_t_test_fallback_when_scipy_raises(monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("simulated scipy failure")

    monkeypatch.setattr(scipy_stats, "wilcoxon", broken)
    diffs = [0.1, 0.2, -0.05, 0.3, 0.15, 0.25, -0.12, 0.4]
    baseline = {f"x{i}": 0.5 for i in range(len(diffs))}
    final = {f"x{i}": 0.5 + d for i, d in enumerate(diffs)}
    result = paired_significance(baseline, final)
    assert result.test == "paired t-test"
    assert result.p_value == pytest.approx(scipy_stats.ttest_1samp(diffs, 0.0).pvalue)
    assert "simulated scipy failure" in result.note


def test_describe_not_significant_and_custom_alpha():
    result = Significance("sign test", 9, 0.1797, False, 0.1, "")
    assert result.describe() == "p=0.1797 ✗ not significant (α=0.1, sign test, n=9)"


def test_mean_std():
    assert mean_std([0.6, 0.8, 0.7]) == (pytest.approx(0.7), pytest.approx(0.1))
    assert mean_std([0.42]) == (0.42, 0.0)
    with pytest.raises(ValueError):
        mean_std([])


def test_stats_does_not_import_dspy():
    code = "import sys, reflex_dspy.stats; sys.exit(1 if 'dspy' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
