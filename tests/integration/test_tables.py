"""analysis tables and report on synthetic databases (SQLite files, and PostgreSQL) with a known
effect (or none); tables built from frames in memory are tests/unit/test_tables_on_frames.py."""

import json
from io import StringIO

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from analysis import build_table, load_results, render, write_report
from analysis import stats
from analysis.load import train_forwards
from analysis.synthetic import (MODEL, NOISY_T, TABLE3_TASKS, grid, make_db, noise_frame, noise_scores,
                                synthetic_results)
from harness.store import db as hdb

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


def test_report_finds_the_known_effect(effect_db, tmp_path):
    path = write_report(effect_db, tmp_path, n_resamples=FAST, figures=False)
    text = path.read_text()
    assert "support it in 6 of 6 cells" in text
    assert "**The models differ from the paper's.**" in text
    assert (tmp_path / "report.html").read_text().startswith("<!doctype html>")
    assert "<table>" in (tmp_path / "report.html").read_text()


def test_cut_short_cells_and_ties_from_a_database_into_the_report(tmp_path):
    df = synthetic_results([dict(task="sst2", n=20)], rng=21)
    ce = df[df["loss"] == "ce"].sort_values("val_score", ascending=False)
    df.loc[ce.index[:5], "best_epoch"] = 10  # 5 of 10 CE runs selected their last epoch
    df.loc[ce.index[3], "val_score"] = ce["val_score"].iloc[2]  # a tie at the top-3 boundary
    # two step-budget runs (steps set) whose selected step is not stored: not judged
    scl = df.index[df["loss"] == "ce+scl"][:2]
    df.loc[scl, "spec"] = [json.dumps({**json.loads(s), "steps": 200}) for s in df.loc[scl, "spec"]]
    df["steps"] = pd.Series(pd.NA, index=df.index, dtype="Int64")
    df.loc[scl, "steps"] = 200
    engine = make_db(tmp_path / "r.db", df, predictions=False)
    got = load_results(engine)
    assert got.set_index("job_id").loc[df.loc[scl, "job_id"], "steps"].tolist() == [200, 200]
    t = build_table(got, 2, n_resamples=FAST)
    # the step budget is part of a run's setting: the two step-budget runs form a section of their own
    (sec,) = [s.label for s in t.sections if "steps" not in s.caption]
    (v2,) = [s.label for s in t.sections if "200 steps" in s.caption]
    a, b = t.cell(sec, 20, "CE", "sst2"), t.cell(sec, 20, "CE+SCL", "sst2")
    assert (a.n_last, a.n_known, a.cut_short, a.tie_decided) == (5, 10, True, True)
    assert (b.n_last, b.n_known, b.cut_short, b.tie_decided) == (0, 8, False, False)
    c = t.cell(v2, 20, "CE+SCL", "sst2")  # their selected step is not stored: not judged
    assert (c.n_last, c.n_known, c.cut_short) == (0, 0, False)
    text = write_report(engine, tmp_path / "rep", n_resamples=FAST, figures=False).read_text()
    assert "Top 3 and ties:" in text and "† marks a cell where more than 33% of the runs" in text
    assert f"{a.mean:.1f} ± {a.std:.1f} † [3 of 10; 2 tied for 1 slot]" in text
    assert "Ties at the top-3 boundary decided 1 of 3 cells" in text and "† 1 of 3 cells" in text


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
    mark_packed(engine, 3)
    assert train_forwards(engine) == {"packed": 3, "full": 5}
    engine.dispose()


def mark_packed(engine, k: int) -> None:
    """The first k attempts ran the packed training pass (their resolved config says so)."""
    with engine.begin() as c:
        c.execute(sa.update(hdb.attempts).where(hdb.attempts.c.id <= k)
                  .values(config=json.dumps({"device": "cpu", "train_forward": "packed"})))


def test_the_report_says_which_training_forward_pass_ran(tmp_path):
    df = synthetic_results(grid(2), effect=0.0, n_test=200, rng=5, seeds=range(3))
    engine = make_db(tmp_path / "fw.db", df)
    assert train_forwards(engine) == {"full": len(df)}  # no train_forward: the full pass ran
    mark_packed(engine, 7)
    assert train_forwards(engine) == {"packed": 7, "full": len(df) - 7}
    text = write_report(engine, tmp_path / "rep", n_resamples=FAST, figures=False).read_text()
    assert f"Training forward pass: packed in 7 jobs, the model's full pass in {len(df) - 7} jobs." in text


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
    tsne = text[text.index("Silhouette score"):text.index("## Does the gain")]
    parts = {line.split(":")[0][4:]: line for line in tsne.splitlines() if line.startswith("  - `")}
    assert len(parts) == 3
    assert parts[f"`{MODEL}` N=20"].endswith("→ supports")
    assert "over 5 seed pair(s)" in parts[f"`{MODEL}` N=20"]
    assert parts[f"`{MODEL}` N=100"].endswith("→ contradicts")
    assert "1 seed pair(s), too few pairs to test" in parts["`m-other` N=20"]


