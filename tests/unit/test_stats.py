"""analysis.stats on fixtures small enough to check by hand, and against scipy."""

import itertools
import math
import warnings

import numpy as np
import pytest
from scipy import stats as st

from analysis import stats

A3, B3 = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0]  # differences 1, 2, 3: mean 2, sd 1


def test_paired_t_by_hand_and_scipy():
    r = stats.paired_t(A3, B3)
    t = 2 / (1 / math.sqrt(3))
    assert r.statistic == pytest.approx(t)
    # Student t with 2 df has a closed form: two-sided p = 1 − |t| / √(t² + 2)
    assert r.p == pytest.approx(1 - t / math.sqrt(t * t + 2))
    assert r.p == pytest.approx(st.ttest_rel(B3, A3).pvalue)
    assert (r.test, r.n) == ("paired t-test", 3)


def test_paired_t_edge_cases():
    assert math.isnan(stats.paired_t([1.0], [2.0]).p)
    assert stats.paired_t([1, 2, 3], [2, 3, 4]).p == 0.0  # identical non-zero differences
    assert stats.paired_t([1, 2, 3], [1, 2, 3]).p == 1.0
    with pytest.raises(ValueError):
        stats.paired_t([1, 2], [1, 2, 3])


def test_welch_by_hand_and_scipy():
    a, b = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]
    r = stats.welch_t(a, b)
    se = math.sqrt(1.0 / 3 + (5 / 3) / 4)  # var a = 1, var b = 5/3
    assert r.statistic == pytest.approx(3.5 / se)
    ref = st.ttest_ind(b, a, equal_var=False)
    assert r.p == pytest.approx(ref.pvalue)
    assert r.statistic == pytest.approx(ref.statistic)


def test_exact_permutation_by_hand():
    # sums ±1 ±2 ±3: 6, 0, 2, −4, 4, −2, 0, −6 → |sum| ≥ 6 in 2 of 8 patterns
    r = stats.permutation_paired(A3, B3)
    assert r.p == pytest.approx(0.25)
    assert r.test == "exact permutation test"


def test_exact_permutation_matches_scipy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=9)
    b = a + rng.normal(0.5, 1, size=9)
    ref = st.permutation_test((a, b), lambda x, y: np.mean(y - x), permutation_type="samples",
                              n_resamples=np.inf, alternative="two-sided")
    assert stats.permutation_paired(a, b).p == pytest.approx(ref.pvalue)


def test_monte_carlo_permutation_is_seeded_and_close_to_exact():
    rng = np.random.default_rng(2)
    a = rng.normal(size=12)
    b = a + rng.normal(0.3, 1, size=12)
    exact = stats.permutation_paired(a, b).p
    mc = stats.permutation_paired(a, b, max_exact=4, n_resamples=20_000, rng=7)
    assert mc.test == "Monte Carlo permutation test"
    assert mc.p == pytest.approx(exact, abs=0.01)
    assert mc.p == stats.permutation_paired(a, b, max_exact=4, n_resamples=20_000, rng=7).p


def test_wilcoxon_by_hand_and_scipy():
    # all five differences positive: W+ = 15 and only the all-positive / all-negative patterns
    # are as extreme: p = 2 / 2**5
    r = stats.wilcoxon([0] * 5, [1, 2, 3, 4, 5])
    assert (r.p, r.statistic) == (pytest.approx(2 / 32), 15.0)
    # ties: |d| = 1, 1, 2 → ranks 1.5, 1.5, 3; again 2 of 8 patterns as extreme
    assert stats.wilcoxon([0, 0, 0], [1, 1, 2]).p == pytest.approx(0.25)
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=11), rng.normal(0.4, 1, size=11)
    ref = st.wilcoxon(b - a, method="exact")
    assert stats.wilcoxon(a, b).p == pytest.approx(ref.pvalue)
    big_a, big_b = rng.normal(size=40), rng.normal(0.2, 1, size=40)
    ref = st.wilcoxon(big_b - big_a, method="asymptotic", correction=False)
    assert stats.wilcoxon(big_a, big_b).p == pytest.approx(ref.pvalue)


def test_effect_sizes_by_hand():
    assert stats.cohens_dz(A3, B3) == pytest.approx(2.0)
    assert stats.cohens_d([1, 2, 3], [4, 5, 6]) == pytest.approx(3.0)  # diff 3, pooled sd 1
    assert math.isnan(stats.cohens_dz([1], [2]))


def test_bootstrap_ci():
    lo, hi = stats.bootstrap_ci_diff([1, 2, 3], [3, 4, 5], paired=True)
    assert (lo, hi) == (2.0, 2.0)  # every difference is 2
    lo, hi = stats.bootstrap_ci_diff(A3, B3, paired=True, n_resamples=5000, rng=0)
    assert 1.0 <= lo < 2.0 < hi <= 3.0
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=30), rng.normal(1, 1, size=30)
    ref = st.bootstrap((b - a,), np.mean, method="percentile", n_resamples=10_000, rng=1).confidence_interval
    lo, hi = stats.bootstrap_ci_diff(a, b, paired=True, rng=0)
    assert lo == pytest.approx(ref.low, abs=0.05) and hi == pytest.approx(ref.high, abs=0.05)
    lo, hi = stats.bootstrap_ci_diff(a, b, paired=False, rng=0)
    assert lo < b.mean() - a.mean() < hi
    assert stats.bootstrap_ci_diff(a, b, paired=True, rng=5) == stats.bootstrap_ci_diff(a, b, paired=True, rng=5)


