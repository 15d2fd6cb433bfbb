"""analysis tables built from synthetic results frames in memory: cells, sections, notes, tests and
renderings of the paper's tables (on databases, and the report: tests/integration/test_tables.py)."""

from io import StringIO

import numpy as np
import pandas as pd
import pytest

from analysis import build_table, render
from analysis import stats
from analysis.synthetic import grid, synthetic_results, transfer_results

FAST = 2000  # resamples: enough for these tests, and fast


def test_no_effect_is_not_found_in_90_percent_of_draws():
    found = []
    for draw in range(50):
        df = synthetic_results(grid(2), effect=0.0, n_test=400, rng=1000 + draw)
        t = build_table(df, 2, n_resamples=500, seed=draw)
        found.append(min(x.comparison.p_holm for x in t.tests) < 0.05)
    assert np.mean(found) <= 0.10


def test_missing_and_incomplete_cells_are_marked():
    df = synthetic_results([dict(task="sst2", n=20)], seeds=range(3), effect=0.02, rng=1)
    t = build_table(df, 2, n_resamples=FAST)
    sec = t.sections[0].label
    assert t.cell(sec, 20, "CE", "sst2").n_runs == 3
    assert t.cell(sec, 100, "CE", "qnli").n_runs == 0
    text = render(t, "terminal", width=200)  # wide: no cell text is wrapped over two lines
    assert "3 of 10 seeds" in text and "—" in text
    assert "p n/a (a side has no runs)" in text
    empty = build_table(df.iloc[0:0], 2)
    assert "No results in the database for Table 2" in render(empty, "markdown")


def test_several_models_get_sections_and_model_filters():
    df = pd.concat([synthetic_results([dict(task="sst2", n=20)], model="m-small", rng=1),
                    synthetic_results([dict(task="sst2", n=20)], model="m-large", rng=2)], ignore_index=True)
    t = build_table(df, 2, n_resamples=FAST)
    assert t.models == ["m-large", "m-small"] and len(t.tests) == 2
    assert any("one section per model" in n for n in t.notes)
    only = build_table(df, 2, model="m-small", n_resamples=FAST)
    assert only.models == ["m-small"]
    text = render(only)
    assert "Model: m-small" in text and "m-large" not in text


def test_scl_settings_split_rows_not_pooled():
    df = pd.concat([synthetic_results([dict(task="sst2", n=20)], rng=1),
                    synthetic_results([dict(task="sst2", n=20)], losses=("ce+scl",), rng=2,
                                      extra=dict(lam=0.5, tau=0.1))], ignore_index=True).drop_duplicates("job_id")
    t = build_table(df, 2, n_resamples=FAST)
    rows = t.sections[0].rows
    assert rows[0].label == "CE" and len(rows) == 3 and all("λ=" in r.label for r in rows[1:])
    assert {r.setting for r in rows[1:]} == {(0.9, 0.3, "mean"), (0.5, 0.1, "mean")}
    assert sum(1 for x in t.tests if x.col == "sst2") == 2


def test_one_scl_setting_per_task_is_one_row_with_the_settings_in_the_caption():
    """`--tuned` runs: each task has its own (λ, τ), so one CE+SCL row, not a row per setting
    that reads "missing" for every other task; each task's runs still pair with its CE runs."""
    df = pd.concat([synthetic_results([dict(task="sst2", n=20)], rng=1, extra=dict(lam=0.5, tau=0.7)),
                    synthetic_results([dict(task="qnli", n=20)], rng=2, extra=dict(lam=0.9, tau=0.3))],
                   ignore_index=True)
    t = build_table(df, 2, n_resamples=FAST)
    sec = t.sections[0]
    assert [r.label for r in sec.rows] == ["CE", "CE+SCL"]
    assert "CE+SCL with SST-2 λ=0.5, τ=0.7; QNLI λ=0.9, τ=0.3" in sec.caption
    assert t.cell(sec.label, 20, "CE+SCL", "sst2").n_runs == 10
    assert t.cell(sec.label, 20, "CE+SCL", "qnli").n_runs == 10
    assert sorted(x.col for x in t.tests) == ["qnli", "sst2"]
    assert all(len(x.pairs) == 10 for x in t.tests)


