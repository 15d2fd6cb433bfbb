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

from analysis.evidence import _span
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


def design(grid: str = STUDY_GRID) -> dict:
    """What the study's grid runs: its (model, task, N) cells in the grid's order and the seeds per
    cell, as render_budgets' `expected` and `seeds`."""
    from harness.protocol import grids

    g = grids.get_grid(grid)
    cells = [(spec.model, spec.task, spec.n) for spec, _ in grids.expand(g)]
    return dict(expected=list(dict.fromkeys(cells)), seeds=len(g.seeds))


def study(db, grid: str = STUDY_GRID, tolerance: float = TOLERANCE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, budgets) of the study's finished jobs in the database."""
    curves = load_curves(db, grid)
    return curves, budgets(curves, tolerance)


def render_budgets(table: pd.DataFrame, tolerance: float = TOLERANCE,
                   expected: list[tuple[str, str, int]] | None = None, seeds: int | None = None) -> str:
    """The budget table as markdown, with the rule and each N's budget; with `expected` (the
    study's cells) and `seeds` (its seeds per cell), the cells still missing or short of seeds,
    and the budgets marked provisional while any are."""
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
    have = {(r.model, r.task, r.n): r.seeds for r in table.itertuples()}
    missing = [c for c in expected or () if c not in have]
    short = [c for c in expected or () if c in have and seeds is not None and have[c] < seeds]
    provisional = bool(missing or short)
    lines.append(("Provisional budget per N (from the cells run so far): " if provisional else "Budget per N: ")
                 + ", ".join(f"N = {n}: {b} steps" for n, b in budget_per_n(table).items()))
    if provisional:
        cell = lambda c: f"{c[0].split('/')[-1]} {c[1]} N = {c[2]}"  # noqa: E731
        lines.append("")
        lines.append(f"The study is incomplete: {len(expected) - len(missing)} of {len(expected)} cells "
                     f"have CE runs" + (f", {len(short)} of them fewer than {seeds} seeds" if short else "")
                     + ". Each N's budget is the largest over its cells, so a cell still to run can "
                     "only raise it.")
        if missing:
            lines.append("Not run yet: " + "; ".join(map(cell, missing)) + ".")
    return "\n".join(lines) + "\n"


def render_previews(previews: pd.DataFrame, evidence: pd.DataFrame) -> str:
    """Protocol-v2 runs made before the study recorded its budgets (evidence's `budget` rule left
    them out): per model, task, N, loss and budget, the test accuracy over seeds, the same seeds'
    v1 runs beside it, and how often the selected step was the last one evaluated. '' if none."""
    if previews.empty:
        return ""
    v1 = evidence[evidence["grid"] == "fewshot"]
    lines = ["**Protocol v2 previews** — runs of a v2 grid at budgets the study has not recorded yet; "
             "shown here, judged nowhere:", "",
             "| model | task | N | loss | steps | seeds | test acc, mean ± sd | v1 (10 epochs), same seeds "
             "| selected at the last step |", "|---|---|---|---|---|---|---|---|---|"]
    keys = ["model", "task", "n", "loss", "steps"]
    for (model, task, n, loss, steps), g in previews.groupby(keys, sort=True):
        same = v1[(v1["model"] == model) & (v1["task"] == task) & (v1["n"] == n) & (v1["loss"] == loss)
                  & v1["seed"].isin(g["seed"])]
        old = (f"{100 * same['test_score'].mean():.1f} ({len(same)} runs)" if len(same) else "none")
        last = (g["best_step"] == g["steps"]).sum()
        sd = 100 * g["test_score"].std() if len(g) > 1 else float("nan")
        seeds = _span(sorted(int(x) for x in set(g["seed"])))
        lines.append(f"| {model.split('/')[-1]} | {task} | {n} | {loss} | {steps} | {seeds} | "
                     f"{100 * g['test_score'].mean():.1f} ± {sd:.1f} | {old} | {last} of {len(g)} |")
    return "\n".join(lines) + "\n"

