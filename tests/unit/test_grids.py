"""Grid expansion options that reshape a design (the pinned ids of every grid: test_spec_ids.py)."""

from __future__ import annotations

import pytest

from harness.protocol import grids
from harness.protocol.spec import SMALL_MODEL as SMALL


def test_the_transfer_grid_takes_a_smaller_stage_1():
    jobs = grids.expand(grids.get_grid("transfer"), tasks=["cr"], seeds=[0], stage1_n=500, stage1_epochs=2)
    s1 = [s for s, dep in jobs if s.task == "sst2"]
    assert {(s.n, s.epochs) for s in s1} == {(500, 2)}
    ids = {s.job_id for s in s1}
    assert all(dep in ids for s, dep in jobs if s.init_from) and all(s.init_from == dep for s, dep in jobs if dep)
    with pytest.raises(Exception, match="transfer grids only"):
        grids.expand(grids.get_grid("glue"), stage1_n=500)


def test_a_v2_budget_for_an_n_the_study_did_not_run_is_the_next_larger_ones():
    budgets = {20: 75, 100: 100, 1000: 325}
    assert [grids.budget_for(budgets, n) for n in (20, 21, 40, 100, 101, 1000)] == [75, 100, 100, 100, 325, 325]
    assert grids.budget_for(budgets, 1001) is None and grids.budget_for(budgets, None) is None
    assert grids.budget_for(budgets, float("nan")) is None and grids.budget_for({}, 20) is None


def test_transfer_v2_trains_stage_1_in_epochs_and_stage_2_at_a_v2_budget(monkeypatch):
    """Stage 1 (full SST-2) keeps epochs, so it is v1's stage 1 when the settings agree (same job,
    trained once); the 40-example targets train for N = 100's budget, validated every 25 steps."""
    monkeypatch.setitem(grids.V2_BUDGETS, 20, 75)
    monkeypatch.setitem(grids.V2_BUDGETS, 100, 110)
    jobs = grids.expand(grids.get_grid("transfer-v2"), model=SMALL, stage1_epochs=2, seeds=(0,),
                        tasks=("mr",))
    stage1 = [s for s, dep in jobs if s.n is None]
    stage2 = [(s, dep) for s, dep in jobs if s.n is not None]
    assert [(s.task, s.steps, s.eval_every, s.epochs) for s in stage1] == [("sst2", None, None, 2)] * 2
    assert {(s.task, s.n, s.per_class, s.steps, s.eval_every) for s, _ in stage2} == {("mr", 40, 20, 110, 25)}
    assert sorted(dep is None for _, dep in stage2) == [False, False, True]  # CE, CE+SCL from stage 1; baseline
    v1 = grids.expand(grids.get_grid("transfer"), model=SMALL, stage1_epochs=2, seeds=(0,), tasks=("mr",),
                      lr=1e-4, warmup_ratio=0.1, lam=0.9, tau=0.3)
    assert {s.job_id for s in stage1} == {s.job_id for s, _ in v1 if s.n is None}
    assert grids.tuning_task("transfer-v2", "mr") == "sst2" and grids.tuning_task("fewshot-v2", "mr") == "mr"