def test_mcnemar_by_hand_and_scipy():
    exact, midp = stats.mcnemar(0, 5)  # P(X ≤ 0) = 1/32
    assert exact == pytest.approx(2 / 32) and midp == pytest.approx(1 / 32)
    exact, midp = stats.mcnemar(3, 3)  # P(X ≤ 3 | n=6) = 42/64, P(X = 3) = 20/64
    assert exact == 1.0 and midp == pytest.approx(2 * (42 - 10) / 64)
    assert stats.mcnemar(0, 0) == (1.0, 1.0)
    assert stats.mcnemar(4, 15)[0] == pytest.approx(st.binomtest(4, 19).pvalue)


def test_mcnemar_pooled_counts():
    ca = np.array([[1, 0, 0, 1], [1, 1, 0, 0]])
    cb = np.array([[1, 1, 1, 1], [0, 1, 1, 0]])
    r = stats.mcnemar_pooled(ca, cb)  # b right where a wrong: 3; b wrong where a right: 1
    assert r.p == pytest.approx(stats.mcnemar(3, 1)[1])
    assert r.statistic == 2


def test_paired_bootstrap_examples():
    ca = np.array([[1, 0, 1, 0] * 25])
    same = stats.paired_bootstrap_examples(ca, ca)
    assert same.p == 1.0 and same.statistic == 0.0
    cb = np.ones_like(ca)
    r = stats.paired_bootstrap_examples(ca, cb, n_resamples=2000, rng=0)
    assert r.statistic == pytest.approx(0.5)  # 50 of 100 examples flip to right
    assert r.p == pytest.approx(1 / 2001)  # no centred resample gets as far as 0.5
    assert r.at_resolution and r.p_text() == "p<1/2000" and str(r).startswith("p<1/2000 (")


def test_example_bootstrap_is_calibrated_under_the_null():
    rng = np.random.default_rng(6)
    ps = []
    for _ in range(50):
        p = rng.uniform(0.5, 0.9, size=300)  # example difficulty, the same for both models
        ca = rng.random((5, 300)) < p
        cb = rng.random((5, 300)) < p
        ps.append(stats.paired_bootstrap_examples(ca, cb, n_resamples=1000, rng=rng).p)
    assert np.mean(np.array(ps) > 0.05) >= 0.9


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 → ×3, ×2, ×1 = 0.03, 0.06, 0.04 → running max 0.03, 0.06, 0.06
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    out = stats.holm([0.2, np.nan, 0.01])
    assert math.isnan(out[1]) and out[0] == pytest.approx(0.2) and out[2] == pytest.approx(0.02)
    assert stats.holm([0.9, 0.8]).max() <= 1.0


def test_levene_matches_scipy():
    a, b = [1.0, 5.0, 9.0, 2.0], [4.0, 5.0, 5.5, 4.5]
    assert stats.levene(a, b).p == pytest.approx(st.levene(a, b, center="median").pvalue)


def test_compare_pairs_by_key_and_falls_back_to_welch():
    c = stats.compare([1, 2, 3, 9], [2, 4, 6], [0, 1, 2, 3], [0, 1, 2])
    assert c.n_pairs == 3 and c.mean_diff == pytest.approx(2.0)
    assert c.primary.test == "paired t-test" and c.primary.p == pytest.approx(stats.paired_t(A3, B3).p)
    assert c.effect_name == "Cohen's d_z" and c.effect == pytest.approx(2.0)
    assert {t.test for t in c.tests} == {"paired t-test", "exact permutation test",
                                         "Wilcoxon signed-rank test", "Welch's t-test"}
    c = stats.compare([1, 2, 3], [4, 5, 6], ["a", "b", "c"], ["x", "y", "z"])
    assert c.n_pairs == 0 and c.primary.test == "Welch's t-test" and c.effect_name == "Cohen's d"


def test_p_values_print_with_their_test():
    assert str(stats.paired_t(A3, B3)) == "p=0.074 (paired t-test, n=3)"
    assert stats.format_p(1.23e-9) == "p=1.2e-09"


def test_resampled_p_prints_at_its_resolution():
    floor = stats.TestResult("Monte Carlo permutation test", 1 / 10_001, resamples=10_000)
    assert floor.p_text() == "p<1/10000"
    assert floor.p_text(adjusted=3 / 10_001) == "p<3.0e-04"  # Holm ×3 of a bound is a bound
    above = stats.TestResult("Monte Carlo permutation test", 3 / 10_001, resamples=10_000)
    assert not above.at_resolution and above.p_text() == "p=3.0e-04"
    exact = stats.TestResult("exact permutation test", 2 / 2 ** 12)  # exact: a number, however small
    assert exact.p_text() == "p=4.9e-04" and exact.p_text(0.01) == "p=0.01"
    rng = np.random.default_rng(8)
    a = rng.normal(size=30)
    mc = stats.permutation_paired(a, a + 5, n_resamples=1000, rng=0)  # every d > 0: no pattern as extreme
    assert mc.resamples == 1000 and mc.p == pytest.approx(1 / 1001) and mc.p_text() == "p<1/1000"


