"""analysis tables and report on synthetic databases with a known effect (or none)."""

import json
from io import StringIO

import numpy as np
import pandas as pd
import pytest

from analysis import build_table, load_results, render, write_report
from analysis import stats
from analysis.synthetic import (MODEL, NOISY_T, TABLE3_TASKS, grid, make_db, noise_frame, noise_scores,
                                synthetic_results, transfer_results)
from harness import db as hdb

FAST = 2000  # resamples: enough for these tests, and fast


@pytest.fixture(scope="module")
def effect_db(tmp_path_factory):
    df = synthetic_results(grid(2), effect=0.06, n_test=400, rng=11)
    return make_db(tmp_path_factory.mktemp("db") / "r.db", df)


def test_load_results_is_the_results_table(effect_db):
    df = load_results(effect_db)
    cols = [c.name for c in hdb.results.columns]
    assert list(df.columns[:len(cols)]) == cols
    assert len(df) == 180 and df["job_id"].is_unique
    assert df["init_from"].isna().all() and df["n"].dtype == "Int64"
    url = str(effect_db.url)
    assert len(load_results(url)) == 180 and len(load_results(url.removeprefix("sqlite:///"))) == 180


def test_top3_cell_is_the_top3_by_validation(effect_db):
    df = load_results(effect_db)
    t = build_table(df, 2, "top3", n_resamples=FAST)
    cell = t.cell(t.sections[0].label, 20, "CE", "sst2")
    runs = df[(df.task == "sst2") & (df.n == 20) & (df.loss == "ce")].sort_values("val_score", ascending=False)
    top = runs["test_score"].to_numpy()[:3] * 100
    assert (cell.n_runs, cell.n_used) == (10, 3)
    assert cell.mean == pytest.approx(top.mean()) and cell.std == pytest.approx(top.std(ddof=1))
    assert (cell.paper_mean, cell.paper_std) == (85.9, 2.1)
    assert cell.diff == pytest.approx(top.mean() - 85.9)
    mean = build_table(df, 2, "mean", n_resamples=FAST).cell(t.sections[0].label, 20, "CE", "sst2")
    assert mean.n_used == 10 and mean.mean == pytest.approx(runs["test_score"].mean() * 100)


def test_known_effect_is_found(effect_db):
    t = build_table(load_results(effect_db), 2, db=effect_db, n_resamples=FAST)
    assert len(t.tests) == 9
    for test in t.tests:
        c = test.comparison
        assert c.n_pairs == 10 and c.primary.test == "paired t-test"
        assert c.p_holm < 0.01 and c.mean_diff > 0
        assert c.example_test.test == "paired bootstrap over examples" and c.example_test.p < 0.01
        assert c.ci[0] > 0


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
    text = render(t, "terminal")
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


def test_all_formats_render(effect_db):
    t = build_table(load_results(effect_db), 2, db=effect_db, n_resamples=FAST)
    term = render(t, "terminal")
    assert "paired t-test" in term and "paper" in term and "sentence-transformers" in term
    md = render(t, "markdown")
    assert md.count("| N=20 |") == 1 and "#### Model:" in md
    assert "\\begin{tabular}" in render(t, "latex")
    csv = pd.read_csv(StringIO(render(t, "csv")))
    assert len(csv) == 18 and {"mean", "paper_mean", "p_holm", "p[exact permutation test]"} <= set(csv.columns)
    js = json.loads(render(t, "json"))
    assert js["aggregation"] == "top3" and len(js["cells"]) == 18 and len(js["tests"]) == 9
    assert js["tests"][0]["example_test"] == "paired bootstrap over examples"
    with pytest.raises(ValueError):
        render(t, "html")
    with pytest.raises(ValueError):
        build_table(load_results(effect_db), 6)


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


