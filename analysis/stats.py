"""Significance of CE+SCL against CE: small pure functions over score arrays.

In the manner of google-research/rliable: every function takes plain arrays, returns plain
numbers, and draws randomness only from a seeded `numpy.random.Generator`. Convention throughout:
`a` is the baseline (CE), `b` the treatment (CE+SCL), and a difference is `b − a`. All tests are
two-sided. Every p-value travels with the name of the test that produced it (`TestResult.test`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as st

MAX_EXACT_PERMUTATION = 16  # up to 2**16 sign patterns are enumerated; beyond, Monte Carlo
N_RESAMPLES = 10_000  # bootstrap / Monte Carlo resamples
CHUNK = 2_000  # resamples drawn at a time, so memory stays at CHUNK × n floats
RESAMPLE_BUDGET = 5_000_000  # compare(): resamples × n kept under this (≥ MIN_RESAMPLES) for big n
MIN_RESAMPLES = 1_000
REL_TOL = 1e-9  # a resampled statistic this close to the observed one counts as "as extreme"


@dataclass(frozen=True)
class TestResult:
    test: str  # printed beside p, e.g. "paired t-test"
    p: float
    statistic: float = float("nan")
    n: int = 0  # pairs, runs or examples the test used
    detail: str = ""
    resamples: int = 0  # R of a Monte Carlo / bootstrap test (p is (1 + k) / (R + 1)); 0: exact or analytic

    def __str__(self) -> str:
        return f"{self.p_text()} ({self.test}, n={self.n})"

    @property
    def at_resolution(self) -> bool:
        """No resample was as extreme as the observed statistic: p sits at its floor 1 / (R + 1)."""
        return self.resamples > 0 and np.isfinite(self.p) and self.p * (self.resamples + 1) <= 1 + 1e-9

    def p_text(self, adjusted: float | None = None) -> str:
        """This test's p, or a p adjusted from it (Holm's), as text. At the test's resolution the
        number is only a bound: the raw p prints as 'p<1/R', an adjusted one as 'p<' its value at 1/R."""
        if not self.at_resolution:
            return format_p(self.p if adjusted is None else adjusted)
        if adjusted is None:
            return f"p<1/{self.resamples}"
        if not np.isfinite(adjusted):
            return format_p(adjusted)
        return "p<" + _p_number(min(1.0, adjusted * (self.resamples + 1) / self.resamples))


def format_p(p: float | None) -> str:
    """An exact or analytic p as text. A resampling test's p goes through TestResult.p_text."""
    if p is None or not np.isfinite(p):
        return "p n/a"
    return "p=" + _p_number(p)