def test_seed_means_and_slopes_by_hand():
    gaps = np.array([[0.0, 1.0, 2.0], [np.nan, 1.0, 3.0], [5.0, np.nan, np.nan]])
    x = [0.0, 1.0, 2.0]
    np.testing.assert_allclose(stats.seed_means(gaps), [1.0, 2.0, 5.0])
    s = stats.seed_slopes(gaps, x)
    assert s[0] == pytest.approx(1.0) and s[1] == pytest.approx(2.0) and math.isnan(s[2])  # one level: no slope
    r = stats.slope_t(gaps, x)  # slopes 1 and 2: mean 1.5, sd √0.5, t = 1.5 / 0.5 = 3, 1 df
    assert (r.n, r.statistic) == (2, pytest.approx(3.0))
    assert r.p == pytest.approx(st.ttest_1samp([1.0, 2.0], 0).pvalue)
    rng = np.random.default_rng(9)
    g = rng.normal(size=(8, 4)) + 2.0 * np.array([0.3, 0.5, 0.7, 0.9])
    ref = [st.linregress([0.3, 0.5, 0.7, 0.9], row).slope for row in g]
    np.testing.assert_allclose(stats.seed_slopes(g, [0.3, 0.5, 0.7, 0.9]), ref)


def test_noise_verdict_is_calibrated_under_the_null_and_finds_a_planted_trend():
    """Table 3-shaped null (3 tasks, 4 T, 10 seeds; seeds carry their own gap and trend into
    every T): the per-seed tests call at most 7% of 200 draws significant, the old test that pools
    (T, seed) pairs far more; a planted interaction (the gap grows 6 points per unit T) is found."""
    from analysis.calibration import significant_share

    null = significant_share(200, rng=0)
    assert null["main, per seed"] <= 0.07 and null["trend, per seed"] <= 0.07
    assert null["main, pooled (old)"] >= 0.15  # the defect the per-seed test removes
    one_task = significant_share(200, rng=1, tasks=("qnli",), temps=(0.0, 0.3, 0.5, 0.7, 0.9), seeds=5)
    assert one_task["main, per seed"] <= 0.07 and one_task["trend, per seed"] <= 0.07
    planted = significant_share(100, rng=2, slope=6.0)
    assert planted["trend, per seed"] >= 0.9
    assert planted["main, per seed"] <= 0.1  # a centred trend is no main effect


def test_compare_pairs_runs_by_key_in_any_order():
    """Tables hand runs over sorted by validation score, so CE's and CE+SCL's seeds come in
    different orders: the pairs are made by key, never by position. Seed 9 has a CE run only and
    seed 7 a CE+SCL run only: both count for Welch's test, neither in a pair."""
    ce = {0: 0.61, 1: 0.70, 2: 0.82, 3: 0.64, 4: 0.75, 9: 0.90}
    gain = {0: 0.02, 1: 0.05, 2: -0.01, 3: 0.04, 4: 0.03, 7: 0.0}
    ka, kb = [3, 9, 1, 4, 0, 2], [2, 0, 7, 4, 1, 3]
    a = [ce[k] for k in ka]
    b = [0.5 if k == 7 else ce[k] + gain[k] for k in kb]
    c = stats.compare(a, b, ka, kb, n_resamples=2000)
    seeds = [0, 1, 2, 3, 4]
    pa, pb = [ce[k] for k in seeds], [ce[k] + gain[k] for k in seeds]
    assert c.n_pairs == 5 and (c.n_a, c.n_b) == (6, 6)
    assert c.mean_diff == pytest.approx(np.mean([gain[k] for k in seeds]))
    assert c.primary.p == pytest.approx(stats.paired_t(pa, pb).p)
    assert c.effect == pytest.approx(stats.cohens_dz(pa, pb))
    by_name = {t.test: t for t in c.tests}
    assert by_name["exact permutation test"].p == pytest.approx(stats.permutation_paired(pa, pb).p)
    assert by_name["Wilcoxon signed-rank test"].p == pytest.approx(stats.wilcoxon(pa, pb).p)
    assert by_name["Welch's t-test"].p == pytest.approx(stats.welch_t(a, b).p)
    lo, hi = c.ci
    assert lo < c.mean_diff < hi and 0.0 < hi - lo < 0.06


# ---- edges and the fields every result carries --------------------------------------------------

def test_p_values_print_at_the_threshold_and_when_missing():
    assert stats.format_p(1e-3) == "p=0.001" and stats.format_p(9.9e-4) == "p=9.9e-04"
    assert stats.format_p(None) == "p n/a" and stats.format_p(float("nan")) == "p n/a"
    r = stats.TestResult("Monte Carlo permutation test", 1 / 11, resamples=10)  # at its floor
    assert r.p_text(0.3) == "p<0.33"  # the bound 1/R, adjusted as the p was: 0.3 × 11/10
    assert r.p_text(0.99) == "p<1"  # never above 1
    assert r.p_text(float("nan")) == "p n/a"


def test_resamples_are_cut_for_many_items_but_not_below_the_floor():
    assert stats.resamples_for(10) == stats.N_RESAMPLES
    assert stats.resamples_for(2_000) == stats.RESAMPLE_BUDGET // 2_000 == 2_500
    assert stats.resamples_for(10**6) == stats.MIN_RESAMPLES
    assert stats.resamples_for(0, 10**7) == stats.resamples_for(1, 10**7) == stats.RESAMPLE_BUDGET


def test_paired_tests_refuse_arrays_that_are_not_one_dimensional():
    with pytest.raises(ValueError, match="two 1-d arrays of one length"):
        stats.paired_t([[1, 2]], [[1, 2]])