def test_example_level_tests_use_only_examples_both_runs_of_a_pair_predicted(tmp_path, monkeypatch):
    """Three cells, in the table's order: SST-2's CE+SCL runs stored no predictions (no example
    test), QNLI's two sides predicted disjoint examples (none in common: no example test), MNLI
    has one seed whose both runs have predictions (one pair). The later cells are still tested,
    with exactly the pair's 0/1 matrices, the resamples `resamples_for` allows for the examples, the
    table's generator, McNemar over the same matrices and Holm over the model's example tests."""
    big = 20_000  # resamples asked: more than RESAMPLE_BUDGET allows for 300 examples
    df = synthetic_results([dict(task=t, n=20) for t in ("sst2", "qnli", "mnli")], effect=0.03,
                           n_test=300, rng=12)
    engine = make_db(tmp_path / "r.db", df)
    ids = lambda task, loss, seeds=range(10): df.loc[(df["task"] == task) & (df["loss"] == loss)  # noqa: E731
                                                     & df["seed"].isin(seeds), "job_id"].tolist()
    p = hdb.predictions
    with engine.begin() as conn:
        conn.execute(sa.delete(p).where(p.c.job_id.in_(ids("sst2", "ce+scl"))))
        conn.execute(sa.update(p).where(p.c.job_id.in_(ids("qnli", "ce+scl"))).values(example=p.c.example + 1000))
        conn.execute(sa.delete(p).where(p.c.job_id.in_(ids("mnli", "ce", range(1, 10)))))
    seen = []
    real = stats.paired_bootstrap_examples
    monkeypatch.setattr(stats, "paired_bootstrap_examples",
                        lambda ca, cb, **kw: seen.append((ca, cb, kw)) or real(ca, cb, **kw))
    t = build_table(load_results(engine), 2, db=engine, n_resamples=big)
    by_task = {x.col: x for x in t.tests}
    assert by_task["sst2"].comparison.example_test is None
    assert by_task["qnli"].comparison.example_test is None
    mnli = by_task["mnli"].comparison
    assert len(seen) == 1
    ca, cb, kw = seen[0]
    correct = lambda job: df.loc[df["job_id"] == job, "_correct"].iloc[0]  # noqa: E731
    assert np.array_equal(ca, [correct(ids("mnli", "ce", [0])[0])])
    assert np.array_equal(cb, [correct(ids("mnli", "ce+scl", [0])[0])])
    assert kw["n_resamples"] == stats.resamples_for(300, big) < big
    assert isinstance(kw["rng"], np.random.Generator)
    assert mnli.example_test.test == "paired bootstrap over examples"
    assert mnli.example_p_holm == pytest.approx(mnli.example_test.p)  # the model's only one
    assert mnli.extra[-1] == stats.mcnemar_pooled(ca, cb)