def test_table3_average_pools_noisy_levels():
    df = synthetic_results(grid(3), seeds=range(4), effect=0.05, n_test=300, rng=3)
    t = build_table(df, 3, "mean", n_resamples=FAST)
    sec = t.sections[0].label
    avg = t.cell(sec, "qnli", "CE", "average")
    noisy = df[(df.task == "qnli") & (df.loss == "ce") & (df.noise > 0)]["test_score"]
    assert avg.n_runs == 16 and avg.mean == pytest.approx(noisy.mean() * 100)
    assert avg.paper_mean == 79.0
    test = next(x for x in t.tests if x.group == "qnli" and x.col == "average")
    assert test.comparison.n_pairs == 4 and len(test.pairs) == 16  # seeds are the units; 16 job pairs
    by_seed = df[(df.task == "qnli") & (df.noise > 0)].pivot_table(index="seed", columns="loss",
                                                                  values="test_score")  # mean over T
    assert test.comparison.primary.p == pytest.approx(
        stats.paired_t(by_seed["ce"] * 100, by_seed["ce+scl"] * 100).p)


def test_table4_flags_subsets_and_shows_metric():
    df = synthetic_results(grid(4), seeds=range(2), rng=4)
    t = build_table(df, 4, n_resamples=FAST)
    sec = t.sections[0].label
    assert "subset: 9,999 of 104,743 training rows" in t.cell(sec, "accuracy", "CE", "qnli").flags
    assert not t.cell(sec, "accuracy", "CE", "sst2").flags
    assert t.cell(sec, "accuracy", "CE+SCL", "sst2").paper_mean == 95.9
    assert t.cell(sec, "task metric", "CE", "cola").paper_mean is None


def test_table5_batch_sizes_share_a_section():
    df = synthetic_results(grid(5), seeds=range(2), losses=("ce+scl",), rng=5)
    t = build_table(df, 5, n_resamples=FAST)
    assert len(t.sections) == 1
    sec = t.sections[0].label
    assert t.cell(sec, 256, "CE+SCL", "cola").paper_mean == 84.9
    assert t.cell(sec, 64, "CE", "sst2").n_runs == 0 and not t.tests


def test_table7_rows_follow_the_source_model():
    df = transfer_results(seeds=range(5), rng=6)
    t = build_table(df, 7, n_resamples=FAST)
    sec = t.sections[0].label
    assert [r.label for r in t.sections[0].rows] == ["CE", "CE+SCL", "baseline"]
    assert t.cell(sec, "", "CE", "yelp_polarity").n_runs == 5
    assert t.cell(sec, "", "baseline", "yelp_polarity").n_runs == 5
    assert t.cell(sec, "", "CE+SCL", "amazon_polarity_sample").paper_mean == 90.3
    assert t.cell(sec, "", "CE", "mr").n_runs == 0
    test = next(x for x in t.tests if x.col == "yelp_polarity")
    assert any(e.test == "Brown–Forsythe test" for e in test.comparison.extra)


def test_table5_shows_the_contrastive_batch_actually_seen():
    df = synthetic_results(grid(5), seeds=range(2), rng=5)
    df["scl_batch_size"] = df["batch_size"]
    small = (df["task"] == "cola") & (df["batch_size"] == 256) & (df["loss"] == "ce+scl")
    df.loc[small & (df["seed"] == 1), "scl_batch_size"] = 200
    t = build_table(df, 5, n_resamples=FAST)
    sec = t.sections[0].label
    assert "contrastive batch 200" in t.cell(sec, 256, "CE+SCL", "cola").flags
    assert not any("contrastive" in f for f in t.cell(sec, 64, "CE+SCL", "cola").flags)
    assert any("batch 16: 16, batch 64: 64, batch 256: 200–256" in n for n in t.notes)
    assert any("no gradient accumulation" in n.lower() for n in t.notes)


def test_table7_names_the_data_and_the_stage_1_actually_used():
    df = transfer_results(seeds=range(3), rng=6)
    source = df["task"] == "sst2"
    df.loc[source, "n"] = 2000
    t = build_table(df, 7, n_resamples=FAST)
    assert sum("Stage 1" in n and "random sample of 2,000 of its 67,349" in n for n in t.notes) == 2
    assert any(n.startswith("Yelp-2: 200 test examples from a 1,000-row sample") for n in t.notes)
    assert any(n.startswith("Amazon-2*: 200 test examples") and "not the official" in n for n in t.notes)