def test_identical_differences_are_certain_and_signed():
    up, down = stats.paired_t([1, 2, 3], [2, 3, 4]), stats.paired_t([3, 2, 1], [2, 1, 0])
    assert (up.p, up.statistic, down.p, down.statistic) == (0.0, np.inf, 0.0, -np.inf)
    same = stats.paired_t([1, 2, 3], [1, 2, 3])
    assert (same.p, same.statistic, same.n) == (1.0, 0.0, 3)
    one = stats.paired_t([1.0], [2.0])
    assert (one.test, one.n) == ("paired t-test", 1) and math.isnan(one.statistic)


def test_welch_edges():
    few = stats.welch_t([1.0], [2.0, 3.0])
    assert math.isnan(few.p) and (few.test, few.n) == ("Welch's t-test", 3)
    assert math.isnan(stats.welch_t([1.0, 2.0], [3.0]).p)
    flat = stats.welch_t([2.0, 2.0], [5.0, 5.0, 5.0])
    assert (flat.p, flat.statistic, flat.n) == (0.0, np.inf, 5)
    same = stats.welch_t([2.0, 2.0], [2.0, 2.0])
    assert (same.p, same.statistic) == (1.0, 0.0)
    r = stats.welch_t([1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0])
    assert r.n == 7 and r.detail == f"df={st.ttest_ind([4, 5, 6, 7], [1, 2, 3], equal_var=False).df:.1f}"


def test_permutation_edges_and_monte_carlo_bookkeeping():
    assert math.isnan(stats.permutation_paired([], []).p)
    exact = stats.permutation_paired(A3, B3)
    assert (exact.n, exact.statistic, exact.detail, exact.resamples) == (3, 2.0, "8 sign patterns", 0)
    rng = np.random.default_rng(2)
    a = rng.normal(size=20)
    b = a + rng.normal(0.3, 1, size=20)
    mc = stats.permutation_paired(a, b, n_resamples=4_500, rng=1)  # not a whole number of CHUNKs
    assert (mc.test, mc.n, mc.resamples, mc.detail) == ("Monte Carlo permutation test", 20, 4_500,
                                                        "4500 random sign patterns")
    assert mc.statistic == pytest.approx(np.mean(b - a))
    # every pair flipped at random: the share as extreme as observed, counted over all 4,500
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=12)))
    d12 = (b - a)[:12]
    exact12 = float(np.mean(np.abs(signs @ d12) >= abs(d12.sum()) - 1e-9))
    assert stats.permutation_paired(a[:12], b[:12], max_exact=4, n_resamples=4_500, rng=1).p == pytest.approx(exact12, abs=0.02)


def test_wilcoxon_edges():
    zero = stats.wilcoxon([1, 2], [1, 2])
    assert (zero.p, zero.statistic, zero.n) == (1.0, 0.0, 0)
    assert math.isnan(stats.wilcoxon([], []).p)
    r = stats.wilcoxon([0, 0, 0, 0], [1, -2, 3, 0])  # the zero is dropped: n = 3, W+ = 1 + 3
    assert (r.n, r.statistic, r.detail) == (3, 4.0, "exact")
    rng = np.random.default_rng(3)
    a = rng.normal(size=40)
    assert stats.wilcoxon(a, a + 0.1).detail == "normal approximation"


def test_effect_sizes_on_unequal_groups_and_without_spread():
    a, b = [1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0]  # var 1 and 20/3: pooled var (2·1 + 3·20/3) / 5
    assert stats.cohens_d(a, b) == pytest.approx(3.0 / math.sqrt(22 / 5))
    assert stats.cohens_d(b, a) == pytest.approx(-3.0 / math.sqrt(22 / 5))
    assert math.isnan(stats.cohens_d([1.0], [2.0, 3.0])) and math.isnan(stats.cohens_d([1.0, 2.0], [3.0]))
    assert stats.cohens_d([1.0, 2.0], [3.0, 5.0]) == pytest.approx(2.5 / math.sqrt(1.25))
    assert stats.cohens_d([1.0, 1.0], [2.0, 2.0]) == np.inf and stats.cohens_d([2.0, 2.0], [1.0, 1.0]) == -np.inf
    assert stats.cohens_d([1.0, 1.0], [1.0, 1.0]) == 0.0
    assert stats.cohens_dz([1, 2], [2, 3]) == np.inf and stats.cohens_dz([1, 2], [1, 2]) == 0.0
    assert stats.cohens_dz([2, 3], [1, 2]) == -np.inf


def test_bootstrap_interval_edges():
    assert all(math.isnan(x) for x in stats.bootstrap_ci_diff([], [], paired=True))
    assert all(math.isnan(x) for x in stats.bootstrap_ci_diff([], [1.0], paired=False))
    lo90, hi90 = stats.bootstrap_ci_diff(A3, B3, paired=True, confidence=0.5, n_resamples=2_500, rng=0)
    lo, hi = stats.bootstrap_ci_diff(A3, B3, paired=True, n_resamples=2_500, rng=0)
    assert lo <= lo90 < hi90 <= hi and (lo, hi) != (lo90, hi90)


def test_levene_edges_and_fields():
    few = stats.levene([1.0], [2.0, 3.0])
    assert (few.test, few.n) == ("Brown–Forsythe test", 3) and math.isnan(few.p)
    assert math.isnan(stats.levene([1.0, 2.0], [3.0]).p)
    assert stats.levene([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]).p == 1.0  # no spread anywhere: scipy says nan
    r = stats.levene([1.0, 2.0, 3.0], [1.0, 1.5, 2.0, 2.5])
    ref = st.levene([1.0, 2.0, 3.0], [1.0, 1.5, 2.0, 2.5], center="median")
    assert (r.statistic, r.n) == (pytest.approx(ref.statistic), 7)
    assert r.detail == "sd 1.00 vs 0.65"


