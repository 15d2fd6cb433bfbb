"""A second model in Table 2 (issue 12, P3): each model's claims and Holm's correction are its
own, and the report asks whether CE+SCL's gain differs between the models."""

import numpy as np
import pandas as pd
import pytest

from analysis import build_table, load_results, write_report
from analysis.model_size import compare_models, seed_gains
from analysis.synthetic import MODEL, grid, make_db, synthetic_results

FAST = 2000
BIG = "org/bigger-model"


def two_models(big_effect: float, rng: int = 0) -> pd.DataFrame:
    """MODEL with no gain on all of Table 2; BIG at N = 20, 100 only, with big_effect."""
    few = [c for c in grid(2) if c["n"] in (20, 100)]
    return pd.concat([synthetic_results(grid(2), effect=0.0, n_test=400, rng=12 + rng),
                      synthetic_results(few, effect=big_effect, n_test=400, rng=13 + rng, model=BIG)],
                     ignore_index=True)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    df = two_models(0.06)
    engine = make_db(tmp_path_factory.mktemp("db") / "two.db", df)
    return load_results(engine), engine


def test_holm_runs_over_each_models_cells_on_its_own(frames):
    df, _ = frames
    both = build_table(df, 2, n_resamples=FAST)
    alone = build_table(df, 2, model=MODEL, n_resamples=FAST)
    held = {(t.group, t.col): t.comparison for t in both.for_model(MODEL).tests}
    assert len(held) == 9 and len(both.for_model(BIG).tests) == 6
    for t in alone.tests:  # the second model changes none of the first one's verdicts
        assert held[(t.group, t.col)].p_holm == pytest.approx(t.comparison.p_holm)
        assert held[(t.group, t.col)].primary.p == pytest.approx(t.comparison.primary.p)
    big = both.for_model(BIG).tests  # Holm over the 6 of BIG's cells: at most 6 × its p
    assert all(t.comparison.p_holm <= min(1.0, 6 * t.comparison.primary.p) + 1e-12 for t in big)
    assert max(t.comparison.p_holm for t in big) < 0.05


def test_seed_gains_are_each_seeds_scl_minus_ce(frames):
    df, _ = frames
    t = build_table(df, 2, n_resamples=FAST)
    gains = seed_gains(t, df)
    assert len(gains) == 15  # 9 cells of MODEL, 6 of BIG
    cell = df[(df["model"] == BIG) & (df["task"] == "qnli") & (df["n"] == 100)]
    wide = cell.pivot_table(index="seed", columns="loss", values="test_accuracy")
    expect = (wide["ce+scl"] - wide["ce"]).to_numpy() * 100
    assert np.sort(gains[(BIG, 100, "qnli")]) == pytest.approx(np.sort(expect))


def test_a_real_difference_in_gain_is_found_and_none_where_there_is_none(frames):
    df, _ = frames
    comps = compare_models(build_table(df, 2, n_resamples=FAST), df)
    assert [(c.group, c.col) for c in comps] == [(20, "sst2"), (20, "qnli"), (20, "mnli"),
                                                 (100, "sst2"), (100, "qnli"), (100, "mnli")]
    assert all(c.reference == MODEL and c.model == BIG and c.diff > 2 and c.p_holm < 0.05 for c in comps)
    same = two_models(0.0, rng=5)
    same_comps = compare_models(build_table(same, 2, n_resamples=FAST), same)
    assert len(same_comps) == 6 and all(c.p_holm >= 0.05 for c in same_comps)


def test_report_gives_each_model_its_own_verdicts(frames, tmp_path):
    _, engine = frames
    text = write_report(engine, tmp_path, n_resamples=FAST, figures=False).read_text()
    claims = text[text.index("## Claims"):text.index("## Does the gain depend")]
    assert f"  - `{BIG}`: Our data support it in 6 of 6 cells" in claims
    assert f"  - `{MODEL}`: Our data support it in 0 of 6 cells" in claims
    assert f"  - No runs for it with `{BIG}`." in claims  # no N = 1000 for the shrink claim
    section = text[text.index("## Does the gain depend"):text.index("## Hyper")]
    assert "The gain differs significantly in 6 of 6 cells." in section
    assert section.count(f"| `{BIG.rsplit('/', 1)[-1]}` |") == 6


def test_one_model_reports_nothing_to_compare(tmp_path):
    df = synthetic_results([dict(task="sst2", n=20)], seeds=range(3), rng=1)
    text = write_report(make_db(tmp_path / "one.db", df), tmp_path / "rep", n_resamples=FAST,
                        figures=False).read_text()
    assert f"Table 2 has runs of one model only (`{MODEL}`): nothing to compare yet." in text
    assert "  - `" not in text[text.index("## Claims"):text.index("## Does")]  # one model: no per-model list


def test_models_are_compared_within_each_protocol(monkeypatch):
    """v1's and v2's runs of a model are different trainings: each protocol compares its models
    on its own, so a model with runs under both keeps every cell (none dropped as ambiguous)."""
    from analysis.model_size import render_model_size
    from harness.protocol import grids

    monkeypatch.setitem(grids.V2_BUDGETS, 20, 75)
    monkeypatch.setitem(grids.V2_BUDGETS, 100, 100)
    monkeypatch.setitem(grids.V2_BUDGETS, 1000, 325)
    v1 = two_models(0.06)
    v2 = two_models(0.0, rng=7)
    v2["steps"] = pd.array([75 if n == 20 else 100 if n == 100 else 325 for n in v2["n"]], dtype="Int64")
    v2["job_id"] = v2["job_id"] + "-v2"
    df = pd.concat([v1, v2], ignore_index=True)
    table = build_table(df, 2, n_resamples=FAST)
    text = render_model_size(table, df)
    v1_part, v2_part = text.split("**Protocol v2 (step budgets).**")
    assert v1_part.startswith("**Protocol v1 (epochs).**")
    assert "The gain differs significantly in 6 of 6 cells." in v1_part  # BIG's planted gain, v1 only
    assert "The gain differs significantly in 0 of 6 cells." in v2_part
    assert v1_part.count("| `bigger-model` |") == 6 and v2_part.count("| `bigger-model` |") == 6
