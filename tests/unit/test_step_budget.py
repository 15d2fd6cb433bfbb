"""Protocol v2's budget in optimizer steps: the spec fields, the step plan, the study's grid and
the rule that chooses each N's budget from validation curves. No model, no data."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.convergence import budget_per_n, budgets, render_budgets
from harness.errors import HarnessError
from harness.protocol import grids
from harness.protocol.spec import JobSpec
from harness.training.finetune import StepPlan


def make(**kw) -> JobSpec:
    return JobSpec.make(**(dict(task="sst2", n=20, seed=0) | kw))


def test_epoch_specs_keep_their_ids_and_a_step_budget_is_a_new_spec():
    old = make()
    assert "steps" not in old.to_json() and "eval_every" not in old.to_json()
    v2 = make(steps=300, eval_every=25)
    assert v2.job_id != old.job_id and v2.steps == 300 and v2.eval_every == 25


def test_a_step_budget_ignores_epochs_so_equal_experiments_hash_equal():
    assert make(steps=300, eval_every=25, epochs=7).job_id == make(steps=300, eval_every=25).job_id
    # without an interval, the job validates after its last step only
    assert make(steps=300).eval_every == 300


@pytest.mark.parametrize("fields, says", [
    (dict(steps=0), "--steps must be a positive"),
    (dict(steps=-5), "--steps must be a positive"),
    (dict(steps=100, eval_every=0), "--eval-every must be a positive"),
    (dict(eval_every=10), "--eval-every needs a budget in steps"),
    (dict(steps=100, eval_every=101), "more than the budget"),
])
def test_bad_budgets_are_refused_in_one_line(fields, says):
    with pytest.raises(HarnessError, match=says):
        make(**fields)


def test_the_epoch_plan_is_unchanged():
    plan = StepPlan.of(JobSpec.make(task="sst2", n=20, seed=0, epochs=10, warmup_ratio=0.1), 20)
    assert (plan.steps_per_epoch, plan.total_steps, plan.warmup_steps, plan.epochs) == (2, 20, 2, 10)
    assert plan.validates_after_epoch and not plan.validates_after_step(2)
    assert plan.validation_steps() == list(range(2, 21, 2))


def test_a_step_plan_validates_every_k_steps_and_after_the_last():
    plan = StepPlan.of(make(steps=70, eval_every=25, warmup_ratio=0.1), 20)  # 2 steps per pass
    assert (plan.steps_per_epoch, plan.total_steps, plan.warmup_steps, plan.epochs) == (2, 70, 7, 35)
    assert plan.validation_steps() == [25, 50, 70]
    assert [s for s in range(1, 71) if plan.validates_after_step(s)] == [25, 50, 70]
    assert not plan.validates_after_epoch
    # a budget that ends inside a pass over the data: 7 steps of 3 per pass take 3 passes
    assert StepPlan.of(make(steps=7, eval_every=3, batch_size=8), 24).epochs == 3


def test_the_convergence_grid_crosses_both_models_and_refuses_epochs():
    g = grids.get_grid("convergence")
    jobs = grids.expand(g)
    assert len(jobs) == 3 * 3 * 2 * 2 * 3  # tasks × N × models × losses × seeds
    assert {s.model for s, _ in jobs} == set(grids.STUDY_MODELS)
    assert {s.steps for s, _ in jobs} == {grids.STUDY_STEPS}
    assert {s.seed for s, _ in jobs}.isdisjoint(range(10)) and {s.seed for s, _ in jobs}.isdisjoint(grids.TUNE_SEEDS)
    assert {s.model for s, _ in grids.expand(g, model=grids.SMALL_MODEL)} == {grids.SMALL_MODEL}
    with pytest.raises(HarnessError, match="set --steps, not --epochs"):
        grids.expand(g, epochs=5)


def _curves(points: dict) -> pd.DataFrame:
    """{(model, task, n, loss): {seed: [(step, accuracy), ...]}} -> load_curves' frame."""
    rows = [dict(job_id=f"{k}{seed}", grid="convergence", model=k[0], task=k[1], n=k[2], loss=k[3],
                 seed=seed, lam=0.0, tau=None, lr=1e-4, step=step, accuracy=acc)
            for k, seeds in points.items() for seed, curve in seeds.items() for step, acc in curve]
    return pd.DataFrame(rows)