def test_mcnemar_with_one_discordant_example():
    assert stats.mcnemar(0, 1) == (1.0, pytest.approx(0.5))


def test_pooled_mcnemar_fields():
    ca = np.array([[1, 1, 0, 0, 1], [0, 1, 1, 1, 1]])
    cb = np.array([[1, 0, 1, 1, 1], [1, 1, 1, 0, 1]])  # b right where a wrong: 3; b wrong where a right: 2
    r = stats.mcnemar_pooled(ca, cb)
    assert (r.test, r.statistic, r.n, r.detail) == ("McNemar mid-p, pooled over pairs", 1.0, 10,
                                                    "b→right 3, b→wrong 2")
    assert r.p == pytest.approx(stats.mcnemar(3, 2)[1])


def test_example_bootstrap_edges_and_fields():
    empty = stats.paired_bootstrap_examples(np.zeros((2, 0)), np.zeros((2, 0)))
    assert (empty.test, empty.n) == ("paired bootstrap over examples", 0) and math.isnan(empty.p)
    one = stats.paired_bootstrap_examples(np.array([[0], [0]]), np.array([[1], [1]]), n_resamples=100)
    assert one.n == 1 and one.statistic == 1.0 and one.p == pytest.approx(1 / 101)
    ca = np.array([[1, 0, 1, 0, 1, 1], [0, 0, 1, 1, 1, 0], [1, 1, 0, 0, 1, 0]])
    cb = np.array([[1, 1, 1, 0, 1, 1], [1, 0, 1, 1, 1, 0], [1, 1, 1, 0, 1, 1]])
    r = stats.paired_bootstrap_examples(ca, cb, n_resamples=3_000)
    assert (r.n, r.resamples, r.detail) == (6, 3_000, "3 seed pairs, 3000 resamples")
    assert r.statistic == pytest.approx((cb - ca).mean()) and 0 < r.p < 1
    assert r.p == stats.paired_bootstrap_examples(ca, cb, n_resamples=3_000, rng=0).p  # seeded: 0


def test_a_seed_without_a_level_has_no_mean_and_slope_t_says_how_many_seeds():
    means = stats.seed_means([[1.0, 3.0], [np.nan, np.nan]])
    assert means[0] == 2.0 and math.isnan(means[1])
    r = stats.slope_t([[0.0, 1.0, 2.0], [0.0, 2.0, 4.0], [1.0, np.nan, np.nan]], [0.0, 1.0, 2.0])
    assert (r.test, r.n, r.detail) == ("t-test of per-seed slopes", 2, "2 seeds")


def test_compare_without_pairs_is_welch_with_its_own_interval_and_effect():
    a, b = [0.60, 0.62, 0.65, 0.61], [0.70, 0.66, 0.72]
    c = stats.compare(a, b, [0, 1, 2, 3], [7, 8, 9], n_resamples=1_500, rng=4)
    assert (c.n_a, c.n_b, c.n_pairs) == (4, 3, 0)
    assert c.mean_diff == pytest.approx(np.mean(b) - np.mean(a))
    assert c.ci == stats.bootstrap_ci_diff(a, b, paired=False, n_resamples=1_500, rng=np.random.default_rng(4))
    assert (c.effect_name, c.effect) == ("Cohen's d", pytest.approx(stats.cohens_d(a, b)))
    assert c.primary is c.tests[0] and c.primary.p == pytest.approx(stats.welch_t(a, b).p)
    one = stats.compare([0.6], [0.7, 0.8], [0], [1])  # Welch needs two runs a side: no primary test
    assert one.primary is None and one.mean_diff == pytest.approx(0.15)
    empty = stats.compare([], [0.7, 0.8], [], [1, 2])
    assert empty.primary is None and math.isnan(empty.mean_diff)


def test_compare_with_two_pairs_is_already_paired():
    c = stats.compare([0.6, 0.7], [0.65, 0.8], [0, 1], [0, 1])
    assert c.n_pairs == 2 and c.primary.test == "paired t-test"


def test_compare_threads_its_resamples_and_one_generator_through_every_test():
    """20 pairs: the permutation test is Monte Carlo. n_resamples reaches it and the interval, one
    seeded generator draws for both in turn, and the default seed is 0."""
    rng = np.random.default_rng(5)
    a = rng.normal(size=20)
    b = a + rng.normal(0.4, 1, size=20)
    keys = list(range(20))
    c = stats.compare(a, b, keys, keys, n_resamples=3_000, rng=2)
    perm = next(t for t in c.tests if t.test == "Monte Carlo permutation test")
    g = np.random.default_rng(2)
    assert perm.resamples == 3_000 and perm.p == stats.permutation_paired(a, b, n_resamples=3_000, rng=g).p
    assert c.ci == stats.bootstrap_ci_diff(a, b, paired=True, n_resamples=3_000, rng=g)
    default = stats.compare(a, b, keys, keys, n_resamples=3_000)
    assert default.ci == stats.compare(a, b, keys, keys, n_resamples=3_000, rng=0).ci


def test_levene_with_two_runs_on_one_side():
    """Two runs a side are enough for the Brown–Forsythe test. a = [1, 3]: median 2, deviations
    1, 1; b = [0, 1, 5]: median 1, deviations 1, 0, 4. Between groups 2·(1 − 7/5)² + 3·(5/3 − 7/5)²
    = 8/15, within 78/9: W = 3 · (8/15) / (78/9) = 12/65 on (1, 3) df, either way round."""
    for a, b in (([1.0, 3.0], [0.0, 1.0, 5.0]), ([0.0, 1.0, 5.0], [1.0, 3.0])):
        r = stats.levene(a, b)
        assert (r.statistic, r.n) == (pytest.approx(12 / 65), 5)
        assert r.p == pytest.approx(st.f.sf(12 / 65, 1, 3))
        assert r.p == pytest.approx(st.levene(a, b, center="median").pvalue)


