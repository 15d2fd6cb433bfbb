"""The report's verdicts on the paper's claims (analysis.report) from tables whose raw and
Holm-adjusted p disagree: the headline counts ("supported in k of n cells", "grows in k of n
tasks") must count what the per-cell verdicts say, i.e. Holm-adjusted p, never raw p. Scores are
planted per seed, so every p is known before the report reads it."""

from __future__ import annotations

import numpy as np
import pandas as pd
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


def plant(plan: dict, rng: int, **kw):
    """Table 2 cells with planted gains: CE's score is the seed's, CE+SCL's that plus the seed's
    gain in `plan` ((task, N) -> 10 fractions). Runs are in the order synthetic_results draws them."""
    df = synthetic_results([dict(task=t, n=n) for t, n in plan], rng=rng, **kw)
    for (task, n), gain in plan.items():
        cell = (df["task"] == task) & (df["n"] == n)
        ce = df[cell & (df["loss"] == "ce")].set_index("seed")["test_score"]
        scl = cell & (df["loss"] == "ce+scl")
        df.loc[scl, "test_score"] = (ce.loc[df.loc[scl, "seed"]].to_numpy() + gain[df.loc[scl, "seed"]])
    return df


def planted_fewshot():
    """Table 2 at N = 20 and 100 with the gains of PLAN."""
    return plant(PLAN, rng=3)


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


def planted_gains(gains: dict[tuple[str, int], float], **kw):
    """Table 2 cells where every seed's CE+SCL run beats its CE run by the cell's gain (points),
    give or take a tenth of a point."""
    return plant({cell: g / 100 + np.linspace(-0.001, 0.001, 10) for cell, g in gains.items()}, rng=4, **kw)


TASKS = ("sst2", "qnli", "mnli")


@pytest.mark.parametrize("at_1000,word", [(0.5, "does"), (2.5, "does not")])
def test_whether_the_gain_shrinks_at_n_1000(at_1000, word):
    df = planted_gains({(t, n): g for t in TASKS for n, g in ((20, 3.0), (100, 2.0), (1000, at_1000))})
    text = report._verdicts(built(df))["fewshot_shrinks"]
    assert text.startswith(f"Mean gain of CE+SCL over tasks: N=20 +3.0, N=100 +2.0, N=1000 +{at_1000:.1f} "
                           f"points: the gain {word} shrink at N=1000 (descriptive, no test). At N=1000: N=1000 SST-2: Δ")
    verdicts = text.split("At N=1000: ", 1)[1].rstrip(".").split("; ")
    assert [v.split(":")[0] for v in verdicts] == ["N=1000 SST-2", "N=1000 QNLI", "N=1000 MNLI"]


def test_the_shrink_claim_needs_every_n():
    df = planted_gains({(t, n): 1.0 for t in TASKS for n in (20, 100)})
    assert report._verdicts(built(df))["fewshot_shrinks"] == \
        "Not all of N = 20, 100, 1000 have CE and CE+SCL runs in the database."


def test_the_batch_claim_reads_the_mean_of_ce_scl_over_tasks_by_batch_size():
    from analysis.synthetic import grid

    df = synthetic_results(grid(5), seeds=range(2), losses=("ce+scl",), rng=5)
    rising = {16: 0.80, 64: 0.81, 256: 0.83}
    df["test_accuracy"] = df["batch_size"].map(rising) + np.where(df["task"] == "cola", 0.02, 0.0)
    text = report._verdicts(built(df))["batch"]
    assert text == ("batch 16: 80.7, batch 64: 81.7, batch 256: 83.7 (CE+SCL, mean over tasks): rises with "
                    "batch size (descriptive; the paper gives one run per cell and no test).")
    df["test_accuracy"] = df["batch_size"].map({16: 0.80, 64: 0.82, 256: 0.81})
    assert ": does not rise with batch size" in report._verdicts(built(df))["batch"]
    one = df[df["batch_size"] == 16]
    assert report._verdicts(built(one))["batch"] == \
        "Fewer than two batch sizes of full-data CE+SCL runs are in the database."


def test_the_transfer_claim_adds_the_test_of_equal_spread():
    from analysis.synthetic import transfer_results

    tables = built(transfer_results(seeds=range(6), rng=6))
    text = report._verdicts(tables)["transfer"]
    assert text.startswith("Our data support it in ")
    variance = text.split(" Variance: ", 1)[1]
    for t in tables[7].tests:
        bf = next(e for e in t.comparison.extra if e.test == "Brown–Forsythe test")
        assert f"{tables[7].layout.col_text(t.col)}: {bf.p_text()} (Brown–Forsythe test of equal spread; " \
               f"CE vs CE+SCL {bf.detail})" in variance
    assert variance.count("Brown–Forsythe") == len(tables[7].tests) == 2