def test_report_sets_each_claim_under_v1_beside_v2(tmp_path, monkeypatch):
    """One model under both protocols: each answers the claims on its own (Holm within each
    protocol, so v2's runs leave v1's p as they were), and the report says how the verdict moved."""
    from analysis.report import CLAIMS_TITLE_SHIFT
    from harness.protocol import grids, paper

    monkeypatch.setitem(grids.V2_BUDGETS, 20, 75)
    monkeypatch.setitem(grids.V2_BUDGETS, 100, 100)
    v1 = synthetic_results([dict(task="sst2", n=20), dict(task="sst2", n=100)], effect=0.0, n_test=400, rng=5)
    v2 = synthetic_results([dict(task="sst2", n=20, steps=75), dict(task="sst2", n=100, steps=100)],
                           effect=0.15, n_test=400, rng=6, grid="fewshot-v2")
    both = pd.concat([v1, v2], ignore_index=True)
    alone, t = build_table(v1, 2, n_resamples=FAST), build_table(both, 2, n_resamples=FAST)
    assert sorted(s.protocol for s in t.sections) == ["v1", "v2"]
    v1_label = next(s.label for s in t.sections if s.protocol == "v1")
    assert ([x.comparison.p_holm for x in t.tests if x.section == v1_label]
            == [x.comparison.p_holm for x in alone.tests])
    v2_tests = [x for x in t.tests if x.section != v1_label]
    assert len(v2_tests) == 2 and all(x.comparison.p_holm < 0.05 and x.comparison.mean_diff > 10 for x in v2_tests)
    assert all(x.comparison.p_holm >= 0.05 for x in alone.tests)

    text = write_report(make_db(tmp_path / "r.db", both, predictions=False), tmp_path / "rep",
                        n_resamples=FAST, figures=False).read_text()
    assert CLAIMS_TITLE_SHIFT in text
    row = next(line for line in text.splitlines() if line.startswith(f"| {paper.CLAIMS['fewshot']} | `{MODEL}` |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2].startswith("not supported: 0 gain(s), 0 loss(es) of 2 cells")
    assert cells[3].startswith("supported: 2 gain(s), 0 loss(es) of 2 cells")
    assert cells[4] == "yes: not supported → supported"
    claim = text[text.index(f"**{paper.CLAIMS['fewshot']}**"):].split("\n- **")[0]
    assert f"`{MODEL}` under protocol v1 (epochs): Our data support it in 0 of 2 cells" in claim
    assert f"`{MODEL}` under protocol v2 (step budgets): Our data support it in 2 of 2 cells" in claim


def test_replaced_noise_is_table_8_not_table_3(tmp_path, monkeypatch):
    """Runs whose back-translations replace the originals (grid noise-replace) fill our extension,
    Table 8, never the paper's Table 3; the clean runs serve both; the report says what the noise
    cost CE and judges the extension's claim."""
    from analysis.report import CLAIMS
    from harness.protocol import grids

    monkeypatch.setitem(grids.V2_BUDGETS, 100, 100)
    temps = (0.0,) + grids.HARSH_NOISES
    ce, scl = noise_scores(temps=temps, effect=4.0, seeds=5, rng=8)
    ce = ce - np.array([0.0, 3.0, 6.0, 9.0])  # CE loses 3 points per step of T; CE+SCL does not
    df = noise_frame(ce, scl, temps=temps, mode="replace")
    df["steps"] = pd.array([100] * len(df), dtype="Int64")
    df["best_step"] = pd.array([50] * len(df), dtype="Int64")
    assert set(df.loc[df["noise"] > 0, "noise_mode"]) == {"replace"} and df.loc[df["noise"] == 0, "noise_mode"].isna().all()

    t3, t8 = build_table(df, 3, n_resamples=FAST), build_table(df, 8, n_resamples=FAST)
    (s3,), (s8,) = t3.sections, t8.sections
    assert t3.cell(s3.label, "sst2", "CE", 0.0).n_runs == 5
    assert all(t3.cell(s3.label, "sst2", "CE", T).n_runs == 0 for T in (0.3, 0.5, 0.7, 0.9))
    assert all(t8.cell(s8.label, task, "CE", T).n_runs == 5 for task in TABLE3_TASKS for T in temps)
    assert t8.layout.cols == temps and "replace" in s8.caption

    text = write_report(make_db(tmp_path / "r.db", df, predictions=False), tmp_path / "rep",
                        n_resamples=FAST, figures=False).read_text()
    claim = text[text.index(f"**{CLAIMS['noise_replace']}**"):].split("\n- **")[0]
    cost = claim[claim.index("What the noise cost CE"):].split(". ")[0]
    sst2 = cost[cost.index("SST-2") + len("SST-2 "):].split(";")[0]  # "T=0.9 -3.1, T=1.2 -5.8, ..."
    drops = [float(x.split(" ")[1]) for x in sst2.split(", ")]
    assert len(drops) == 3 and drops[2] < drops[0] < 0  # CE loses more at higher T
    assert "Main effect over the noisy T, seeds as units: Our data support it in" in claim
    assert "## Table 8" in text


def test_table_8_holds_no_clean_runs_without_replaced_noise_beside_them():
    """Clean N = 100 runs fill Table 8's 'original' column only where their setting has runs with
    replaced noise: otherwise the table would repeat Table 2's N = 100 cells as if it had run."""
    from harness.protocol import grids

    temps = (0.0,) + grids.HARSH_NOISES
    ce, scl = noise_scores(temps=temps, seeds=3, rng=9)
    replaced = noise_frame(ce, scl, temps=temps, mode="replace", tasks=("sst2",))
    other = synthetic_results([dict(task="qnli", n=100)], seeds=range(3), rng=10)  # clean QNLI only
    t = build_table(pd.concat([replaced, other], ignore_index=True), 8, n_resamples=FAST)
    (sec,) = t.sections
    assert t.cell(sec.label, "sst2", "CE", 0.0).n_runs == 3 and t.cell(sec.label, "qnli", "CE", 0.0).n_runs == 0
    assert build_table(other, 8, n_resamples=FAST).sections == []