def test_undefined_effect_sizes_and_slopes_come_without_numpy_warnings():
    """A group of one run has no sd, a group without spread an infinite d, a seed with fewer than
    two levels no slope: each is answered (NaN, ±inf) without dividing by zero or taking the sd of
    one value, so a report over many cells prints no RuntimeWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(stats.cohens_d([1.0], [2.0, 3.0])) and math.isnan(stats.cohens_d([], [2.0, 3.0]))
        assert math.isnan(stats.cohens_d([1.0, 2.0], [3.0]))
        assert stats.cohens_d([1.0, 1.0], [2.0, 2.0]) == np.inf
        assert stats.cohens_d([2.0, 2.0, 2.0], [1.0, 1.0]) == -np.inf
        s = stats.seed_slopes([[1.0, np.nan, np.nan], [np.nan] * 3, [0.0, 1.0, 2.0]], [0.0, 1.0, 2.0])
        assert math.isnan(s[0]) and math.isnan(s[1]) and s[2] == pytest.approx(1.0)
        same_x = stats.seed_slopes([[1.0, 2.0, 4.0]], [0.5, 0.5, 0.5])  # one distinct level
        assert math.isnan(same_x[0])


def test_flat_gaps_have_slope_zero_and_no_trend():
    """A seed whose gap is the same at every noise level has slope exactly 0, whatever the gap
    and wherever a level is missing: the slope is taken on centred gaps, so the constant leaves no
    rounding residue that the t-test of the slopes could blow up into a trend. Every seed flat:
    t = 0, p = 1. (x are the noise levels T of Table 3, whose deviations do not sum to 0 exactly.)"""
    x = [0.0, 0.3, 0.5, 0.7, 0.9]
    gaps = np.array([[1.5] * 5, [-0.25] * 5, [2.0, 2.0, np.nan, 2.0, 2.0], [np.nan, 0.75, 0.75, np.nan, 0.75]])
    assert stats.seed_slopes(gaps, x).tolist() == [0.0, 0.0, 0.0, 0.0]
    r = stats.slope_t(gaps, x)
    assert (r.p, r.statistic, r.n) == (1.0, 0.0, 4)


def test_pooled_mcnemar_counts_0_1_of_any_dtype_alike():
    """Correctness arrives as int8 from the database (load_correct), as bool from a comparison, or
    as float 0/1 once a table has been through a frame with missing values: the counts are the same."""
    ca = np.array([[1, 1, 0, 0, 1], [0, 1, 1, 1, 1]])
    cb = np.array([[1, 0, 1, 1, 1], [1, 1, 1, 0, 1]])  # b right where a wrong: 3; b wrong where a right: 2
    for dtype in (bool, np.int8, float):
        r = stats.mcnemar_pooled(ca.astype(dtype), cb.astype(dtype))
        assert (r.statistic, r.n, r.detail) == (1.0, 10, "b→right 3, b→wrong 2")
        assert r.p == pytest.approx(stats.mcnemar(3, 2)[1])


def test_mcnemar_with_equal_discordant_counts_is_one_and_never_above():
    """n01 = n10: nothing favours either model. The exact p is 1 and the mid-p
    2·P(X < k) + P(X = k) is 1 by symmetry, which the binomial sums can overshoot by a rounding
    step (n = 6 gives 1 + 2⁻⁵²): the p is capped, never above 1."""
    for k in range(1, 40):
        exact, midp = stats.mcnemar(k, k)
        assert exact == 1.0 and midp == pytest.approx(1.0) and midp <= 1.0
    assert stats.mcnemar(3, 3) == (1.0, 1.0)


def test_example_bootstrap_default_seed_is_zero():
    """A report is reproducible: without rng the bootstrap draws from seed 0 (another seed gives
    another p on the same predictions)."""
    rng = np.random.default_rng(10)
    ca, cb = rng.random((2, 100)) < 0.7, rng.random((2, 100)) < 0.75
    default = stats.paired_bootstrap_examples(ca, cb, n_resamples=2_000)
    assert default.p == stats.paired_bootstrap_examples(ca, cb, n_resamples=2_000, rng=0).p
    assert default.p != stats.paired_bootstrap_examples(ca, cb, n_resamples=2_000, rng=1).p


def test_cohens_dz_is_the_paired_t_over_root_n():
    """d_z = mean(d) / sd(d) = t / √n. Differences 1, 3: mean 2, sd √2, so d_z = √2."""
    assert stats.cohens_dz([0.0, 0.0], [1.0, 3.0]) == pytest.approx(math.sqrt(2))
    rng = np.random.default_rng(11)
    a = rng.normal(size=9)
    b = a + rng.normal(0.5, 2.0, size=9)
    assert stats.cohens_dz(a, b) == pytest.approx(stats.paired_t(a, b).statistic / 3)


def test_wilcoxon_without_a_non_zero_difference_still_names_its_test():
    for a, b in (([1.0, 2.0], [1.0, 2.0]), ([], [])):
        r = stats.wilcoxon(a, b)
        assert r.test == "Wilcoxon signed-rank test" and str(r).endswith("(Wilcoxon signed-rank test, n=0)")


def test_wilcoxon_is_exact_up_to_and_including_max_exact():
    """n ≤ max_exact: every sign pattern of the signed ranks, also above the default of 16."""
    rng = np.random.default_rng(12)
    for n in (6, 17):
        a = rng.normal(size=n)
        b = a + rng.normal(0.4, 1, size=n)
        r = stats.wilcoxon(a, b, max_exact=n)
        assert (r.n, r.detail) == (n, "exact")
        assert r.p == pytest.approx(st.wilcoxon(b - a, method="exact").pvalue, rel=1e-9)


def test_wilcoxon_normal_approximation_by_hand():
    """Beyond max_exact: differences 1..20, three of them (2, 5, 11) negative. W+ = 210 − 18 = 192;
    under H0 W+ has mean n(n+1)/4 = 105 and variance n(n+1)(2n+1)/24 = 717.5, no continuity
    correction: z = 87 / √717.5."""
    d = np.arange(1.0, 21.0)
    d[[1, 4, 10]] *= -1
    r = stats.wilcoxon(np.zeros(20), d, max_exact=10)
    assert (r.test, r.n, r.statistic, r.detail) == ("Wilcoxon signed-rank test", 20, 192.0, "normal approximation")
    assert r.p == pytest.approx(2 * st.norm.sf(87 / math.sqrt(717.5)))
    assert str(r).endswith("(Wilcoxon signed-rank test, n=20)")


def test_compare_with_no_run_on_one_side_is_quietly_undefined():
    """A cell where one loss has no run: no difference, interval, effect or test, and no numpy
    warning about the mean of an empty slice."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for a, b, ka, kb in (([], [0.7, 0.8], [], [1, 2]), ([0.6, 0.7], [], [1, 2], [])):
            c = stats.compare(a, b, ka, kb, n_resamples=1_000)
            assert (c.n_pairs, c.primary) == (0, None)
            assert all(math.isnan(x) for x in (c.mean_diff, *c.ci, c.effect))


