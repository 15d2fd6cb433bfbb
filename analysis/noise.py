"""How much the back-translation noise changed the training texts, per task and temperature T:
in characters, from the `noise_sets` table (each set is recorded once, when a worker makes it), and
in the token ids each model saw, from the metrics of the jobs that trained on them
(harness.noise.tokens; jobs before that measure existed have none)."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from analysis.load import engine_of, load_results
from analysis.tables import task_order
from harness.noise.tokens import NOISE_EDIT_RATE, NOISE_UNCHANGED, TOKEN_MEASURES
from harness.store import db as hdb

COLUMNS = ["task", "temperature", "backend", "sets", "examples", "changed_share", "mean_edit_distance"]
TOKEN_COLUMNS = ["model", "task", "temperature", "noise_mode", "runs", "unchanged_tokens_share",
                 "token_edit_rate"]


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


def token_summary(db) -> pd.DataFrame:
    """Per (model, task, T, noise mode): the finished noisy runs that measured their token ids, the
    mean share of noisy copies whose token ids equal the original's, and the mean token edit
    distance per original token. Empty when no run measured it."""
    engine = engine_of(db)
    m, r = hdb.metrics, hdb.results
    query = (sa.select(r.c.job_id, m.c.name, m.c.value)
             .select_from(r.join(m, sa.and_(m.c.attempt_id == r.c.attempt_id, m.c.job_id == r.c.job_id)))
             .where(m.c.name.in_(TOKEN_MEASURES)))
    with hdb.connect(engine) as conn:
        rows = pd.read_sql(query, conn)
    if rows.empty:
        return pd.DataFrame(columns=TOKEN_COLUMNS)
    wide = rows.pivot_table(index="job_id", columns="name", values="value").reset_index()
    runs = load_results(engine)[["job_id", "model", "task", "noise", "noise_mode"]].merge(wide, on="job_id")
    out = (runs.groupby(["model", "task", "noise", "noise_mode"])
               .agg(runs=("job_id", "count"), unchanged_tokens_share=(NOISE_UNCHANGED, "mean"),
                    token_edit_rate=(NOISE_EDIT_RATE, "mean"))
               .reset_index().rename(columns={"noise": "temperature"}))
    out = out.sort_values(["model", "noise_mode", "task", "temperature"],
                          key=lambda c: c.map(task_order) if c.name == "task" else c)
    return out[TOKEN_COLUMNS].reset_index(drop=True)


def render_token_summary(summary: pd.DataFrame) -> str:
    """The token-level summary as a markdown table (for the report)."""
    if summary.empty:
        return ("Noise in tokens: no run in the database measured how much the noise changed its "
                "token ids (runs before that measure existed do not have it).")
    lines = ["What the model saw change (the noisy copies' token ids against their originals', "
             "per model's tokenizer; special tokens included):", "",
             "| model | noisy copies | task | T | runs | copies with identical token ids | "
             "token edits per original token |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.model} | {r.noise_mode} | {r.task} | {r.temperature:g} | {r.runs} | "
              f"{100 * r.unchanged_tokens_share:.1f}% | {r.token_edit_rate:.3f} |"
              for r in summary.itertuples()]
    return "\n".join(lines)