def test_the_budget_is_the_first_step_within_half_a_point_of_ces_best_mean():
    curves = _curves({
        # mean over the two seeds: 0.60, 0.700, 0.7075, 0.710 -> best 0.710; within 0.5 points: 0.7075 (step 75)
        ("m", "sst2", 20, "ce"): {0: [(25, 0.60), (50, 0.70), (75, 0.705), (100, 0.71)],
                                  1: [(25, 0.60), (50, 0.70), (75, 0.710), (100, 0.71)]},
        # CE+SCL peaks early, but does not choose the budget
        ("m", "sst2", 20, "ce+scl"): {0: [(25, 0.80), (50, 0.80), (75, 0.80), (100, 0.80)]},
        # peaks at the start and falls: budget = the first step
        ("m", "mnli", 20, "ce"): {0: [(25, 0.50), (50, 0.45), (75, 0.40), (100, 0.40)]},
        ("m", "sst2", 100, "ce"): {0: [(25, 0.5), (50, 0.6), (75, 0.7), (100, 0.8)]},
    })
    table = budgets(curves)
    got = {(r.task, r.n): (r.budget, r.best_step, r.seeds) for r in table.itertuples()}
    assert got == {("sst2", 20): (75, 100, 2), ("mnli", 20): (25, 25, 1), ("sst2", 100): (100, 100, 1)}
    assert budget_per_n(table) == {20: 75, 100: 100}
    text = render_budgets(table)
    assert "N = 20: 75 steps" in text and "100 (at the end: not converged)" in text


def test_an_incomplete_study_names_its_missing_cells_and_calls_its_budgets_provisional():
    curves = _curves({("m", "sst2", 20, "ce"): {0: [(25, 0.60), (50, 0.70)], 1: [(25, 0.62), (50, 0.70)]},
                      ("m", "qnli", 20, "ce"): {0: [(25, 0.55), (50, 0.56)]}})
    table = budgets(curves)
    cells = [("m", "sst2", 20), ("m", "qnli", 20), ("m", "mnli", 20)]
    text = render_budgets(table, expected=cells, seeds=2)
    assert "Provisional budget per N" in text and "2 of 3 cells have CE runs, 1 of them fewer than 2 seeds" in text
    assert "Not run yet: m mnli N = 20." in text
    done = render_budgets(table, expected=cells[:1], seeds=2)
    assert "Provisional" not in done and "incomplete" not in done and "Budget per N: N = 20: 50 steps" in done


def test_the_study_design_is_the_grids_cells_and_seeds():
    from analysis.convergence import design

    planned = design()
    assert planned["seeds"] == len(grids.STUDY_SEEDS) and len(planned["expected"]) == 2 * 3 * 3
    assert planned["expected"][0] == (grids.SMALL_MODEL, "sst2", 20)


def test_a_looser_tolerance_never_asks_for_more_steps():
    curves = _curves({("m", "sst2", 20, "ce"): {0: [(25, 0.60), (50, 0.69), (75, 0.70), (100, 0.71)]}})
    assert budgets(curves, 0.005).budget.item() == 100
    assert budgets(curves, 0.02).budget.item() == 50


def test_no_study_says_how_to_run_it():
    assert "harness enqueue --grid convergence" in render_budgets(budgets(_curves({})))


def test_edges_of_the_tuning_grid_are_named():
    from types import SimpleNamespace

    from analysis.tuning import edges

    cands = [dict(loss="ce", lr=lr, lam=0.0, tau=None) for lr in (3e-5, 1e-4, 3e-4)]
    cands += [dict(loss="ce+scl", lr=1e-4, lam=lam, tau=tau) for lam in (0.1, 0.5, 0.9) for tau in (0.05, 0.3)]
    cands += [dict(loss="ce+scl", lr=3e-4, lam=0.99, tau=0.01)]  # another lr: not in λ, τ's grid
    inside = SimpleNamespace(candidates=cands, lr=1e-4, lam=0.5, tau=0.3)
    assert edges(inside) == ["τ 0.3 (largest of 2)"]
    low = SimpleNamespace(candidates=cands, lr=3e-5, lam=0.9, tau=0.05)
    # at lr 3e-5 no CE+SCL setting was tried: λ and τ have no grid there
    assert edges(low) == ["lr 3e-05 (smallest of 3)"]
    high = SimpleNamespace(candidates=cands, lr=1e-4, lam=0.9, tau=0.05)
    assert edges(high) == ["λ 0.9 (largest of 3)", "τ 0.05 (smallest of 2)"]