def test_welch_with_one_run_on_either_side_is_quietly_undefined():
    """One run has no variance: no t, no df in the detail, and no numpy warning about it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for a, b in (([1.0], [2.0, 3.0]), ([1.0, 2.0], [3.0]), ([], [2.0, 3.0])):
            r = stats.welch_t(a, b)
            assert math.isnan(r.p) and math.isnan(r.statistic) and (r.n, r.detail) == (len(a) + len(b), "")


def test_welch_with_equal_spreads_and_without_spread():
    """Equal spreads (var 1 a side, n = 3): t = 2 / √(1/3 + 1/3) = √6 on df (2/3)² / (2 · (1/3)² / 2)
    = 4. No spread at all: certain, and still named as Welch's test."""
    r = stats.welch_t([1.0, 2.0, 3.0], [3.0, 4.0, 5.0])
    assert (r.statistic, r.detail) == (pytest.approx(math.sqrt(6)), "df=4.0")
    assert r.p == pytest.approx(2 * st.t.sf(math.sqrt(6), 4))
    assert r.p == pytest.approx(st.ttest_ind([3.0, 4.0, 5.0], [1.0, 2.0, 3.0], equal_var=False).pvalue)
    for a, b in (([2.0, 2.0], [5.0, 5.0, 5.0]), ([2.0, 2.0], [2.0, 2.0])):
        flat = stats.welch_t(a, b)
        assert flat.test == "Welch's t-test" and str(flat).endswith("(Welch's t-test, n=%d)" % (len(a) + len(b)))


def test_bootstrap_interval_default_seed_is_zero():
    """Without rng the interval draws from seed 0, paired or not (another seed moves it)."""
    rng = np.random.default_rng(13)
    a, b = rng.normal(size=12), rng.normal(0.5, 1, size=12)
    for paired in (True, False):
        default = stats.bootstrap_ci_diff(a, b, paired=paired, n_resamples=2_000)
        assert default == stats.bootstrap_ci_diff(a, b, paired=paired, n_resamples=2_000, rng=0)
        assert default != stats.bootstrap_ci_diff(a, b, paired=paired, n_resamples=2_000, rng=1)


