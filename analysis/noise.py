"""How much the back-translation noise changed the training texts, per task and temperature T,
from the `noise_sets` table (each set is recorded once, when a worker makes it)."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from analysis.load import engine_of
from harness.store import db as hdb

COLUMNS = ["task", "temperature", "backend", "sets", "examples", "changed_share", "mean_edit_distance"]


def noise_summary(db) -> pd.DataFrame:
    """Per (task, T, backend): number of sets and examples, the mean share of examples changed,
    and the mean character edit distance per text. Empty when no noisy set was made."""
    ns = hdb.noise_sets
    with hdb.connect(engine_of(db)) as conn:
        if not sa.inspect(conn).has_table(ns.name):
            return pd.DataFrame(columns=COLUMNS)
        df = pd.read_sql(sa.select(ns), conn)
    if df.empty:
        return pd.DataFrame(columns=COLUMNS)
    out = (df.groupby(["task", "temperature", "backend"])
             .agg(sets=("key", "count"), examples=("examples", "sum"),
                  changed_share=("changed_share", "mean"), mean_edit_distance=("mean_edit_distance", "mean"))
             .reset_index().sort_values(["task", "temperature"]))
    return out[COLUMNS]


def render_noise_summary(summary: pd.DataFrame, fmt: str = "terminal") -> str:
    """The summary as a small table (markdown for reports, aligned text for the terminal)."""
    if summary.empty:
        return "Noise: no back-translated training set in the database yet."
    header = ["task", "T", "backend", "sets", "examples", "changed", "mean edit distance (chars)"]
    rows = [[r.task, f"{r.temperature:g}", r.backend, str(r.sets), str(r.examples),
             f"{100 * r.changed_share:.1f}%", f"{r.mean_edit_distance:.1f}"]
            for r in summary.itertuples()]
    title = "How much the noise changed the training texts (back-translation, per T):"
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return title + "\n\n" + "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt_row = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([title, fmt_row(header), fmt_row(["-" * w for w in widths])] + [fmt_row(r) for r in rows])