def test_the_glue_claim_counts_accuracy_cells_but_not_their_average():
    from analysis.synthetic import grid

    tables = built(synthetic_results(grid(4), seeds=range(4), effect=0.08, n_test=2000, rng=8))
    text = report._verdicts(tables)["glue"]
    assert text.startswith("Our data support it in 6 of 6 cells")
    assert "average" not in text.split(". ", 1)[1].lower()


def test_several_models_get_a_verdict_each_on_their_own_tests(monkeypatch):
    """Each model's verdict counts its own cells with its own Holm-adjusted p; a model without
    runs for a claim is named. The embedding claim needs a database: stubbed here."""
    monkeypatch.setattr(report, "_tsne_claim", lambda engine, df: "stub")
    strong = planted_gains({(t, n): 3.0 for t in TASKS for n in (20, 100)}, model="m-strong")
    null = planted_fewshot()
    null = null[null["n"] == 100].assign(model="m-null")
    noisy = synthetic_results([dict(task="sst2", n=100, noise=0.3)], model="m-strong", rng=9)
    df = pd.concat([strong, null, noisy], ignore_index=True)
    tables = built(df)
    claims = report._claims(tables, None, df)
    assert claims["tsne"] == "stub"
    lines = claims["fewshot"].split("\n  - ")
    assert lines[0] == "" and len(lines) == 3
    assert lines[1].startswith("`m-strong`: Our data support it in 6 of 6 cells")
    assert lines[2].startswith("`m-null`: Our data support it in 0 of 3 cells")
    assert claims["noise"].startswith("\n  - `m-strong`: ")
    assert claims["noise"].endswith("\n  - No runs for it with `m-null`.")
    assert claims["glue"] == report._model_claims({n: t.for_model("m-strong") for n, t in tables.items()}, df)["glue"]
    per = {m: report._model_claims({n: t.for_model(m) for n, t in tables.items()}, df) for m in ("m-strong", "m-null")}
    assert claims["fewshot"] == f"\n  - `m-strong`: {per['m-strong']['fewshot']}\n  - `m-null`: {per['m-null']['fewshot']}"


def test_every_model_without_runs_for_a_claim_is_named(monkeypatch):
    monkeypatch.setattr(report, "_tsne_claim", lambda engine, df: "stub")
    strong = planted_gains({("sst2", 20): 3.0}, model="m-strong")
    noisy = synthetic_results([dict(task="sst2", n=100, noise=0.3)], model="m-strong", rng=9)
    others = [planted_fewshot().query("n == 20").assign(model=m, job_id=lambda d, m=m: m + d["job_id"])
              for m in ("m-one", "m-two")]
    df = pd.concat([strong, noisy, *others], ignore_index=True)
    claims = report._claims(built(df), None, df)
    assert claims["noise"].endswith("\n  - No runs for it with `m-one`, `m-two`.")


def test_one_model_gets_one_verdict_per_claim(monkeypatch):
    monkeypatch.setattr(report, "_tsne_claim", lambda engine, df: "stub")
    df = planted_fewshot()
    tables = built(df)
    claims = report._claims(tables, None, df)
    assert claims == {**report._model_claims(tables, df), "tsne": "stub"}


# ---- the verdict's edges, on real tables whose numbers are then set by hand -----------------
# Significance is Holm-adjusted p *below* α; a gain is any positive difference, however small.

def _set(t, p_holm: float, diff: float, setting=None):
    """Cell test t with its Holm-adjusted p and mean difference (points) replaced."""
    from dataclasses import replace

    row = t.row if setting is None else replace(t.row, setting=setting)
    return replace(t, row=row, comparison=replace(t.comparison, p_holm=p_holm, mean_diff=diff))


