"""The hyper-parameters chosen on validation, and the numbers behind them, as report text.

Pure over the frame from `load.load_tuning`: one row per (task, model) with the chosen lr, λ, τ
and every setting tried (`candidates`: loss, lr, lam, tau, mean, per-seed scores).
"""

from __future__ import annotations

import pandas as pd

from harness.protocol.grids import get_grid
from harness.protocol.paper import TASK_LABELS

TUNED_TASKS = get_grid("tune").tasks  # a task of the tune grid without a choice is said missing
MISSING = "missing"
EDGE_NOTE = ("A choice marked *edge* is the smallest or largest value its grid tried: the best "
             "setting may lie beyond the grid, so the tuning has not found an optimum in that "
             "direction, only a bound. Extend the grid past it before trusting the choice (protocol "
             "v2's tuning brackets each model's learning rate for this reason).")


def edges(r) -> list[str]:
    """The chosen values that sit on the edge of what was tried (with more than one value tried):
    lr among CE's learning rates, λ and τ among CE+SCL's settings at the chosen learning rate.
    E.g. ["lr 0.0001 (smallest of 3)", "λ 0.5 (smallest of 2)"]."""
    cands = pd.DataFrame(r.candidates)
    if cands.empty:
        return []
    scl = cands[(cands["loss"] != "ce") & (cands["lr"] == r.lr)]
    tried = {"lr": (r.lr, cands.loc[cands["loss"] == "ce", "lr"]),
             "λ": (r.lam, scl["lam"] if "lam" in scl else pd.Series(dtype=float)),
             "τ": (r.tau, scl["tau"] if "tau" in scl else pd.Series(dtype=float))}
    out = []
    for name, (chosen, values) in tried.items():
        values = sorted(set(values.dropna()))
        if len(values) < 2 or chosen is None:
            continue
        if chosen == values[0]:
            out.append(f"{name} {chosen:g} (smallest of {len(values)})")
        elif chosen == values[-1]:
            out.append(f"{name} {chosen:g} (largest of {len(values)})")
    return out


def render_tuning(choices: pd.DataFrame) -> str:
    """Markdown: the choice per (model, task), then per task the validation score of every setting
    tried by learning rate, the chosen ones in bold."""
    out = []
    if choices.empty:
        return ("No tuning choice is stored: every value below is missing. Run the `tune` grid and "
                "`harness tune select`; until then jobs ran with their grid's settings, named in each "
                "table's 'Setting' line.\n\n" + _choice_table(choices, []))
    if "grid" in choices and choices["grid"].nunique() > 1:  # protocol v1's and v2's, apart
        return "\n\n".join(f"### Tuning grid `{g}`\n\n" + render_tuning(c.drop(columns="grid"))
                             for g, c in choices.groupby("grid", sort=True))
    out.append(f"Rule: {choices['rule'].iloc[0]}. Scores are the validation {choices['metric'].iloc[0]}"
               " (×100) of each run's selected epoch, averaged over the tuning seeds (each seed's "
               "score in brackets); the test set played no part. Reported runs enqueued with `--tuned` "
               "use these values; the tuning seeds are not among the reported seeds.")
    out.append(_choice_table(choices, sorted(choices["model"].unique())))
    on_edge = sum(bool(edges(r)) for r in choices.itertuples())
    out.append(f"{on_edge} of {len(choices)} choices lie on the edge of their grid. " + EDGE_NOTE)
    order = {t: i for i, t in enumerate(TUNED_TASKS)}
    for r in sorted(choices.itertuples(), key=lambda r: (r.model, order.get(r.task, len(order)), r.task)):
        out.append(f"**{TASK_LABELS.get(r.task, r.task)}**, `{r.model}` (N = {r.n}, seeds "
                   f"{', '.join(map(str, r.seeds))}):")
        out.append(_candidate_table(r))
    return "\n\n".join(out)


def _choice_table(choices: pd.DataFrame, models: list[str]) -> str:
    head = ("| model | task | lr | λ | τ | warm-up | CE validation | CE+SCL validation | tuning seeds "
            "| on the grid's edge |\n|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for model in models or ["(any)"]:
        have = {r.task: r for r in choices.itertuples() if r.model == model}
        for task in list(TUNED_TASKS) + sorted(set(have) - set(TUNED_TASKS)):
            label = TASK_LABELS.get(task, task)
            r = have.get(task)
            if r is None:
                rows.append(f"| `{model}` | {label} | " + " | ".join([MISSING] * 8) + " |")
                continue
            rows.append(f"| `{model}` | {label} | {r.lr:g} | {r.lam:g} | {r.tau:g} | {r.warmup_ratio:g} | "
                        f"{100 * r.ce_val_score:.1f} | {100 * r.scl_val_score:.1f} | "
                        f"{', '.join(map(str, r.seeds))} | {'; '.join('*edge* ' + e for e in edges(r)) or 'no'} |")
    return head + "\n" + "\n".join(rows)


def _candidate_table(r) -> str:
    cands = pd.DataFrame(r.candidates)
    lrs = sorted(cands["lr"].unique())
    cands["row"] = [("CE" if c.loss == "ce" else f"CE+SCL λ={c.lam:g} τ={c.tau:g}")
                    for c in cands.itertuples()]
    rows = list(dict.fromkeys(sorted(cands["row"], key=lambda s: (s != "CE", s))))
    lines = ["| setting | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |", "|---|" + "---|" * len(lrs)]
    for row in rows:
        cells = []
        for lr in lrs:
            hit = cands[(cands["row"] == row) & (cands["lr"] == lr)]
            if hit.empty:
                cells.append(MISSING)
                continue
            c = hit.iloc[0]
            per_seed = ", ".join(f"{100 * v:.1f}" for v in c["scores"].values())
            text = f"{100 * c['mean']:.1f} [{per_seed}]"
            chosen = lr == r.lr and (c["loss"] == "ce" or (c["lam"] == r.lam and c["tau"] == r.tau))
            cells.append(f"**{text}** chosen" if chosen else text)
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
