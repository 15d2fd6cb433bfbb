"""Protocol v2's convergence study: the validation curves of long step-budget runs, and the step
budget each N needs (issue 21).

The rule: for each (model, task, N), CE's validation accuracy averaged over the study's seeds at
each evaluated step; its best over the long run; the budget is the first evaluated step whose mean
comes within TOLERANCE (0.5 points) of that best. Each N's budget is the largest over the models and
tasks, so that every cell of the few-shot table has converged by it. CE+SCL's curves are drawn
beside CE's but do not choose the budget: the budget must not favour the method under test.
"""

from __future__ import annotations

import pandas as pd

from analysis.load import load_curves

TOLERANCE = 0.005  # accuracy as a fraction: 0.5 points
STUDY_GRID = "convergence"


def mean_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread over seeds: one row per (model, task, n, loss, step) with columns mean, std
    and seeds (how many seeds reached that step)."""
    keys = ["model", "task", "n", "loss", "step"]
    g = curves.groupby(keys, dropna=False)["accuracy"]
    return g.agg(mean="mean", std="std", seeds="count").reset_index()


def budgets(curves: pd.DataFrame, tolerance: float = TOLERANCE) -> pd.DataFrame:
    """Per (model, task, n): CE's best mean validation accuracy, the step where it peaks, the
    budget (first step within `tolerance` of the best), the last step evaluated, and how many
    seeds. Empty (same columns) without CE curves."""
    columns = ["model", "task", "n", "best", "best_step", "budget", "last_step", "seeds"]
    if curves.empty:
        return pd.DataFrame(columns=columns)
    mean = mean_curves(curves[curves["loss"] == "ce"])
    rows = []
    for (model, task, n), c in mean.groupby(["model", "task", "n"], dropna=False, sort=True):
        c = c.sort_values("step")
        best = c["mean"].max()
        within = c[c["mean"] >= best - tolerance - 1e-12]
        rows.append(dict(model=model, task=task, n=n, best=best,
                         best_step=int(c.loc[c["mean"].idxmax(), "step"]),
                         budget=int(within["step"].iloc[0]), last_step=int(c["step"].max()),
                         seeds=int(c["seeds"].min())))
    return pd.DataFrame(rows, columns=columns)


def budget_per_n(table: pd.DataFrame) -> dict:
    """The budget of each N: the largest over its (model, task) cells. {n: steps}."""
    return {n: int(g["budget"].max()) for n, g in table.groupby("n", sort=True)}


def study(db, grid: str = STUDY_GRID, tolerance: float = TOLERANCE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, budgets) of the study's finished jobs in the database."""
    curves = load_curves(db, grid)
    return curves, budgets(curves, tolerance)


def render_budgets(table: pd.DataFrame, tolerance: float = TOLERANCE) -> str:
    """The budget table as markdown, with the rule and each N's budget."""
    if table.empty:
        return (f"No finished runs of the `{STUDY_GRID}` grid: run `harness enqueue --grid "
                f"{STUDY_GRID}` and `harness work --until-empty`, then this again.\n")
    lines = [f"Rule: the first evaluated step at which CE's validation accuracy, averaged over the "
             f"seeds, comes within {tolerance * 100:.1f} points of its best over the run; each N "
             f"takes the largest budget over models and tasks.", "",
             "| model | task | N | best val acc | at step | budget | steps run | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        edge = " (at the end: not converged)" if r.budget == r.last_step else ""
        lines.append(f"| {r.model.split('/')[-1]} | {r.task} | {r.n} | {r.best * 100:.1f} | "
                     f"{r.best_step} | {r.budget}{edge} | {r.last_step} | {r.seeds} |")
    lines.append("")
    lines.append("Budget per N: " + ", ".join(f"N = {n}: {b} steps" for n, b in budget_per_n(table).items()))
    return "\n".join(lines) + "\n"
