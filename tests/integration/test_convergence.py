"""Protocol v2's convergence study through the database: step-budget results are stored with their
budget, selected step and per-step validation rows, and `harness convergence` reads the budgets
back from a real SQLite file (the results stand in for training: known curves)."""

from __future__ import annotations

import sqlalchemy as sa
from typer.testing import CliRunner

from analysis.load import load_curves
from harness.cli import app
from harness.protocol import grids
from harness.store import db, queue
from harness.training.runner import RunResult

STEPS = range(25, 1001, 25)


def accuracy(spec, step: int) -> float:
    """A known curve: CE rises 0.1 a step-block until its plateau, which N = 20 reaches at step 100,
    N = 100 at 300 and N = 1000 at 700 (and the 6-layer model 100 steps later); CE+SCL plateaus at
    step 25 (it must not choose the budget)."""
    plateau = {20: 100, 100: 300, 1000: 700}[spec.n] + (100 if "L6" in spec.model else 0)
    if spec.loss == "ce+scl":
        plateau = 25
    return 0.9 - 0.1 * max(0, (plateau - step) // 25) / 10 + 0.001 * (spec.seed - 201)


def result(spec) -> RunResult:
    curve = [(s, accuracy(spec, s)) for s in STEPS]
    best_step, best = max(curve, key=lambda c: (c[1], -c[0]))
    metrics = [("validation", None, "accuracy", v, s) for s, v in curve]
    metrics += [("validation", None, "seconds", 0.5, s) for s, _ in curve]
    return RunResult(metric="accuracy", val_score=best, test_score=best, val_accuracy=best,
                     test_accuracy=best, best_epoch=1, n_train=spec.n, n_test=10, train_seconds=1.0,
                     metrics=metrics, best_step=best_step)


def test_the_study_stores_curves_and_the_command_reads_the_budgets(tmp_path):
    url = f"sqlite:///{tmp_path / 'results.db'}"
    engine = db.open_db(url, create=True)
    jobs = grids.expand(grids.get_grid("convergence"), tasks=["sst2", "mnli"])
    queue.enqueue(engine, "convergence", [s for s, _ in jobs])
    while (c := queue.claim(engine, "w")) is not None:
        queue.finish(engine, c, result(c.spec))
    with db.connect(engine) as conn:
        stored = conn.execute(sa.text("select count(*), min(steps), max(steps), min(best_step) "
                                      "from results")).one()
        steps = conn.execute(sa.text("select count(*) from metrics where step is not null")).scalar_one()
    assert tuple(stored) == (len(jobs), 1000, 1000, 25)  # CE+SCL's curve peaks at step 25
    assert steps == len(jobs) * len(STEPS) * 2
    curves = load_curves(engine, "convergence")
    assert len(curves) == len(jobs) * len(STEPS) and set(curves["n"]) == {20, 100, 1000}

    r = CliRunner().invoke(app, ["convergence", "--db", url, "--plot", str(tmp_path / "fig")])
    assert r.exit_code == 0, r.output
    # each N takes the slowest cell: the 6-layer model's plateau
    assert "N = 20: 200 steps, N = 100: 400 steps, N = 1000: 800 steps" in r.output
    assert (tmp_path / "fig" / "convergence.png").stat().st_size > 10_000
    # the report's protocol section: the rule, the budgets and the figure
    from analysis.report import _convergence

    section = "\n".join(_convergence(engine, tmp_path / "report" / "figures"))
    assert "within 0.5 points" in section and "N = 1000: 800 steps" in section
    assert "![convergence](figures/convergence.png)" in section


def test_without_a_study_the_command_says_how_to_run_one(tmp_path):
    url = f"sqlite:///{tmp_path / 'results.db'}"
    db.open_db(url, create=True)
    r = CliRunner().invoke(app, ["convergence", "--db", url])
    assert r.exit_code == 0 and "harness enqueue --grid convergence" in r.output


def test_the_study_runs_are_never_reported_in_the_tables(tmp_path):
    """The study trains SST-2, QNLI and MNLI at Table 2's N: its runs choose the protocol and must
    not be pooled with the runs the table reports."""
    from analysis import build_table, load_results

    engine = db.open_db(f"sqlite:///{tmp_path / 'results.db'}", create=True)
    jobs = grids.expand(grids.get_grid("convergence"), tasks=["sst2"], ns=[20])
    queue.enqueue(engine, "convergence", [s for s, _ in jobs])
    while (c := queue.claim(engine, "w")) is not None:
        queue.finish(engine, c, result(c.spec))
    from analysis import plot_variance, render
    from analysis.layouts import reported

    df = load_results(engine)
    assert len(df) == len(jobs) and not reported(df).any()
    assert plot_variance(df, tmp_path / "figures") == []  # no panel draws them
    assert "No results in the database for Table 2" in render(build_table(df, 2, db=engine), "markdown")
