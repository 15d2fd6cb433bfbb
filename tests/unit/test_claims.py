"""The report's verdicts on the paper's claims (analysis.report) from tables whose raw and
Holm-adjusted p disagree: the headline counts ("supported in k of n cells", "grows in k of n
tasks") must count what the per-cell verdicts say, i.e. Holm-adjusted p, never raw p. Scores are
planted per seed, so every p is known before the report reads it."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import build_table, report, stats
from analysis.layouts import TABLES
from analysis.synthetic import NOISY_T, TABLE3_TASKS, noise_frame, synthetic_results
from analysis.tables import ALPHA

FAST = 1000  # resamples

# CE+SCL − CE per seed (fractions of the test set), 10 seeds
STRONG = np.array([0.05, 0.06, 0.04, 0.055, 0.045, 0.05, 0.052, 0.048, 0.058, 0.042])
MODERATE = np.array([0.03, -0.01, 0.02, 0.04, 0.0, 0.03, 0.01, 0.05, -0.02, 0.02])  # raw p ≈ 0.03
NULL = np.array([0.01, -0.01, 0.02, -0.02, 0.0, 0.005, -0.005, 0.01, -0.01, 0.0])
PLAN = {("sst2", 20): STRONG, ("qnli", 20): -STRONG, ("mnli", 20): MODERATE,
        ("sst2", 100): -MODERATE, ("qnli", 100): NULL, ("mnli", 100): NULL}


def planted_fewshot():
    """Table 2 at N = 20 and 100 with the gains of PLAN: CE's score is the seed's, CE+SCL's that
    plus the planted gain. Runs are in the frame in the order synthetic_results draws them."""
    df = synthetic_results([dict(task=t, n=n) for t, n in PLAN], rng=3)
    for (task, n), gain in PLAN.items():
        cell = (df["task"] == task) & (df["n"] == n)
        ce = df[cell & (df["loss"] == "ce")].set_index("seed")["test_score"]
        scl = cell & (df["loss"] == "ce+scl")
        df.loc[scl, "test_score"] = (ce.loc[df.loc[scl, "seed"]].to_numpy() + gain[df.loc[scl, "seed"]])
    return df


def built(df) -> dict:
    return {n: build_table(df, n, n_resamples=FAST) for n in TABLES}


def test_the_fewshot_headline_counts_holm_adjusted_verdicts():
    tables = built(planted_fewshot())
    tests = tables[2].tests
    raw = [t for t in tests if t.comparison.primary.p < ALPHA]
    held = [t for t in tests if t.comparison.p_holm < ALPHA]
    # the fixture: four cells pass at raw p, two after Holm (one gain, one loss)
    assert len(tests) == 6 and len(raw) == 4 and len(held) == 2
    assert {(t.col, t.group) for t in held} == {("sst2", 20), ("qnli", 20)}

    text = report._verdicts(tables)["fewshot"]
    assert text.startswith(f"Our data support it in 1 of 6 cells (Holm-adjusted p < {ALPHA}) "
                           "and contradict it in 1. ")
    assert text.count("→ significant gain") == 1 and text.count("→ significant loss (CE+SCL worse)") == 1
    assert text.count("→ no significant difference") == 4
    verdicts = dict(line.split(": Δ", 1) for line in text.split(". ", 1)[1].rstrip(".").split("; "))
    assert "→ significant gain" in verdicts["N=20 SST-2"]
    assert "→ significant loss" in verdicts["N=20 QNLI"]
    assert "→ no significant difference" in verdicts["N=20 MNLI"]  # raw p < 0.05, Holm's p is not


def test_each_verdict_line_gives_the_numbers_behind_it():
    tables = built(planted_fewshot())
    t = next(x for x in tables[2].tests if (x.col, x.group) == ("mnli", 20))
    c = t.comparison
    line = report._verdict_line(tables[2], t)
    assert line.startswith("N=20 MNLI: Δ +1.7 points [95% CI ")
    assert f"{c.primary.p_text()} (paired t-test, 10 pairs), Holm-adjusted {c.primary.p_text(c.p_holm)}" in line
    assert c.mean_diff == pytest.approx(100 * MODERATE.mean())
    assert f"[95% CI {c.ci[0]:+.1f}, {c.ci[1]:+.1f}]" in line


def test_a_cell_without_a_test_says_so():
    df = planted_fewshot()
    df = df[~((df["task"] == "mnli") & (df["n"] == 20) & (df["seed"] > 0))]  # one run a side left
    tables = built(df)
    t = next(x for x in tables[2].tests if (x.col, x.group) == ("mnli", 20))
    assert report._verdict_line(tables[2], t) == "N=20 MNLI: cannot be tested (1 CE / 1 CE+SCL runs)"
    assert report._verdicts(tables)["fewshot"].startswith("Our data support it in 1 of 6 cells")


def test_no_runs_no_verdict():
    tables = built(planted_fewshot().iloc[0:0])
    assert report._verdicts(tables)["fewshot"] == "No data in the database to test it."


def test_mean_gain_over_the_kept_cells():
    tables = built(planted_fewshot())
    got = report._mean_gain(tables[2], lambda t: t.group == 20)
    assert got == pytest.approx(100 * np.mean([STRONG.mean(), -STRONG.mean(), MODERATE.mean()]))
    assert report._mean_gain(tables[2], lambda t: t.group == 1000) is None


# Table 3: each seed's CE+SCL − CE gap against T, slopes in points per unit T
STRONG_SLOPE = np.array([10.0, 12, 9, 11, 10, 13, 8, 10, 11, 9])
MODERATE_SLOPE = 10 * MODERATE / MODERATE.std() * 0.5  # t ≈ 2.5 over 10 seeds: raw p ≈ 0.03


def planted_noise(slopes: dict[str, np.ndarray]):
    x = np.asarray(NOISY_T) - np.mean(NOISY_T)
    seeds = np.arange(10)
    ce = np.broadcast_to((70.0 + seeds)[None, :, None], (len(TABLE3_TASKS), 10, len(NOISY_T))).copy()
    scl = ce + np.stack([slopes.get(t, np.zeros(10))[:, None] * x[None, :] for t in TABLE3_TASKS])
    return noise_frame(ce, scl)


def test_the_noise_trend_headline_counts_holm_adjusted_trends():
    tables = built(planted_noise({"sst2": STRONG_SLOPE, "qnli": MODERATE_SLOPE}))
    trends = {t.group: t for t in tables[3].trends}
    assert trends["qnli"].test.p < ALPHA < trends["qnli"].p_holm  # the fixture: raw and Holm disagree
    assert trends["sst2"].p_holm < ALPHA and trends["sst2"].mean_slope > 0
    text = report._trend_summary(tables[3])
    assert "the gap grows significantly in 1 of 3 tasks; " in text
    assert text.count("→ the gap grows with T") == 1 and text.count("→ no significant change with T") == 2
    assert f"SST-2: {trends['sst2'].mean_slope:+.1f} points per unit T" in text

    shrinking = built(planted_noise({"sst2": -STRONG_SLOPE}))
    text = report._trend_summary(shrinking[3])
    assert "grows significantly in 0 of 3 tasks" in text and text.count("→ the gap shrinks with T") == 1


def test_no_trend_without_two_noisy_levels():
    df = planted_noise({})
    tables = built(df[df["noise"] == NOISY_T[0]])
    assert report._trend_summary(tables[3]) == "Growth with T: no task has CE and CE+SCL runs at two noisy T."
