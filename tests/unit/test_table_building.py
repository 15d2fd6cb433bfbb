"""How `build_table` builds a table, piece by piece, on frames in memory: what it refuses, how it
scales and notes the scores, which generator and how many resamples every resampling test gets,
the order its tests see the runs in, the flags of a cell, the lookups of a table, one model's part
of it, and Table 3's seed-matched tests and trends where the two losses lack different runs.
(Mutation testing found each of these unguarded: scripts/mutation.py tables.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import build_table, stats
from analysis.layouts import LAYOUTS
from analysis.synthetic import NOISY_T, grid, synthetic_results
from analysis.tables import CE, SCL, VAL_SIZE_NOTE

FAST = 300  # resamples
SST2_20 = [dict(task="sst2", n=20)]


def one_cell(**kw) -> pd.DataFrame:
    return synthetic_results(SST2_20, effect=0.03, rng=kw.pop("rng", 5), **kw)


# ---- what it refuses, how it scales and what it notes --------------------------------------------

def test_an_unknown_table_or_aggregation_is_refused_with_the_choices():
    df = one_cell()
    with pytest.raises(ValueError, match=r"^no table 6; tables: 2, 3, 4, 5, 7, 8$"):
        build_table(df, 6)
    with pytest.raises(ValueError, match=r"^unknown aggregation 'median'; choose one of top3, mean$"):
        build_table(df, 2, "median")


def test_scores_stored_as_fractions_are_shown_times_100_and_say_so():
    df = one_cell()
    t = build_table(df, 2, "mean", n_resamples=FAST)
    assert t.scale == 100.0 and t.title == LAYOUTS[2].title
    assert "Scores are stored as fractions and shown ×100." in t.notes
    cell = t.cell(t.sections[0].label, 20, "CE", "sst2")
    assert cell.mean == pytest.approx(100 * df.loc[df["loss"] == "ce", "test_score"].mean())
    # a best score of exactly 1.0 is still a fraction
    top = df.copy()
    top.loc[top.index[0], "test_score"] = 1.0
    assert build_table(top, 2, "mean", n_resamples=FAST).scale == 100.0


def test_scores_stored_as_percentages_are_shown_as_they_are():
    df = one_cell()
    df["test_score"] *= 100  # e.g. 1.5 is 1.5 %, not 150 %
    df.loc[df.index[0], "test_score"] = 1.5
    t = build_table(df, 2, "mean", n_resamples=FAST)
    assert t.scale == 1.0
    assert not any("×100" in n for n in t.notes)
    cell = t.cell(t.sections[0].label, 20, "CE", "sst2")
    assert cell.mean == pytest.approx(df.loc[df["loss"] == "ce", "test_score"].mean())
    df["test_score"] = 1.5  # the best score just above 1: percentages still
    assert build_table(df, 2, "mean", n_resamples=FAST).scale == 1.0


def test_the_notes_say_what_a_cell_is_and_that_val_size_is_a_cap():
    t = build_table(one_cell(), 2, n_resamples=FAST)
    assert t.notes[0] == (
        "Each cell: mean ± std of the test scores of the top 3 runs by validation score (the paper's "
        "number); runs tied in validation score at the boundary of the top 3 count alike: the figure is "
        "the average over every equally likely choice of them, never a tie-break by seed; [k of m]: k runs "
        "behind the number out of m finished; 'x of 10 seeds' where fewer than the paper's runs finished; "
        "'missing' where none did.")
    assert VAL_SIZE_NOTE in t.notes
    assert not any("Several models" in n for n in t.notes)  # one model: no such note
    two = pd.concat([one_cell(), one_cell(model="m-other", rng=6)], ignore_index=True)
    assert "Several models are in the database: one section per model." in build_table(
        two, 2, n_resamples=FAST).notes


# ---- the generator and the resamples of every resampling test -----------------------------------

def test_a_table_is_the_same_for_the_same_seed_and_its_default_seed_is_0():
    df = synthetic_results(grid(3)[:5], effect=0.03, rng=7)  # SST-2's row: cells, average and trend

    def draws(t):
        return ([x.comparison.ci for x in t.tests], [x.comparison.primary.p for x in t.tests],
                [x.ci for x in t.trends])

    first = draws(build_table(df, 3, n_resamples=FAST, seed=3))
    assert draws(build_table(df, 3, n_resamples=FAST, seed=3)) == first
    assert draws(build_table(df, 3, n_resamples=FAST)) == draws(build_table(df, 3, n_resamples=FAST, seed=0))
    assert draws(build_table(df, 3, n_resamples=FAST, seed=4)) != first


def test_every_resampling_test_draws_from_the_tables_generator_with_the_resamples_asked(monkeypatch):
    seen = []

    def spy(name):
        real = getattr(stats, name)

        def wrapped(*args, **kw):
            seen.append((name, kw.get("n_resamples"), kw.get("rng"), kw.get("paired")))
            return real(*args, **kw)
        monkeypatch.setattr(stats, name, wrapped)

    spy("compare")
    spy("bootstrap_ci_diff")
    t = build_table(synthetic_results(grid(3)[:5], effect=0.03, rng=7), 3, n_resamples=FAST, seed=3)
    compares = [s for s in seen if s[0] == "compare"]
    cis = [s for s in seen if s[0] == "bootstrap_ci_diff"]
    assert len(compares) == 6  # T = 0, 0.3, 0.5, 0.7, 0.9 and the average
    # one interval per comparison (paired: every cell pairs its 10 seeds) and one for the trend's
    # per-seed slopes, paired too
    assert len(t.trends) == 1 and len(cis) == len(compares) + 1
    assert all(paired is True for *_, paired in cis)
    assert all(n == FAST for _, n, _, _ in compares + cis)
    generators = {id(rng) for _, _, rng, _ in compares + cis}
    assert len(generators) == 1 and isinstance(compares[0][2], np.random.Generator)


def test_the_tests_see_runs_by_validation_score_then_seed():
    """The documented order (validation score high to low, then seed low to high) decides the
    bootstrap's draws: the table's comparison is exactly `stats.compare` over runs in that order,
    drawing from a generator seeded with the table's seed."""
    df = one_cell()
    df.loc[df["seed"].isin([2, 5]), "val_score"] = 0.5  # a tie, broken by seed
    t = build_table(df.sample(frac=1, random_state=1), 2, n_resamples=FAST, seed=9)  # row order: shuffled

    def side(loss):
        runs = df[df["loss"] == loss].sort_values(["val_score", "seed"], ascending=[False, True])
        return runs["test_score"].to_numpy() * 100, [("sst2", s) for s in runs["seed"]]

    (va, ka), (vb, kb) = side("ce"), side("ce+scl")
    expected = stats.compare(va, vb, ka, kb, n_resamples=FAST, rng=np.random.default_rng(9))
    got = t.tests[0].comparison
    assert got.ci == expected.ci
    assert [x.p for x in got.tests] == [x.p for x in expected.tests]


