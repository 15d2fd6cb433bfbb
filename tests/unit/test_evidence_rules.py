"""analysis.evidence on frames in memory: which runs the report's claims pool, rule by rule (the
report on databases: tests/integration/test_evidence.py)."""

import pandas as pd

from analysis.evidence import _span, pooled_text, split
from analysis.synthetic import MODEL, synthetic_results

TUNED = dict(lr=1e-4, warmup_ratio=0.1, lam=0.5, tau=0.7)
CELL = [dict(task="sst2", n=20)]


def test_settings_are_compared_with_the_choice_of_the_runs_model_and_task():
    tuning = pd.DataFrame([dict(grid="tune", task="sst2", model=MODEL, **TUNED),  # what fewshot takes
                           dict(grid="tune-v2", task="sst2", model=MODEL, **dict(TUNED, lr=9.0))])
    df = pd.concat([
        synthetic_results(CELL, seeds=range(2), rng=1, extra=TUNED),  # the campaign's
        synthetic_results(CELL, seeds=range(2), rng=2, losses=("ce+scl",), extra=dict(TUNED, tau=0.1)),
        synthetic_results(CELL, seeds=range(2), rng=3, losses=("ce",), extra=dict(TUNED, warmup_ratio=0.0)),
        synthetic_results(CELL, seeds=range(2), rng=4, model="other", extra=dict(TUNED, lr=1e-3)),  # no choice
        synthetic_results([dict(task="qnli", n=20)], seeds=range(2), rng=5),  # no choice for QNLI
    ], ignore_index=True)
    ev = split(df, tuning)
    assert len(ev.runs) == 12
    off = ev.left_out["setting"]
    assert len(off) == 4 and set(zip(off["loss"], off["tau"].fillna(0), off["warmup_ratio"])) == {
        ("ce+scl", 0.1, 0.1), ("ce", 0, 0.0)}
    # the tuned λ, τ of CE+SCL say nothing about a CE run (its λ is 0, its τ none)
    assert (ev.runs.loc[(ev.runs["model"] == MODEL) & (ev.runs["task"] == "sst2"), "loss"].value_counts() == 2).all()


def test_seeds_are_their_grids_own():
    df = pd.concat([synthetic_results(CELL, seeds=[0, 9, 10], rng=1),
                    synthetic_results([dict(task="sst2", n=None)], seeds=[2, 3], rng=2)], ignore_index=True)
    ev = split(df, None)
    assert sorted(zip(ev.runs["grid"], ev.runs["seed"])) == sorted(
        [("fewshot", 0)] * 2 + [("fewshot", 9)] * 2 + [("glue", 2)] * 2)
    assert ev.left_out_text() == ("Left out of every claim, table and figure: 4 runs on seeds beyond "
                                  "their grid's own — grid fewshot: 2 (seed 10), grid glue: 2 (seed 3).")


def test_ranges_of_seeds_read_as_ranges():
    assert _span([0, 1, 2, 3, 7]) == "0–3, 7" and _span([5]) == "5"
    assert pooled_text(synthetic_results(CELL, seeds=range(3), rng=1)) == "6 runs of grid fewshot (seeds 0–2)"


def test_a_v2_run_is_evidence_only_at_the_budget_the_study_chose_for_its_n(monkeypatch):
    from dataclasses import replace

    from analysis.convergence import render_previews
    from harness.protocol import grids

    v1 = synthetic_results(CELL, seeds=range(2), rng=1, losses=("ce",))
    v2 = pd.concat([synthetic_results(CELL, seeds=range(2), rng=2, losses=("ce",), grid="fewshot-v2",
                                      extra=dict(steps=s, eval_every=25)) for s in (75, 200)], ignore_index=True)
    df = pd.concat([v1, v2], ignore_index=True)
    ev = split(df, None)  # no budget recorded yet: every v2 run is a preview
    assert len(ev.runs) == 2 and set(ev.runs["grid"]) == {"fewshot"}
    assert len(ev.left_out["budget"]) == 4
    assert "4 runs at a step budget the convergence study has not chosen for their N" in ev.left_out_text()
    text = render_previews(ev.left_out["budget"], ev.runs)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "sst2" in line]
    assert len(rows) == 2 and "| 75 | 0–1 |" in rows[0] and "| 200 | 0–1 |" in rows[1]
    assert f"| {100 * v1['test_score'].mean():.1f} (2 runs) |" in rows[0] and rows[0].endswith("| 2 of 2 |")

    chosen = replace(grids.GRIDS["fewshot-v2"], step_budgets={20: 75})
    monkeypatch.setitem(grids.GRIDS, "fewshot-v2", chosen)
    ev = split(df, None)
    assert sorted(ev.runs.loc[ev.runs["grid"] == "fewshot-v2", "steps"]) == [75, 75]
    assert list(ev.left_out["budget"]["steps"]) == [200, 200]
    assert render_previews(ev.left_out["budget"].iloc[0:0], ev.runs) == ""


def test_transfer_v2_counts_its_stage_1_in_epochs_and_its_targets_at_the_next_studied_budget(monkeypatch):
    """A transfer grid under v2: the full-data stage 1 keeps epochs (no step budget applies to it),
    the 40-example targets count at the budget of N = 100, the smallest studied N above 40."""
    from analysis.synthetic import transfer_results
    from harness.protocol import grids

    monkeypatch.setitem(grids.V2_BUDGETS, 20, 75)
    monkeypatch.setitem(grids.V2_BUDGETS, 100, 110)
    df = transfer_results(seeds=range(2), tasks=("mr",))
    df["grid"] = "transfer-v2"
    targets = df["n"].notna()
    df["steps"] = pd.array([110 if t else pd.NA for t in targets], dtype="Int64")
    df.loc[df.index[targets][:1], "steps"] = 75  # N = 20's budget: not the targets'
    ev = split(df, None)
    assert len(ev.runs) == len(df) - 1 and ev.runs["n"].isna().sum() == 2  # both stage-1 runs count
    assert list(ev.left_out["budget"]["steps"]) == [75]