def _sst2_n20(rng=1) -> pd.DataFrame:
    return synthetic_results([dict(task="sst2", n=20)], rng=rng)  # every run: best epoch 3 of 10


def test_cells_whose_runs_stop_at_their_last_epoch_are_marked():
    df = _sst2_n20()
    ce, scl = df.index[df["loss"] == "ce"], df.index[df["loss"] == "ce+scl"]
    df.loc[ce[:4], "best_epoch"] = 10  # 4 of 10 at the last epoch: marked
    df.loc[scl[:3], "best_epoch"] = 10  # 3 of 10: not more than a third
    t = build_table(df, 2, n_resamples=FAST)
    sec = t.sections[0].label
    a, b = t.cell(sec, 20, "CE", "sst2"), t.cell(sec, 20, "CE+SCL", "sst2")
    assert (a.n_last, a.n_known, a.cut_short) == (4, 10, True)
    assert (b.n_last, b.n_known, b.cut_short) == (3, 10, False)
    assert any(n.startswith("† 1 of 2 cells: more than 33% of the cell's runs") for n in t.notes)
    for fmt in ("terminal", "markdown"):
        text = render(t, fmt, width=200)  # wide: no cell text is wrapped over two lines
        assert text.count(" † [") == 1 and f"{a.mean:.1f} ± {a.std:.1f} † [3 of 10]" in text
    recs = pd.read_csv(StringIO(render(t, "csv")))
    recs = recs[(recs["col"] == "sst2") & (recs["group"] == 20)].set_index("row")
    assert recs.loc[["CE", "CE+SCL"], "cut_short"].tolist() == [True, False]


def test_step_budgets_are_judged_by_their_last_step():
    df = _sst2_n20()
    df["best_epoch"] = 10  # an epoch count means nothing under a step budget
    df["steps"] = pd.array([200] * len(df), dtype="Int64")
    df["best_step"] = pd.array([200 if i < 5 else 120 for i in df["seed"]], dtype="Int64")
    df.loc[df["loss"] == "ce+scl", "best_step"] = 120
    t = build_table(df, 2, n_resamples=FAST)
    sec = t.sections[0].label
    assert t.cell(sec, 20, "CE", "sst2").n_last == 5 and t.cell(sec, 20, "CE", "sst2").cut_short
    assert t.cell(sec, 20, "CE+SCL", "sst2").n_last == 0
    # without a best_step column (today's schema) a step-budget run cannot be judged: not counted
    t = build_table(df.drop(columns="best_step"), 2, n_resamples=FAST)
    assert (t.cell(sec, 20, "CE", "sst2").n_known, t.cell(sec, 20, "CE", "sst2").cut_short) == (0, False)


def test_a_tie_at_the_top3_boundary_is_averaged_and_reported():
    df = _sst2_n20()
    ce = df[df["loss"] == "ce"].sort_values("val_score", ascending=False)
    df.loc[ce.index[3], "val_score"] = ce["val_score"].iloc[2]  # 3rd and 4th best CE runs tie
    t = build_table(df, 2, n_resamples=FAST)
    cell = t.cell(t.sections[0].label, 20, "CE", "sst2")
    top = 100 * ce["test_score"].to_numpy()
    assert cell.mean == pytest.approx((top[0] + top[1] + (top[2] + top[3]) / 2) / 3)
    assert cell.std == pytest.approx((np.std(top[[0, 1, 2]], ddof=1) + np.std(top[[0, 1, 3]], ddof=1)) / 2)
    assert cell.tie_decided and "2 tied for 1 slot" in cell.flags and cell.n_used == 3
    assert "Ties at the top-3 boundary decided 1 of 2 cells" in render(t, "terminal")
    assert not any("Ties at the top-3" in n for n in build_table(df, 2, "mean", n_resamples=FAST).notes)


def test_the_top3_never_depends_on_seed_order():
    df = _sst2_n20()
    ce = df[df["loss"] == "ce"].sort_values("val_score", ascending=False)
    df.loc[ce.index[3], "val_score"] = ce["val_score"].iloc[2]
    flipped = df.assign(seed=9 - df["seed"]).iloc[::-1]  # a higher seed instead of a lower one
    for a, b in zip(build_table(df, 2, n_resamples=FAST).cells, build_table(flipped, 2, n_resamples=FAST).cells):
        assert (a.mean, a.std, a.flags) == (b.mean, b.std, b.flags)