# ---- a cell's flags, runs and paper numbers ----------------------------------------------------

def _with_val(df: pd.DataFrame, loss: str, scores: list[float]) -> pd.DataFrame:
    df = df.copy()
    idx = df.index[df["loss"] == loss]
    df.loc[idx, "val_score"] = scores + [0.1] * (len(idx) - len(scores))
    return df


def test_ties_at_the_top3_boundary_are_flagged_with_their_slots():
    one = _with_val(one_cell(), "ce", [0.9, 0.9, 0.8, 0.8, 0.8])  # 2 sure, 3 tied for 1 slot
    two = _with_val(one_cell(), "ce", [0.9, 0.8, 0.8, 0.8])  # 1 sure, 3 tied for 2 slots
    for df, flag in ((one, "3 tied for 1 slot"), (two, "3 tied for 2 slots")):
        t = build_table(df, 2, n_resamples=FAST)
        cell = t.cell(t.sections[0].label, 20, "CE", "sst2")
        assert cell.flags == [flag] and cell.tie_decided


def test_a_tie_flag_and_the_layouts_own_flag_are_both_kept():
    df = synthetic_results(grid(5)[:1], effect=0.03, rng=5)  # full SST-2, batch 16
    df["scl_batch_size"] = np.where(df["loss"] == "ce+scl", 12.0, np.nan)
    df = _with_val(df, "ce+scl", [0.9, 0.9, 0.8, 0.8, 0.8])
    t = build_table(df, 5, n_resamples=FAST)
    cell = next(c for c in t.cells if c.row == SCL and c.n_runs)
    assert cell.flags == ["3 tied for 1 slot", "contrastive batch 12"]


def test_a_cell_knows_its_runs_and_a_missing_cell_has_no_flags():
    df = one_cell()
    t = build_table(df, 2, n_resamples=FAST)
    sec = t.sections[0].label
    cell = t.cell(sec, 20, "CE", "sst2")
    assert sorted(cell.job_ids) == sorted(df.loc[df["loss"] == "ce", "job_id"])
    missing = t.cell(sec, 100, "CE", "qnli")
    assert missing.n_runs == 0 and missing.flags == [] and missing.job_ids == []
    assert missing.n_expected == 10


