"""analysis.selection: the top 3 with ties averaged over (by hand, and against a brute force over
every seed order), its invariance to the order of runs, and the cut-short rule."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from analysis import selection
from analysis.selection import aggregate, selected_last


def brute_force(val, test, k=3):
    """The figure every seed order gives, averaged over all orders: sort by validation (stably, so
    the order decides ties), keep the first k. Each order is equally likely, so each choice of
    tied runs is; float64 loops, nothing shared with the code under test."""
    means, stds = [], []
    for order in itertools.permutations(range(len(val))):
        kept = sorted(order, key=lambda i: -val[i])[:k]
        x = [test[i] for i in kept]
        m = sum(x) / len(x)
        means.append(m)
        stds.append(math.sqrt(sum((v - m) ** 2 for v in x) / (len(x) - 1)))
    return sum(means) / len(means), sum(stds) / len(stds)


def test_no_tie_is_the_plain_top3():
    val, test = [0.5, 0.9, 0.7, 0.8, 0.6], [50.0, 90.0, 70.0, 80.0, 60.0]
    a = aggregate([(np.array(val), np.array(test))], 3)
    assert (a.mean, a.n_used, a.tie_decided) == (pytest.approx(80.0), 3, False)
    assert a.std == pytest.approx(10.0)


def test_a_tie_for_the_last_slot_by_hand():
    # 0.9 and 0.8 are in; 0.7 twice for one slot: {90, 80, 70} or {90, 80, 60}, equally likely
    a = aggregate([(np.array([0.9, 0.8, 0.7, 0.7, 0.1]), np.array([90.0, 80.0, 70.0, 60.0, 99.0]))], 3)
    assert a.mean == pytest.approx((90 + 80 + 65) / 3)
    assert a.std == pytest.approx((10.0 + math.sqrt(((90 - 230 / 3) ** 2 + (80 - 230 / 3) ** 2
                                                     + (60 - 230 / 3) ** 2) / 2)) / 2)
    assert (a.n_used, a.tied, a.slots, a.tie_decided) == (3, 2, 1, True)


def test_ties_that_all_fit_decide_nothing():
    for val in ([0.9, 0.8, 0.8], [0.9, 0.8, 0.8, 0.7], [0.9, 0.9, 0.9, 0.1]):
        test = np.arange(len(val), dtype=float)
        a = aggregate([(np.array(val), test)], 3)
        assert not a.tie_decided and a.n_used == 3
        assert a.mean == pytest.approx(test[:3].mean()) and a.std == pytest.approx(test[:3].std(ddof=1))


@pytest.mark.parametrize("draw", range(30))
def test_matches_every_seed_order_averaged(draw):
    rng = np.random.default_rng(draw)
    n = int(rng.integers(3, 8))
    val = rng.choice([0.5, 0.6, 0.7], n).tolist()  # few distinct scores: ties everywhere
    test = rng.normal(70, 8, n).round(1).tolist()
    a = aggregate([(np.array(val), np.array(test))], 3)
    mean, std = brute_force(val, test)
    assert a.mean == pytest.approx(mean, rel=1e-12) and a.std == pytest.approx(std, rel=1e-12)


def test_pooled_columns_average_over_each_columns_ties():
    g1 = (np.array([0.9, 0.5, 0.5]), np.array([80.0, 60.0, 40.0]))  # two tied for one slot at k=2
    g2 = (np.array([0.7, 0.6]), np.array([75.0, 65.0]))
    a = aggregate([g1, g2], 2)
    choices = [[80.0, 60.0, 75.0, 65.0], [80.0, 40.0, 75.0, 65.0]]
    assert a.mean == pytest.approx(np.mean(choices))
    assert a.std == pytest.approx(np.mean([np.std(c, ddof=1) for c in choices]))
    assert (a.n_used, a.tied, a.slots) == (4, 2, 1)


def test_permuting_runs_never_changes_the_figure():
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(1, 11))
        val, test = rng.choice([0.55, 0.6, 0.65], n), rng.normal(70, 8, n)
        ref = aggregate([(val, test)], 3)
        for order in (np.arange(n)[::-1], rng.permutation(n)):
            got = aggregate([(val[order], test[order])], 3)
            assert (got.mean, got.std, got.n_used, got.tied) == (ref.mean, ref.std, ref.n_used, ref.tied)


def test_many_choices_are_sampled_reproducibly(monkeypatch):
    groups = [(np.full(6, 0.5), np.arange(6.0) * s) for s in (1.0, 2.0, 3.0)]  # 20 choices each
    exact = aggregate(groups, 3)
    monkeypatch.setattr(selection, "MAX_CHOICES", 2_000)  # 8,000 exact choices: sampled now
    sampled = aggregate(groups, 3)
    assert sampled.mean == exact.mean  # the mean needs no enumeration
    assert sampled.std == pytest.approx(exact.std, rel=0.02) and sampled.std != exact.std
    assert aggregate(groups, 3).std == sampled.std


def test_missing_validation_ranks_last_and_mean_uses_every_run():
    val, test = np.array([np.nan, 0.9, 0.8, 0.7]), np.array([99.0, 90.0, 80.0, 70.0])
    assert aggregate([(val, test)], 3).mean == pytest.approx(80.0)
    assert aggregate([(val, test)], None).mean == pytest.approx(84.75)
    assert aggregate([(val, test)], None).n_used == 4
    assert aggregate([], 3).mean is None and aggregate([(val[:1], test[:1])], 3).std is None


def test_selected_last_epoch_and_step_budgets():
    df = pd.DataFrame({"best_epoch": [10, 7, 10, 3, None], "epochs": [10, 10, 10, 10, 10],
                       "steps": pd.array([None, None, 200, 200, None], dtype="Int64"),
                       "best_step": pd.array([None, None, 120, 200, None], dtype="Int64")})
    # a step budget reads best_step == steps, whatever best_epoch says
    assert selected_last(df).tolist() == [True, False, False, True, pd.NA]
    # before the best_step column exists, step-budget runs are unknown, epoch-budget ones are not
    assert selected_last(df.drop(columns="best_step")).tolist() == [True, False, pd.NA, pd.NA, pd.NA]
    assert selected_last(df.drop(columns=["steps", "best_step"])).tolist() == [True, False, True, False, pd.NA]


def test_cut_short_is_more_than_a_third():
    assert selection.cut_short(2, 5) and selection.cut_short(4, 10) and selection.cut_short(1, 1)
    assert not selection.cut_short(1, 3) and not selection.cut_short(3, 10)
    assert not selection.cut_short(0, 0)
