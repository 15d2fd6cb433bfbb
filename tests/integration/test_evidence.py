"""The report's claims pool the campaign's own runs only (analysis/evidence.py): a smoke run, extra
seeds or a grid run again by hand at other settings beside the campaign never move a verdict, a
number of a table or a figure; the report says what each claim pooled and what it left out."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import sqlalchemy as sa

import analysis.report
from analysis import build_table, load_results, write_report
from analysis.evidence import split
from analysis.load import load_tuning
from analysis.synthetic import MODEL, grid, make_db, synthetic_results
from harness.store import db as hdb

FAST = 500  # resamples
TUNED = dict(lr=1e-4, warmup_ratio=0.1, lam=0.5, tau=0.7)  # what `tune select` chose, every task


def campaign() -> pd.DataFrame:
    """Table 2 as `enqueue --grid fewshot --tuned` runs it: 10 seeds, the tuned settings, a gain."""
    return synthetic_results(grid(2), effect=0.03, n_test=300, rng=21, extra=TUNED)


def others() -> pd.DataFrame:
    """What else a database may hold, each a loss for CE+SCL big enough to move a verdict: the
    smoke demo, seeds 10-13 beyond the grid's own, and the grid run by hand at another lr."""
    cell = [dict(task="sst2", n=20)]
    return pd.concat([
        synthetic_results(cell, seeds=range(4), effect=-0.15, rng=31, grid="smoke",
                          extra=dict(lr=3e-4, warmup_ratio=0.1, epochs=6, lam=0.9, tau=0.3)),
        synthetic_results(cell, seeds=range(10, 14), effect=-0.15, rng=32, extra=TUNED),
        synthetic_results(cell, effect=-0.15, rng=33, extra=dict(TUNED, lr=1e-3)),
    ], ignore_index=True)


def store_choices(engine) -> None:
    ce = dict(loss="ce", lr=TUNED["lr"], lam=0.0, tau=None, mean=0.7, scores={"100": 0.7}, job_ids=[])
    scl = dict(ce, loss="ce+scl", lam=TUNED["lam"], tau=TUNED["tau"])
    with engine.begin() as conn:
        for task in ("sst2", "qnli", "mnli"):
            conn.execute(sa.insert(hdb.tuning_choices).values(
                task=task, model=MODEL, metric="accuracy", ce_val_score=0.7, scl_val_score=0.7, n=100,
                seeds="[100, 101]", rule="test", candidates=json.dumps([ce, scl]), base="{}",
                **TUNED))


@pytest.fixture(scope="module")
def dbs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evidence")
    alone = make_db(tmp / "campaign.db", campaign())
    store_choices(alone)
    mixed = make_db(tmp / "mixed.db", pd.concat([campaign(), others()], ignore_index=True))
    store_choices(mixed)
    return alone, mixed


def sections(md: str) -> dict[str, str]:
    """The report by '## ' section, the one line that names the database and its counts left out."""
    parts = re.split(r"\n(?=## )", md)
    return {p.split("\n", 1)[0]: re.sub(r"Generated .*\n", "", p) for p in parts}


def test_other_runs_would_move_the_verdict_if_pooled(dbs):
    """The check below means something: pooled with the campaign, the extra runs change Table 2's
    SST-2 N = 20 cell (its runs and its test) and add sections to the Holm family."""
    _, mixed = dbs
    df = load_results(mixed)
    everything, evidence = build_table(df, 2, n_resamples=FAST), build_table(
        split(df, load_tuning(mixed)).runs, 2, n_resamples=FAST)
    assert len(everything.tests) > len(evidence.tests) == 9
    assert len(everything.sections) == 3 and len(evidence.sections) == 1


def test_claims_tables_and_figures_are_the_campaigns_whatever_else_the_database_holds(dbs, tmp_path, monkeypatch):
    alone, mixed = dbs
    drawn = []
    real = analysis.report.plot_variance
    monkeypatch.setattr(analysis.report, "plot_variance", lambda df, out: drawn.append(df) or real(df, out))
    reports = [sections(write_report(e, tmp_path / name, n_resamples=FAST).read_text())
               for e, name in ((alone, "alone"), (mixed, "mixed"))]
    assert list(reports[0]) == list(reports[1])
    for head in reports[0]:
        if head.startswith("# ") or head.startswith("## Appendix"):  # the introduction: the counts
            continue  # differ, and it says why; the appendix: what the whole database cost
        assert reports[0][head] == reports[1][head], head
    assert reports[1]["## Appendix: what each grid cost"].endswith("No attempt has ended yet.\n")
    claims = reports[1]["## Claims of the paper"]
    assert "Our data support it in" in claims and "*Pooled: 120 runs of grid fewshot (seeds 0–9).*" in claims
    # the variance figure drew the campaign's 10 runs per cell, not 14 or 24
    assert [len(d) for d in drawn] == [180, 180]
    assert (drawn[1].groupby(["task", "n", "loss"]).size() == 10).all()


def test_the_report_says_what_it_left_out(dbs, tmp_path):
    _, mixed = dbs
    intro = write_report(mixed, tmp_path, n_resamples=FAST, figures=False).read_text().split("## ")[0]
    assert "216 finished jobs, 180 of them the campaign's evidence" in intro
    assert ("Left out of every claim, table and figure: 8 runs of grids that run none of the paper's "
            "experiments — grid smoke: 8 (a sanity run of the harness); 8 runs on seeds beyond their "
            "grid's own — grid fewshot: 8 (seeds 10–13); 20 runs at settings other than the stored "
            "tuning choice — grid fewshot: 20 (seeds 0–9).") in intro


def test_without_a_tuning_choice_every_setting_of_the_paper_grids_counts(tmp_path):
    """Rule 3 needs a stored choice to compare with: a user's own model, run at the grid's
    settings without tuning, is evidence; the smoke grid never is."""
    df = pd.concat([synthetic_results([dict(task="sst2", n=20)], rng=1, model="my-model"),
                    synthetic_results([dict(task="sst2", n=20)], seeds=range(4), rng=2, grid="smoke")],
                   ignore_index=True)
    ev = split(df, None)
    assert len(ev.runs) == 20 and set(ev.runs["grid"]) == {"fewshot"}
    assert len(ev.left_out["grid"]) == 8 and ev.left_out["seed"].empty and ev.left_out["setting"].empty
