"""Which runs are evidence for the paper's claims: the campaign's own grids and settings only.

A database holds more than a campaign: the smoke grid's sanity run, the tuning runs, a grid run
again with settings of one's own, extra seeds. None of them may move a verdict, so the report
judges every claim, and draws every table and figure, from the runs that pass three rules, kept
here and nowhere else:

1. grid: one of the paper's experiments (EVIDENCE_GRIDS: every grid but the studies that choose
   the protocol, `layouts.STUDY_GRIDS`, whose test scores are never reported, and `smoke`, a
   sanity run);
2. seed: one of its grid's own seeds (0–9; glue and batch 0–2), so extra seeds change nothing;
3. budget: a run of a protocol-v2 grid trained for the step budget the convergence study chose
   for its N (`grids.V2_BUDGETS`, through `grids.budget_for`: an N between the studied ones takes
   the next larger one's; full-data runs keep epochs); until the study has recorded one, v2 runs
   are previews, shown in the report's protocol-v2 section and judged nowhere;
4. settings: a run of a tuned grid (`grids.TUNED_GRIDS`) whose model has a choice stored by that
   grid's tuning grid for its task (transfer: SST-2's) carries that choice's lr, warm-up ratio
   and, for CE+SCL, λ and τ: it is what `enqueue --tuned` made, not a variant by hand.

`split(df, tuning)` gives the evidence and what it left out, by rule; the report says both.
`harness report --table N` shows every run, each setting in its own section.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.layouts import STUDY_GRIDS
from harness.protocol import grids
from harness.protocol.paper import LOSS_LABELS, TASK_LABELS

RULES = {  # why a run is left out, as the report words it
    "grid": "of grids that run none of the paper's experiments",
    "seed": "on seeds beyond their grid's own",
    "budget": "at a step budget the convergence study has not chosen for their N (protocol v2 previews)",
    "setting": "at settings other than the stored tuning choice",
}
DEMO_GRID = grids.DEMO_GRID
EVIDENCE_GRIDS = tuple(g for g in grids.GRIDS if g not in STUDY_GRIDS and g != DEMO_GRID)
WHY_GRID = {DEMO_GRID: "a sanity run of the harness", **{g: "a study that chose the protocol, shown in its own section"
                                                        for g in STUDY_GRIDS}}


@dataclass
class Evidence:
    runs: pd.DataFrame  # what the claims, tables and figures of the report pool
    left_out: dict[str, pd.DataFrame]  # rule -> the runs it left out (each run under its first rule)

    def left_out_text(self) -> str:
        """One sentence: what was left out, by rule; '' when nothing was."""
        parts = []
        for rule, runs in self.left_out.items():
            if runs.empty:
                continue
            if rule == "grid":
                what = ", ".join(f"grid {g}: {k}" + (f" ({WHY_GRID[g]})" if g in WHY_GRID else "")
                                 for g, k in runs["grid"].value_counts().items())
            else:
                what = ", ".join(f"grid {grid}: {len(g)} ({_seeds(g)})" for grid, g in runs.groupby("grid"))
            parts.append(f"{len(runs)} {'run' if len(runs) == 1 else 'runs'} {RULES[rule]} — {what}")
        return ("Left out of every claim, table and figure: " + "; ".join(parts) + ".") if parts else ""


def split(df: pd.DataFrame, tuning: pd.DataFrame | None = None) -> Evidence:
    """The runs of `df` (from `load_results`) that are evidence, and the rest by rule.

    tuning: the stored choices (`load.load_tuning`); None or empty: rule 3 keeps every setting.
    """
    own_grid = df["grid"].isin(EVIDENCE_GRIDS)
    own_seed = pd.Series([g in grids.GRIDS and s in grids.GRIDS[g].seeds
                          for g, s in zip(df["grid"], df["seed"])], index=df.index, dtype=bool)
    budget = _at_budget(df)
    tuned = _as_tuned(df, tuning)
    kept = own_grid & own_seed
    left = {"grid": df[~own_grid], "seed": df[own_grid & ~own_seed], "budget": df[kept & ~budget],
            "setting": df[kept & budget & ~tuned]}
    return Evidence(df[kept & budget & tuned], left)


def _at_budget(df: pd.DataFrame) -> pd.Series:
    """Rule 3: True where the run's grid has no step budgets (the epoch protocol) or the run
    trained for the budget its grid records for its N."""
    def ok(grid, n, steps) -> bool:
        budgets = grids.GRIDS[grid].step_budgets if grid in grids.GRIDS else None
        if budgets is None:
            return True
        if pd.isna(n):  # full data (a transfer grid's stage 1) keeps the epoch protocol
            return pd.isna(steps)
        budget = grids.budget_for(budgets, n)
        return not pd.isna(steps) and budget is not None and budget == int(steps)

    steps = df["steps"] if "steps" in df else pd.Series(pd.NA, index=df.index)
    return pd.Series([ok(g, n, s) for g, n, s in zip(df["grid"], df["n"], steps)], index=df.index, dtype=bool)


def _as_tuned(df: pd.DataFrame, tuning: pd.DataFrame | None) -> pd.Series:
    """Rule 4: True where the run has its stored choice's settings, or no choice applies."""
    if tuning is None or tuning.empty:
        return pd.Series(True, index=df.index, dtype=bool)
    tuned_by = [grids.GRIDS[g].tuned_by if g in grids.GRIDS else None for g in df["grid"]]
    whose = pd.MultiIndex.from_arrays([tuned_by, [grids.tuning_task(g, t) for g, t in zip(df["grid"], df["task"])],
                                       df["model"]])
    choice = tuning.set_index(["grid", "task", "model"])[list(grids.TUNED_FIELDS)].reindex(whose)
    applies = df["grid"].isin(grids.TUNED_GRIDS).to_numpy() & choice["lr"].notna().to_numpy()
    same = {f: np.isclose(pd.to_numeric(df[f], errors="coerce").to_numpy(float),
                          choice[f].to_numpy(float)) for f in grids.TUNED_FIELDS}  # NaN: not the same
    scl = (df["loss"] == "ce+scl").to_numpy()  # CE runs have no λ, τ to compare
    tuned = same["lr"] & same["warmup_ratio"] & (~scl | (same["lam"] & same["tau"]))
    return pd.Series(~applies | tuned, index=df.index, dtype=bool)