def test_bootstrap_interval_of_one_pair_and_of_nothing():
    """One pair: every resample is its difference, the interval is that point (a trend's interval
    over a single seed's slope). No pair, or no run on one side: NaN, without numpy warnings."""
    assert stats.bootstrap_ci_diff([1.0], [3.5], paired=True, n_resamples=500) == (2.5, 2.5)
    assert stats.bootstrap_ci_diff([1.0], [3.5], paired=False, n_resamples=500) == (2.5, 2.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for a, b, paired in (([], [], True), ([], [1.0, 2.0], False), ([1.0, 2.0], [], False), ([], [], False)):
            assert all(math.isnan(x) for x in stats.bootstrap_ci_diff(a, b, paired=paired, n_resamples=500))


def test_bootstrap_interval_cuts_equal_tails():
    """Differences −4.5, −3.5, …, 4.5: the resampled mean is symmetric about 0 and nearly normal
    with sd σ/√10 (σ the population sd), so the percentile interval at confidence c is ±z·σ/√10,
    z the normal (1 + c)/2 quantile: (1 − c)/2 of the resamples cut off on each side."""
    d = np.arange(10.0) - 4.5
    se = d.std() / math.sqrt(10)
    for c in (0.5, 0.95):
        lo, hi = stats.bootstrap_ci_diff(np.zeros(10), d, paired=True, n_resamples=10_000, confidence=c)
        assert lo == pytest.approx(-hi) and hi == pytest.approx(st.norm.ppf((1 + c) / 2) * se, abs=0.05)


def test_permutation_default_seed_is_zero_and_no_pair_is_named():
    rng = np.random.default_rng(14)
    a = rng.normal(size=20)
    b = a + rng.normal(0.3, 1, size=20)  # 20 pairs: Monte Carlo
    default = stats.permutation_paired(a, b, n_resamples=2_000)
    assert default.p == stats.permutation_paired(a, b, n_resamples=2_000, rng=0).p
    assert default.p != stats.permutation_paired(a, b, n_resamples=2_000, rng=1).p
    assert str(stats.permutation_paired([], [])) == "p n/a (exact permutation test, n=0)"


def test_exact_permutation_p_does_not_depend_on_the_unit_of_the_scores():
    """Differences 0.7 · (1, 2, −3, 5): |±1 ±2 ±3 ±5| ≥ 5 in 10 of 16 sign patterns, two of them
    ties (1 + 2 − 3 = 0: flipping the first three signs leaves the sum at 5), which rounding puts
    a hair off the observed sum. The tie tolerance is relative to the sum, so the same differences
    in a unit a thousand or a million times smaller keep their ties and their p."""
    for unit in (1.0, 1e3, 1e6):
        d = np.array([1.0, 2.0, -3.0, 5.0]) * 0.7 * unit
        assert stats.permutation_paired(np.zeros(4), d).p == pytest.approx(10 / 16)


def test_permutation_is_exact_at_max_exact_and_ties_only_within_rel_tol():
    r = stats.permutation_paired(np.zeros(5), [1.0, 2.0, 3.0, 4.0, 5.0], max_exact=5)
    assert (r.test, r.detail, r.resamples) == ("exact permutation test", "32 sign patterns", 0)
    assert r.p == pytest.approx(2 / 32)  # only all-plus and all-minus reach |sum| = 15
    # d = (0.5, ε): the patterns ±(0.5 − ε) fall 2ε short of the observed |sum| 0.5 + ε. Within
    # REL_TOL (here absolute: the sum is below 1) that is rounding, a tie; beyond it, less extreme.
    assert stats.permutation_paired([0.0, 0.0], [0.5, 0.25 * stats.REL_TOL]).p == 1.0
    assert stats.permutation_paired([0.0, 0.0], [0.5, 0.75 * stats.REL_TOL]).p == 0.5
    assert stats.permutation_paired([0.0, 0.0], [0.5, 0.5 * stats.REL_TOL]).p == 1.0  # at the edge: a tie


def test_monte_carlo_permutation_of_no_effect_is_one():
    """20 pairs (Monte Carlo), all differences 0, or one of ±1 among zeros: every random sign
    pattern is as extreme as the observed one, so all R of them count and p = (1 + R) / (R + 1) = 1."""
    for d in (np.zeros(20), np.r_[np.zeros(19), 1.0]):
        r = stats.permutation_paired(np.zeros(20), d, n_resamples=2_500)
        assert (r.test, r.resamples, r.p) == ("Monte Carlo permutation test", 2_500, 1.0)


def test_monte_carlo_draws_every_sign_pattern_alike():
    """Random signs are fair and independent for every pair, however many pairs there are.
    8 equal differences: only all-plus and all-minus reach |sum| = 8, 2 of 256 patterns, and the
    Monte Carlo p finds that share. 9 equal differences among 81 pairs (the last 9, past the
    first 72 bits): all nine signs agree in 2 of 512 patterns, so p is small, not 1."""
    r = stats.permutation_paired(np.zeros(8), np.ones(8), max_exact=0, n_resamples=40_000)
    assert r.test == "Monte Carlo permutation test" and r.p == pytest.approx(2 / 256, abs=0.0015)
    r = stats.permutation_paired(np.zeros(81), np.r_[np.zeros(72), np.ones(9)], n_resamples=2_000)
    assert r.p < 0.02


def test_one_sample_t_details_in_every_branch():
    """The paired t-test carries no detail; the slopes' t-test says over how many seeds, also when
    there are too few seeds for a test or when every seed has the same slope."""
    x = [0.0, 1.0, 2.0]
    for r in (stats.paired_t(A3, B3), stats.paired_t([1.0], [2.0]), stats.paired_t([1, 2, 3], [2, 3, 4])):
        assert (r.test, r.detail) == ("paired t-test", "")
    one = stats.slope_t([[0.0, 1.0, 2.0], [1.0, np.nan, np.nan]], x)  # one seed with a slope
    assert (one.test, one.n, one.detail) == ("t-test of per-seed slopes", 1, "1 seeds") and math.isnan(one.p)
    same = stats.slope_t([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]], x)  # slopes 1 and 1: certain
    assert (same.test, same.p, same.statistic, same.detail) == ("t-test of per-seed slopes", 0.0, np.inf, "2 seeds")
    some = stats.slope_t([[0.0, 1.0, 2.0], [0.0, 2.0, 4.0]], x)
    assert (some.test, some.detail) == ("t-test of per-seed slopes", "2 seeds")


def test_holm_of_a_single_test_leaves_its_p():
    """One test is no multiple comparison: its p stands (a NaN beside it does not count)."""
    np.testing.assert_array_equal(stats.holm([0.03]), [0.03])
    out = stats.holm([np.nan, 0.2])
    assert math.isnan(out[0]) and out[1] == 0.2
    assert stats.holm([]).shape == (0,) and np.isnan(stats.holm([np.nan, np.nan])).all()