def test_cell_tests_pair_runs_by_seed_not_by_rank():
    """A cell's runs reach the test sorted by validation score; CE's and CE+SCL's orders differ
    here (CE's best validation is seed 9, CE+SCL's seed 0), and the test still pairs by seed."""
    df = synthetic_results([dict(task="sst2", n=20)], effect=0.02, rng=7)
    ce, scl = df["loss"] == "ce", df["loss"] == "ce+scl"
    df.loc[ce, "val_score"] = 0.5 + 0.01 * df.loc[ce, "seed"]
    df.loc[scl, "val_score"] = 0.9 - 0.01 * df.loc[scl, "seed"]
    t = build_table(df, 2, n_resamples=FAST)
    (test,) = t.tests
    wide = df.pivot_table(index="seed", columns="loss", values="test_score") * 100
    ref = stats.paired_t(wide["ce"], wide["ce+scl"])
    assert test.comparison.n_pairs == 10 and test.comparison.primary.p == pytest.approx(ref.p)
    assert test.comparison.mean_diff == pytest.approx((wide["ce+scl"] - wide["ce"]).mean())
    job = df.set_index(["loss", "seed"])["job_id"]
    assert sorted(test.pairs) == sorted((job["ce", s], job["ce+scl", s]) for s in range(10))


def test_protocol_v2_runs_at_their_budgets_share_one_section(monkeypatch):
    """The study's budgets differ by N (grids.V2_BUDGETS), yet the v2 runs of N = 20 and 100 form
    one section, captioned with the budgets; a run at a budget of its own gets its own section."""
    from harness.protocol import grids

    monkeypatch.setitem(grids.V2_BUDGETS, 20, 75)
    monkeypatch.setitem(grids.V2_BUDGETS, 100, 100)
    df = synthetic_results([dict(task="sst2", n=20), dict(task="sst2", n=100)], rng=3)
    df["steps"] = pd.array([75 if n == 20 else 100 for n in df["n"]], dtype="Int64")
    own = synthetic_results([dict(task="sst2", n=20)], rng=4)
    own["steps"] = pd.array([100] * len(own), dtype="Int64")  # N = 20 at 100 steps: not v2's budget
    own["job_id"] = own["job_id"] + "-own"
    t = build_table(pd.concat([df, own], ignore_index=True), 2, n_resamples=FAST)
    assert len(t.sections) == 2
    (v2,) = [s for s in t.sections if "protocol v2's step budgets" in s.caption]
    assert "(N=20: 75, N=100: 100 steps; validation every 25)" in v2.caption
    assert t.cell(v2.label, 20, "CE", "sst2").n_runs == 10 and t.cell(v2.label, 100, "CE", "sst2").n_runs == 10
    (mine,) = [s for s in t.sections if s is not v2]
    assert "100 steps" in mine.caption and t.cell(mine.label, 20, "CE", "sst2").n_runs == 10
    assert t.cell(mine.label, 100, "CE", "sst2").n_runs == 0


def test_each_runs_protocol(monkeypatch):
    from analysis.layouts import protocol_of
    from harness.protocol import grids

    monkeypatch.setitem(grids.V2_BUDGETS, 20, 75)
    monkeypatch.setitem(grids.V2_BUDGETS, 100, 110)
    df = pd.DataFrame({"n": pd.array([20, 40, 40, None, 20, None], dtype="Int64"),
                       "steps": pd.array([75, 110, 75, None, None, 500], dtype="Int64")})
    assert protocol_of(df).tolist() == ["v2", "v2", "75 steps", "v1", "v1", "500 steps"]
    assert protocol_of(df.drop(columns="steps")).tolist() == ["v1"] * 6


def test_a_section_without_ce_scl_runs_names_no_ce_scl_setting():
    df = synthetic_results([dict(task="sst2", n=20)], seeds=range(3), losses=("ce",), rng=2)
    (sec,) = build_table(df, 2, n_resamples=FAST).sections
    assert "CE+SCL" not in sec.caption and sec.caption.endswith("sampling uniform")
