"""How often the Table 3 noise verdict says "significant" on synthetic data with a known truth.

Each draw makes Table 3-shaped scores (`synthetic.noise_scores`: seeds that carry their own
effects into every T) and asks, per task, two questions the way the report does:

- main effect: is CE+SCL − CE ≠ 0 over the noisy T? per seed: the paired t-test over seeds of
  each seed's gap averaged over T (what Table 3's 'average' cell reports); pooled (the old test):
  the paired t-test over every (T, seed) pair as if they were independent.
- interaction: does the gap change with T? per seed: the t-test of each seed's slope of the gap
  against T (Table 3's trend rows); pooled: ordinary least squares over every (T, seed) pair.

A draw is "significant" when any task's Holm-adjusted p (over the tasks) is below alpha. Under the
null (effect = slope = 0) that share is the test's false-positive rate; with a planted effect it
is the power. The report's Holm runs over every cell of the table, a larger family, so its
verdict is at least as conservative as the per-seed share here.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as st

from analysis import stats
from analysis.synthetic import NOISY_T, TABLE3_TASKS, noise_scores

TESTS = ("main, per seed", "main, pooled (old)", "trend, per seed", "trend, pooled")


def task_pvalues(ce: np.ndarray, scl: np.ndarray, temps=NOISY_T) -> dict[str, np.ndarray]:
    """Per task, the p of each test in TESTS. ce, scl: (tasks, seeds, temps) scores."""
    x = np.asarray(temps, float)
    out = {k: [] for k in TESTS}
    for a, b in zip(ce, scl):
        gaps = b - a
        out["main, per seed"].append(stats.paired_t(stats.seed_means(a), stats.seed_means(b)).p)
        out["main, pooled (old)"].append(stats.paired_t(a.ravel(), b.ravel()).p)
        out["trend, per seed"].append(stats.slope_t(gaps, x).p)
        out["trend, pooled"].append(st.linregress(np.broadcast_to(x, gaps.shape).ravel(), gaps.ravel()).pvalue)
    return {k: np.array(v) for k, v in out.items()}


def significant_share(draws: int = 200, *, alpha: float = 0.05, rng=0, tasks=TABLE3_TASKS,
                      temps=NOISY_T, **shape) -> dict[str, float]:
    """Share of `draws` in which each test of TESTS calls some task significant (Holm over tasks).

    shape: the keyword arguments of `noise_scores` (seeds, effect, slope, seed_gap_sd, ...).
    """
    rng = np.random.default_rng(rng)
    hits = dict.fromkeys(TESTS, 0)
    for _ in range(draws):
        ce, scl = noise_scores(tasks=tasks, temps=temps, rng=rng, **shape)
        for k, p in task_pvalues(ce, scl, temps).items():
            hits[k] += bool(np.nanmin(stats.holm(p)) < alpha)
    return {k: v / draws for k, v in hits.items()}