def test_a_p_of_exactly_alpha_is_not_significant_and_a_small_gain_still_counts():
    table = built(planted_fewshot())[2]
    base = table.tests[0]
    at_alpha, small_gain, small_loss = _set(base, ALPHA, 4.0), _set(base, 0.01, 0.4), _set(base, 0.01, -0.4)
    loss_at_alpha = _set(base, ALPHA, -4.0)
    from dataclasses import replace

    edge = replace(table, tests=[at_alpha, small_gain, loss_at_alpha, small_loss])
    text = report._summary(edge, lambda t: True)
    assert text.startswith(f"Our data support it in 1 of 4 cells (Holm-adjusted p < {ALPHA}) and contradict it in 1. ")
    lines = text.split(". ", 1)[1].split("; ")
    assert lines[0].endswith("→ no significant difference") and lines[2].endswith("→ no significant difference")
    assert lines[1].endswith("→ significant gain") and lines[3].endswith("→ significant loss (CE+SCL worse).")
    assert text.endswith("→ significant loss (CE+SCL worse).") and not text.endswith("..")
    assert report._verdict_line(edge, at_alpha).endswith("→ no significant difference")
    assert report._verdict_line(edge, small_gain).endswith("→ significant gain")

    none_against = replace(table, tests=[small_gain, at_alpha])
    text = report._summary(none_against, lambda t: True)
    assert text.startswith(f"Our data support it in 1 of 2 cells (Holm-adjusted p < {ALPHA}). N=")


def test_a_verdict_on_one_of_several_settings_names_the_cell_and_the_setting():
    table = built(planted_fewshot())[2]
    t = next(x for x in table.tests if (x.col, x.group) == ("sst2", 20))
    line = report._verdict_line(table, _set(t, 0.01, 2.0, setting=(0.5, 0.3, "mean")))
    assert line.startswith("N=20 SST-2 (CE+SCL λ=0.5 τ=0.3 mean): Δ +2.0 points")


def _set_trend(t, p_holm: float, slope: float, setting=None, p=None):
    from dataclasses import replace

    row = t.row if setting is None else replace(t.row, setting=setting)
    test = t.test if p is None else replace(t.test, p=p)
    return replace(t, row=row, p_holm=p_holm, mean_slope=slope, test=test)


def test_the_trend_headline_at_its_edges():
    from dataclasses import replace

    table = built(planted_noise({"sst2": STRONG_SLOPE, "qnli": MODERATE_SLOPE}))[3]
    sst2, qnli, mnli = ({t.group: t for t in table.trends}[g] for g in ("sst2", "qnli", "mnli"))
    edge = replace(table, trends=[_set_trend(sst2, ALPHA, 9.0),  # exactly α: not significant
                                  _set_trend(mnli, float("nan"), 0.0, p=float("nan")),  # untestable
                                  _set_trend(qnli, 0.01, 0.4, setting=(0.5, 0.3, "mean"))])  # a small growth
    text = report._trend_summary(edge)
    assert "the gap grows significantly in 1 of 3 tasks; " in text
    lines = text.split("tasks; ", 1)[1].split("; ")
    assert len(lines) == 3 and text.endswith("→ the gap grows with T.") and not text.endswith("..")
    assert lines[0].startswith("SST-2: +9.0 points per unit T") and lines[0].endswith("→ no significant change with T")
    assert lines[1].startswith("MNLI: cannot be tested (") and lines[1].endswith(" seed(s) with a slope)")
    assert lines[2].startswith("QNLI (CE+SCL λ=0.5 τ=0.3 mean): +0.4 points per unit T")
    lo, hi = qnli.ci
    assert f"[95% CI {lo:+.1f}, {hi:+.1f}]" in lines[2] and lo != hi
    assert f"Holm-adjusted {qnli.test.p_text(0.01)} →" in lines[2]


def test_a_short_verdict_counts_holm_adjusted_gains_and_losses():
    df = planted_fewshot()
    tables = built(df)
    keep = report.VERDICT_TESTS["fewshot"][1]
    direction, text = report._short_verdict(tables[2], keep)
    assert direction == "mixed" and text.startswith("mixed: 1 gain(s), 1 loss(es) of 6 cells; mean Δ ")
    assert report._short_verdict(tables[2].where(lambda s: False), keep) == (None, "no data")
    gains_only = built(plant({("sst2", 20): STRONG, ("qnli", 100): NULL}, rng=4))
    assert report._short_verdict(gains_only[2], keep)[0] == "supported"
    assert report._short_verdict(built(plant({("sst2", 20): -STRONG}, rng=5))[2], keep)[0] == "contradicted"
    assert report._short_verdict(built(plant({("qnli", 100): NULL}, rng=6))[2], keep)[0] == "not supported"
    assert report.render_protocol_shift(tables, df) == ""  # one protocol: nothing to set beside