def pooled_text(runs: pd.DataFrame) -> str:
    """What one claim pooled, in a clause: how many runs, of which grids and seeds."""
    if runs.empty:
        return "no runs"
    return "; ".join(f"{len(g)} {'run' if len(g) == 1 else 'runs'} of grid {grid} ({_seeds(g)})"
                     for grid, g in runs.groupby("grid"))


def demo_note(df: pd.DataFrame, campaign_db: str = "sqlite:///results.db") -> str:
    """For the terminal, before a table that holds the smoke grid's runs: what they are (a sanity
    run, not evidence) and where the campaign's results are. '' when it holds none."""
    demo = df[df["grid"] == DEMO_GRID]
    if demo.empty:
        return ""
    tasks = ", ".join(TASK_LABELS.get(t, t) for t in sorted(demo["task"].unique()))
    ns = ", ".join("full" if pd.isna(n) else str(int(n)) for n in sorted(demo["n"].dropna().unique()))
    seeds = _seeds(demo)
    epochs = ", ".join(str(int(e)) for e in sorted(demo["epochs"].unique()))
    epochs += " epoch" if epochs == "1" else " epochs"
    models = ", ".join(sorted(demo["model"].unique()))
    losses = " and ".join(LOSS_LABELS.get(x, x) for x in sorted(demo["loss"].unique()))
    return (f"What you ran: the {DEMO_GRID} grid, {len(demo)} finished jobs ({tasks}, N = {ns} "
            f"training examples, {seeds}, {epochs}, {losses}, {models}). It is a "
            f"sanity run that shows the harness installs, trains and stores results; {ns} examples "
            "and a few seeds cannot test the paper's claims, so its numbers are not evidence for or "
            "against them, and the report leaves them out.\n"
            f"The campaign's results: report/report.md, or `harness report --table 2 --db {campaign_db}`.")


def _seeds(runs: pd.DataFrame) -> str:
    """'seeds 0–3, 7' or 'seed 0'."""
    values = sorted(set(runs["seed"]))
    return ("seed " if len(values) == 1 else "seeds ") + _span(values)


def _span(values: list) -> str:
    """[0, 1, 2, 3, 7] -> '0–3, 7'."""
    out, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(str(start) if start == v else f"{start}–{v}")
            start = None
    return ", ".join(out)