def test_table3_noise_verdict_per_seed_and_trend(tmp_path):
    ce, scl = noise_scores(slope=10.0, rng=5)  # the gap grows 10 points per unit T
    df = noise_frame(ce, scl)
    t = build_table(df, 3, "mean", n_resamples=FAST)
    kept = lambda a: np.round(a * 10) / 10  # noise_frame keeps a score to 1/1000
    for i, task in enumerate(TABLE3_TASKS):
        avg = next(x for x in t.tests if x.group == task and x.col == "average").comparison
        assert avg.n_pairs == 10 and avg.primary.test == "paired t-test"
        assert avg.primary.p == pytest.approx(
            stats.paired_t(stats.seed_means(kept(ce[i])), stats.seed_means(kept(scl[i]))).p)
        trend = next(x for x in t.trends if x.group == task)
        assert trend.levels == NOISY_T and trend.test.n == 10
        assert trend.test.p == pytest.approx(stats.slope_t(kept(scl[i]) - kept(ce[i]), NOISY_T).p)
        assert trend.p_holm < 0.05 and trend.mean_slope > 0 and trend.ci[0] > 0
    assert "t-test of per-seed slopes" in render(t)
    assert len(json.loads(render(t, "json"))["trends"]) == 3
    engine = make_db(tmp_path / "noise.db", df, predictions=False)
    text = write_report(engine, tmp_path / "rep", n_resamples=FAST, figures=False).read_text()
    assert "the gap grows significantly in 3 of 3 tasks" in text


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


def test_report_finds_the_known_effect(effect_db, tmp_path):
    path = write_report(effect_db, tmp_path, n_resamples=FAST, figures=False)
    text = path.read_text()
    assert "support it in 6 of 6 cells" in text
    assert "**The models differ from the paper's.**" in text
    assert (tmp_path / "report.html").read_text().startswith("<!doctype html>")
    assert "<table>" in (tmp_path / "report.html").read_text()


def test_report_finds_no_effect_when_there_is_none(tmp_path):
    df = synthetic_results(grid(2), effect=0.0, n_test=400, rng=12)
    engine = make_db(tmp_path / "null.db", df)
    text = write_report(engine, tmp_path / "rep", n_resamples=FAST, figures=False).read_text()
    assert "support it in 0 of 6 cells" in text


@pytest.mark.postgres
def test_load_results_and_table_on_postgresql(pg_url):
    df = synthetic_results([dict(task="sst2", n=20)], seeds=range(4), effect=0.05, rng=7)
    engine = hdb.make_engine(pg_url)
    hdb.upgrade(engine)
    from analysis.synthetic import fill_db
    fill_db(engine, df)
    got = load_results(engine)
    assert len(got) == 8 and got["init_from"].isna().all() and (got["max_length"] == 128).all()
    assert (got["val_size"] == 500).all() and got["per_class"].isna().all()
    t = build_table(got, 2, db=engine, n_resamples=FAST)
    assert t.tests[0].comparison.n_pairs == 4 and t.tests[0].comparison.example_test is not None
    engine.dispose()


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


def test_embedding_claim_is_tested_per_model_and_n(tmp_path):
    df = pd.concat([synthetic_results([dict(task="sst2", n=20)], seeds=range(5), rng=1),
                    synthetic_results([dict(task="sst2", n=100)], seeds=range(5), rng=2),
                    synthetic_results([dict(task="sst2", n=20)], seeds=range(1), model="m-other", rng=3)],
                   ignore_index=True)
    # CE+SCL separates the classes better at N=20 and worse at N=100: pooled, the two would cancel
    sep = lambda r: 1.0 + 3.0 * ((r["loss"] == "ce+scl") == (r["n"] == 20))
    engine = make_db(tmp_path / "emb.db", df, predictions=False, embeddings=df["job_id"].tolist(),
                     emb_rows=80, emb_dim=8, separation=sep)
    text = write_report(engine, tmp_path / "rep", n_resamples=FAST, figures=False).read_text()
    assert "each (model, N) tested on its own: supported in 1 of 3" in text
    parts = {line.split(":")[0][4:]: line for line in text.splitlines() if line.startswith("  - `")}
    assert len(parts) == 3
    assert parts[f"`{MODEL}` N=20"].endswith("→ supports")
    assert "over 5 seed pair(s)" in parts[f"`{MODEL}` N=20"]
    assert parts[f"`{MODEL}` N=100"].endswith("→ contradicts")
    assert "1 seed pair(s), too few pairs to test" in parts["`m-other` N=20"]
