"""What each grid cost: worker time from the `attempts` table, so a reader knows what a re-run costs.

An attempt's time is its wall time, from its claim to its end, on its worker. Every ended attempt
counts, whatever its outcome (a failed or interrupted attempt used the machine too), and the
time of the attempts that stored a result is shown on its own. CPU-hours are wall time × the CPU
threads the worker ran with (the resolved config's `threads`); attempts that did not record it
(every attempt that stored no result, and results from before it was recorded) count in the
worker-hours only, and the CPU-hours say how many attempts they cover.
"""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from analysis.load import engine_of, json_of
from harness.protocol.grids import GRIDS
from harness.store import db as hdb

COLUMNS = ["grid", "what", "jobs done", "attempts", "other outcomes", "worker-hours",
           "result worker-hours", "minutes per result", "CPU-hours", "CPU-hours cover", "devices"]


def load_attempts(db) -> pd.DataFrame:
    """One row per ended attempt: its grid, outcome, device, wall seconds and threads (NaN where
    the attempt did not record them)."""
    engine = engine_of(db)
    a, j = hdb.attempts, hdb.jobs
    threads = json_of(engine, a.c.config)["threads"].as_float().label("threads")
    query = (sa.select(j.c.grid, a.c.job_id, a.c.outcome, a.c.device, a.c.started_at, a.c.ended_at, threads)
             .select_from(a.join(j, j.c.id == a.c.job_id)).where(a.c.ended_at.is_not(None)))
    with hdb.connect(engine) as conn:
        df = pd.DataFrame(conn.execute(query).all(),
                          columns=["grid", "job_id", "outcome", "device", "started_at", "ended_at", "threads"])
    df["threads"] = df["threads"].astype(float)  # NULL (not recorded) -> NaN
    df["seconds"] = (pd.to_datetime(df["ended_at"]) - pd.to_datetime(df["started_at"])).dt.total_seconds()
    return df.drop(columns=["started_at", "ended_at"])


def grid_costs(db) -> pd.DataFrame:
    """Per grid (in the order of `harness.protocol.grids.GRIDS`, then any other): jobs done,
    attempts, worker-hours in all and of the attempts that stored a result, the median minutes of
    one result, CPU-hours where threads were recorded and the share of attempts they cover."""
    df = load_attempts(db)
    order = {g: i for i, g in enumerate(GRIDS)}
    rows = []
    for grid, g in sorted(df.groupby("grid"), key=lambda kv: (order.get(kv[0], len(order)), kv[0])):
        done = g[g["outcome"] == "done"]
        known = g[g["threads"].notna()]
        rows.append({
            "grid": grid,
            "what": GRIDS[grid].description.split(":")[0] if grid in GRIDS else "",
            "jobs done": done["job_id"].nunique(),
            "attempts": len(g),
            "other outcomes": ", ".join(f"{n} {o}" for o, n in g.loc[g["outcome"] != "done", "outcome"]
                                        .value_counts().sort_index().items()),
            "worker-hours": g["seconds"].sum() / 3600,
            "result worker-hours": done["seconds"].sum() / 3600,
            "minutes per result": done["seconds"].median() / 60 if len(done) else float("nan"),
            "CPU-hours": (known["seconds"] * known["threads"]).sum() / 3600 if len(known) else float("nan"),
            "CPU-hours cover": f"{len(known)} of {len(g)}",
            "devices": "; ".join(sorted(g["device"].dropna().unique())),
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def render_costs(costs: pd.DataFrame) -> str:
    """The cost table in Markdown, with what its columns mean."""
    if costs.empty:
        return "No attempt has ended yet."

    def hours(x: float) -> str:
        return "—" if pd.isna(x) else f"{x:.2f}"

    lines = ["| grid | what | jobs done | attempts | worker-hours | of them, attempts with a result "
             "| minutes per result (median) | CPU-hours (attempts covered) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in costs.to_dict("records"):
        other = f" ({r['other outcomes']})" if r["other outcomes"] else ""
        lines.append(f"| {r['grid']} | {r['what']} | {r['jobs done']} | {r['attempts']}{other} | "
                     f"{hours(r['worker-hours'])} | {hours(r['result worker-hours'])} | "
                     f"{hours(r['minutes per result'])} | {hours(r['CPU-hours'])} ({r['CPU-hours cover']}) |")
    devices = sorted({d for ds in costs["devices"] for d in ds.split("; ") if d})
    return ("\n".join(lines) + "\n\nWorker-hours: the wall time of every ended attempt (claim to end), "
            "whatever its outcome; other outcomes are attempts that stored no result (interrupted, "
            "failed, lost …). CPU-hours: wall time × the CPU threads the worker ran with, over the "
            "attempts that recorded it. Devices: " + ("; ".join(devices) or "none recorded") + ". "
            "Workers shared the machine with each other and with development work, so these are "
            "what the campaign took here, an upper bound on what a quiet machine needs.")