def test_an_average_column_says_how_many_of_its_columns_have_runs():
    full = synthetic_results(grid(3)[:5], rng=7)  # SST-2 at T = 0 and the four noisy T
    t = build_table(full, 3, "mean", n_resamples=FAST)
    sec = t.sections[0].label
    avg = t.cell(sec, "sst2", "CE", "average")
    assert avg.flags == [] and avg.n_expected is None and avg.n_runs == 40
    assert t.cell(sec, "sst2", "CE", 0.3).n_expected == 10
    part = full[full["noise"] != 0.5]
    t = build_table(part, 3, "mean", n_resamples=FAST)
    assert t.cell(sec, "sst2", "CE", "average").flags == ["3 of 4 columns"]
    assert t.cell(sec, "sst2", "CE", 0.5).flags == []  # a missing plain column: no flag


def test_each_test_carries_the_papers_p_for_its_cell():
    t = build_table(synthetic_results([dict(task="qnli", n=100)], rng=3), 2, n_resamples=FAST)
    assert [(x.group, x.col, x.paper_p) for x in t.tests] == [(100, "qnli", 1e-20)]


# ---- the table's lookups and one model's part of it -----------------------------------------------

def test_a_cell_is_found_by_row_or_by_label_and_an_absent_one_is_none():
    t = build_table(one_cell(), 2, n_resamples=FAST)
    sec = t.sections[0].label
    assert t.cell(sec, 20, CE, "sst2") is t.cell(sec, 20, "CE", "sst2") is not None
    assert t.cell(sec, 20, SCL, "sst2").row == SCL
    assert t.cell(sec, 20, "CE", "cola") is None and t.cell("no such section", 20, CE, "sst2") is None


def test_one_models_part_of_a_table_keeps_its_sections_cells_tests_and_trends():
    cells = grid(3)[:5]
    df = pd.concat([synthetic_results(cells, model="m-small", rng=1, effect=0.02),
                    synthetic_results(cells, model="m-large", rng=2, effect=0.02)], ignore_index=True)
    t = build_table(df, 3, n_resamples=FAST)
    small = t.for_model("m-small")
    assert [s.model for s in small.sections] == ["m-small"]
    assert small.cells and all(c.section == "m-small" for c in small.cells)
    assert small.tests and all(x.section == "m-small" for x in small.tests)
    assert small.trends and all(x.section == "m-small" for x in small.trends)
    assert len(small.cells) + len(t.for_model("m-large").cells) == len(t.cells)
    assert len(small.tests) * 2 == len(t.tests) and len(small.trends) * 2 == len(t.trends)


# ---- Table 3: seed-matched tests and trends where the losses lack different runs ----------------

def _table3(drop: list[tuple[str, float, int]]) -> pd.DataFrame:
    df = synthetic_results(grid(3)[:5], effect=0.03, rng=8)
    for loss, noise, seed in drop:
        df = df[~((df["loss"] == loss) & (df["noise"] == noise) & (df["seed"] == seed))]
    return df


def _matrix(df, loss) -> np.ndarray:
    runs = df[(df["loss"] == loss) & (df["noise"].isin(NOISY_T))]
    return runs.pivot(index="seed", columns="noise", values="test_score").reindex(
        index=range(10), columns=list(NOISY_T)).to_numpy() * 100


def test_the_average_and_the_trend_use_only_the_runs_both_losses_have():
    df = _table3([("ce", 0.5, 3), ("ce+scl", 0.7, 4)])
    t = build_table(df, 3, n_resamples=FAST)
    ce, scl = _matrix(df, "ce"), _matrix(df, "ce+scl")
    both = np.isfinite(ce) & np.isfinite(scl)
    ce, scl = np.where(both, ce, np.nan), np.where(both, scl, np.nan)
    avg = next(x for x in t.tests if x.col == "average").comparison
    assert avg.n_pairs == 10
    assert avg.mean_diff == pytest.approx(np.mean(stats.seed_means(scl) - stats.seed_means(ce)))
    assert avg.primary.p == pytest.approx(stats.paired_t(stats.seed_means(ce), stats.seed_means(scl)).p)
    trend = t.trends[0]
    slopes = stats.seed_slopes(scl - ce, np.array(NOISY_T))
    assert trend.mean_slope == pytest.approx(slopes.mean())
    assert trend.test.p == pytest.approx(stats.slope_t(scl - ce, np.array(NOISY_T)).p)


def test_a_task_with_runs_of_one_loss_has_no_trend_and_no_test():
    df = synthetic_results(grid(3)[:5], rng=8, losses=("ce",))
    t = build_table(df, 3, n_resamples=FAST)
    assert t.trends == [] and t.tests == []
    t = build_table(synthetic_results(grid(3)[:5], rng=8, losses=("ce+scl",)), 3, n_resamples=FAST)
    assert t.trends == [] and t.tests == []