def _p_number(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def resamples_for(n: int, n_resamples: int = N_RESAMPLES) -> int:
    """Resamples for a Monte Carlo / bootstrap over n items: n_resamples, cut so that
    resamples × n stays under RESAMPLE_BUDGET, but never below MIN_RESAMPLES."""
    return int(min(n_resamples, max(MIN_RESAMPLES, RESAMPLE_BUDGET // max(n, 1))))


def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _pair(a, b) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired tests need two 1-d arrays of one length, got {a.shape} and {b.shape}")
    return b - a


# ---- seed-level tests ------------------------------------------------------------------------

def paired_t(a, b) -> TestResult:
    """Student's t on the differences d = b − a: t = mean(d) / (sd(d) / √n), n − 1 df."""
    return _one_sample_t(_pair(a, b), "paired t-test")


def _one_sample_t(d: np.ndarray, name: str, detail: str = "") -> TestResult:
    n = d.size
    if n < 2:
        return TestResult(name, float("nan"), n=n, detail=detail)
    sd = d.std(ddof=1)
    if sd == 0:  # identical values: certain if non-zero, nothing if zero
        return TestResult(name, 1.0 if d.mean() == 0 else 0.0,
                          0.0 if d.mean() == 0 else np.sign(d.mean()) * np.inf, n, detail)
    t = d.mean() / (sd / np.sqrt(n))
    return TestResult(name, float(2 * st.t.sf(abs(t), n - 1)), float(t), n, detail)


def welch_t(a, b) -> TestResult:
    """Welch's unequal-variance t-test for unpaired runs, Welch–Satterthwaite df."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    na, nb = a.size, b.size
    if na < 2 or nb < 2:
        return TestResult("Welch's t-test", float("nan"), n=na + nb)
    va, vb = a.var(ddof=1) / na, b.var(ddof=1) / nb
    if va + vb == 0:
        same = b.mean() == a.mean()
        return TestResult("Welch's t-test", 1.0 if same else 0.0, 0.0 if same else np.inf, na + nb)
    t = (b.mean() - a.mean()) / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))
    return TestResult("Welch's t-test", float(2 * st.t.sf(abs(t), df)), float(t), na + nb,
                      f"df={df:.1f}")


def permutation_paired(a, b, *, max_exact: int = MAX_EXACT_PERMUTATION,
                       n_resamples: int = N_RESAMPLES, rng=0) -> TestResult:
    """Sign-flip permutation test of mean(b − a) = 0 over matched pairs.

    Exact (all 2**n sign patterns) for n ≤ max_exact, else Monte Carlo with p = (1 + k) / (R + 1).
    """
    d = _pair(a, b)
    n = d.size
    if n == 0:
        return TestResult("exact permutation test", float("nan"), n=0)
    obs = abs(d.sum())
    tol = REL_TOL * max(1.0, obs)
    if n <= max_exact:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        p = float(np.mean(np.abs(signs @ d) >= obs - tol))
        return TestResult("exact permutation test", p, float(d.mean()), n, f"{2 ** n} sign patterns")
    rng = _rng(rng)
    hits = 0
    total = d.sum()
    for start in range(0, n_resamples, CHUNK):
        k = min(CHUNK, n_resamples - start)
        # random bits b ∈ {0, 1} per pair; signs 2b − 1 give Σ s·d = 2·(b @ d) − Σ d
        bits = np.unpackbits(rng.integers(0, 256, size=(k, (n + 7) // 8), dtype=np.uint8), axis=1, count=n)
        hits += int(np.sum(np.abs(2.0 * (bits @ d) - total) >= obs - tol))
    return TestResult("Monte Carlo permutation test", (1 + hits) / (n_resamples + 1), float(d.mean()),
                      n, f"{n_resamples} random sign patterns", n_resamples)


def wilcoxon(a, b, *, max_exact: int = MAX_EXACT_PERMUTATION) -> TestResult:
    """Wilcoxon signed-rank test on b − a, zero differences dropped.

    Exact for n ≤ max_exact: the sign-flip distribution of the signed (average) ranks, which stays
    exact with tied |d|; beyond, scipy's normal approximation with tie correction.
    Statistic: W+ (sum of the ranks of positive differences).
    """
    d = _pair(a, b)
    nz = d[d != 0]
    n = nz.size
    if n == 0:
        return TestResult("Wilcoxon signed-rank test", 1.0 if d.size else float("nan"), 0.0, 0)
    ranks = st.rankdata(np.abs(nz))
    w_plus = float(ranks[nz > 0].sum())
    if n <= max_exact:
        signed = np.sign(nz) * ranks
        p = permutation_paired(np.zeros(n), signed, max_exact=max_exact).p
        return TestResult("Wilcoxon signed-rank test", p, w_plus, n, "exact")
    res = st.wilcoxon(nz, zero_method="wilcox", correction=False, method="asymptotic")
    return TestResult("Wilcoxon signed-rank test", float(res.pvalue), w_plus, n, "normal approximation")


def levene(a, b) -> TestResult:
    """Brown–Forsythe test (Levene on medians) of equal variance: the transfer claim is about spread."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 2 or b.size < 2:
        return TestResult("Brown–Forsythe test", float("nan"), n=a.size + b.size)
    res = st.levene(a, b, center="median")
    p = float(res.pvalue) if np.isfinite(res.pvalue) else 1.0
    return TestResult("Brown–Forsythe test", p, float(res.statistic), a.size + b.size,
                      f"sd {a.std(ddof=1):.2f} vs {b.std(ddof=1):.2f}")


# ---- seeds as units, over several levels (noise T) -----------------------------------------------
# A seed's runs at every level train on noisy copies of one training sample, so the CE+SCL − CE
# gaps of one seed share that sample's effect: its (level, seed) pairs are not independent and a
# test over all of them is anti-conservative. These reduce each seed to one number first.

def seed_means(gaps) -> np.ndarray:
    """Each seed's mean gap over the levels it has. gaps: (seeds, levels), NaN where missing."""
    g = np.asarray(gaps, float)
    have = np.isfinite(g).sum(axis=1)
    with np.errstate(invalid="ignore"):
        return np.where(have > 0, np.nansum(g, axis=1) / np.maximum(have, 1), np.nan)


def seed_slopes(gaps, x) -> np.ndarray:
    """Least-squares slope of each seed's gaps against the levels x (gap units per unit of x).

    gaps: (seeds, levels), NaN where a level is missing; x: (levels,). A seed with fewer than two
    distinct levels has a NaN slope.
    """
    g = np.asarray(gaps, float)
    x = np.broadcast_to(np.asarray(x, float), g.shape)
    have = np.isfinite(g)
    k = have.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm = np.where(have, x, 0).sum(axis=1) / k
        gm = np.where(have, g, 0).sum(axis=1) / k
        dx = np.where(have, x - xm[:, None], 0)
        sxx = (dx ** 2).sum(axis=1)
        slope = (dx * np.where(have, g - gm[:, None], 0)).sum(axis=1) / sxx
    return np.where((k >= 2) & (sxx > 0), slope, np.nan)


def slope_t(gaps, x) -> TestResult:
    """Does the gap change with x? Student's t of the per-seed slopes against 0, n − 1 df over
    the seeds that have a slope. statistic: t; the mean slope is `seed_slopes(...).mean()`."""
    s = seed_slopes(gaps, x)
    s = s[np.isfinite(s)]
    return _one_sample_t(s, "t-test of per-seed slopes", f"{s.size} seeds")


# ---- effect sizes and intervals ----------------------------------------------------------------

def cohens_dz(a, b) -> float:
    """Paired effect size: mean(b − a) / sd(b − a)."""
    d = _pair(a, b)
    if d.size < 2:
        return float("nan")
    sd = d.std(ddof=1)
    return float(np.sign(d.mean()) * np.inf if sd == 0 and d.mean() else (0.0 if sd == 0 else d.mean() / sd))


def cohens_d(a, b) -> float:
    """Unpaired effect size: (mean b − mean a) / pooled sd (ddof 1)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    na, nb = a.size, b.size
    if na < 2 or nb < 2:
        return float("nan")
    pooled = np.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    diff = b.mean() - a.mean()
    return float(0.0 if pooled == 0 and diff == 0 else (np.sign(diff) * np.inf if pooled == 0 else diff / pooled))


def bootstrap_ci_diff(a, b, *, paired: bool, n_resamples: int = N_RESAMPLES,
                      confidence: float = 0.95, rng=0) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(b) − mean(a).

    paired=True resamples pairs (a_i, b_i) together; otherwise a and b are resampled apart.
    """
    rng = _rng(rng)
    a, b = np.asarray(a, float), np.asarray(b, float)
    if paired:
        d = _pair(a, b)
        if d.size == 0:
            return float("nan"), float("nan")
        stats_ = _bootstrap_means(d, n_resamples, rng)
    else:
        if a.size == 0 or b.size == 0:
            return float("nan"), float("nan")
        stats_ = _bootstrap_means(b, n_resamples, rng) - _bootstrap_means(a, n_resamples, rng)
    lo, hi = np.quantile(stats_, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def _bootstrap_means(x: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, CHUNK):
        k = min(CHUNK, n_resamples - start)
        out[start:start + k] = x[rng.integers(0, x.size, size=(k, x.size), dtype=np.int32)].mean(axis=1)
    return out


# ---- example-level tests (test-set predictions) ------------------------------------------------

def mcnemar(n01: int, n10: int) -> tuple[float, float]:
    """McNemar's exact and mid-p tests from discordant counts.

    n01: examples A got wrong and B right; n10: A right, B wrong. Under H0 n01 ~ Bin(n01 + n10, ½).
    Returns (exact p, mid-p): exact = min(1, 2·P(X ≤ k)); mid-p = 2·(P(X ≤ k) − ½·P(X = k)), k = min.
    """
    n, k = int(n01 + n10), int(min(n01, n10))
    if n == 0:
        return 1.0, 1.0
    cdf, pmf = st.binom.cdf(k, n, 0.5), st.binom.pmf(k, n, 0.5)
    return float(min(1.0, 2 * cdf)), float(min(1.0, 2 * (cdf - 0.5 * pmf)))


def mcnemar_pooled(correct_a, correct_b) -> TestResult:
    """McNemar mid-p on discordant counts summed over seed pairs.

    correct_a, correct_b: (pairs, examples) 0/1. Pairs share the test set, so pooling treats
    correlated counts as independent: anti-conservative, shown for comparison with the paper's p.
    """
    ca, cb = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    n01, n10 = int(np.sum(~ca & cb)), int(np.sum(ca & ~cb))
    _, midp = mcnemar(n01, n10)
    return TestResult("McNemar mid-p, pooled over pairs", midp, float(n01 - n10), int(ca.size),
                      f"b→right {n01}, b→wrong {n10}")


def paired_bootstrap_examples(correct_a, correct_b, *, n_resamples: int = N_RESAMPLES,
                              rng=0) -> TestResult:
    """Paired bootstrap over test examples of the seed-averaged accuracy difference.

    correct_a, correct_b: (pairs, examples) 0/1, columns aligned by example. One resample draws
    examples with replacement (the same draw for every seed pair); p is the share of centred
    resampled differences at least as far from 0 as the observed one, (1 + k) / (R + 1). It holds
    the trained models fixed: it measures test-set sampling noise only, not seed-to-seed variance.
    """
    u = (np.asarray(correct_b, float) - np.asarray(correct_a, float)).mean(axis=0)
    if u.size == 0:
        return TestResult("paired bootstrap over examples", float("nan"), n=0)
    obs = u.mean()
    boot = _bootstrap_means(u, n_resamples, _rng(rng))
    tol = REL_TOL * max(1.0, abs(obs))
    hits = int(np.sum(np.abs(boot - obs) >= abs(obs) - tol))
    return TestResult("paired bootstrap over examples", (1 + hits) / (n_resamples + 1), float(obs),
                      int(u.size), f"{np.asarray(correct_a).shape[0]} seed pairs, {n_resamples} resamples",
                      n_resamples)


# ---- multiple comparisons ----------------------------------------------------------------------

def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(pvalues, float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out


# ---- one comparison of two cells ----------------------------------------------------------------

@dataclass
class Comparison:
    """CE (a) against CE+SCL (b) in one cell: every test over the runs, paired where seeds match."""
    n_a: int
    n_b: int
    n_pairs: int
    mean_diff: float  # over pairs when paired, else mean(b) − mean(a)
    ci: tuple[float, float]  # bootstrap 95% interval of that difference
    effect_name: str  # "Cohen's d_z" (paired) or "Cohen's d"
    effect: float
    tests: list[TestResult] = field(default_factory=list)
    primary: TestResult | None = None  # the test Holm's correction is applied to
    p_holm: float = float("nan")
    example_test: TestResult | None = None  # over test predictions, when the table was given the db
    example_p_holm: float = float("nan")
    extra: list[TestResult] = field(default_factory=list)  # e.g. pooled McNemar, variance test


def compare(a, b, a_keys, b_keys, *, n_resamples: int = N_RESAMPLES, rng=0) -> Comparison:
    """All seed-level statistics for baseline runs `a` and treatment runs `b`.

    a_keys / b_keys name each run's pairing key (seed, or (column, seed)); runs whose key occurs
    on both sides are paired. With ≥ 2 pairs the paired t-test is primary, else Welch's t-test.
    n_resamples is cut by `resamples_for` for thousands of runs (p resolution 1 / (R + 1)).
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    ia = {k: i for i, k in enumerate(a_keys)}
    common = [(ia[k], j) for j, k in enumerate(b_keys) if k in ia]
    pa = a[[i for i, _ in common]] if common else np.empty(0)
    pb = b[[j for _, j in common]] if common else np.empty(0)
    rng = _rng(rng)
    n_resamples = resamples_for(max(a.size, b.size), n_resamples)
    if len(common) >= 2:
        tests = [paired_t(pa, pb), permutation_paired(pa, pb, n_resamples=n_resamples, rng=rng),
                 wilcoxon(pa, pb), welch_t(a, b)]
        return Comparison(a.size, b.size, len(common), float((pb - pa).mean()),
                          bootstrap_ci_diff(pa, pb, paired=True, n_resamples=n_resamples, rng=rng),
                          "Cohen's d_z", cohens_dz(pa, pb), tests, tests[0])
    welch = welch_t(a, b)
    diff = float(b.mean() - a.mean()) if a.size and b.size else float("nan")
    return Comparison(a.size, b.size, len(common), diff,
                      bootstrap_ci_diff(a, b, paired=False, n_resamples=n_resamples, rng=rng),
                      "Cohen's d", cohens_d(a, b), [welch], welch if np.isfinite(welch.p) else None)
