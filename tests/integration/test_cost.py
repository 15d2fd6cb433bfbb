"""What each grid cost (analysis/cost.py), from attempts rows of a real database on both backends:
every ended attempt counts in the worker-hours, whatever its outcome; CPU-hours only where the
attempt recorded its threads; a running attempt counts nowhere."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from analysis.cost import grid_costs, render_costs
from harness.store import db as hdb

T0 = dt.datetime(2026, 12, 1, 9, 0, 0)


def _fill(engine) -> None:
    # (job, grid, attempt: (outcome, minutes, threads or None)); the grid order in GRIDS is
    # fewshot before tune, and "mine" (not a named grid) comes last
    jobs = {"a": "tune", "b": "fewshot", "c": "fewshot", "d": "mine"}
    attempts = [("a", "done", 30, 2), ("b", "interrupted", 6, None), ("b", "done", 12, 1),
                ("c", "failed", 3, None), ("c", "done", 24, 1), ("d", "done", 60, None),
                ("d", "running", None, None)]
    with engine.begin() as conn:
        conn.execute(sa.insert(hdb.jobs), [
            {"id": j, "grid": g, "spec": "{}", "task": "sst2", "n": 20, "noise": 0.0, "seed": i,
             "loss": "ce", "model": "m", "status": "done", "seq": i} for i, (j, g) in enumerate(jobs.items())])
        rows = []
        for i, (job, outcome, minutes, threads) in enumerate(attempts, start=1):
            start = T0 + dt.timedelta(hours=i)
            rows.append({"id": i, "job_id": job, "attempt": i, "worker": "w", "outcome": outcome,
                         "device": "cpu (x86_64, 2 cores)" if job != "d" else "cuda:0 (H200)",
                         "started_at": start,
                         "ended_at": None if minutes is None else start + dt.timedelta(minutes=minutes),
                         "config": None if threads is None else json.dumps({"threads": threads})})
        conn.execute(sa.insert(hdb.attempts), rows)


def test_each_grid_costs_the_wall_time_of_its_ended_attempts(db_url):
    engine = hdb.make_engine(db_url)
    hdb.upgrade(engine)
    _fill(engine)
    costs = grid_costs(engine).set_index("grid")
    assert list(costs.index) == ["fewshot", "tune", "mine"]
    few, tune, mine = costs.loc["fewshot"], costs.loc["tune"], costs.loc["mine"]
    assert few["jobs done"] == 2 and few["attempts"] == 4
    assert few["other outcomes"] == "1 failed, 1 interrupted"
    assert few["worker-hours"] == pytest.approx((6 + 12 + 3 + 24) / 60)
    assert few["result worker-hours"] == pytest.approx((12 + 24) / 60)
    assert few["minutes per result"] == pytest.approx(18)
    assert few["CPU-hours"] == pytest.approx((12 + 24) / 60) and few["CPU-hours cover"] == "2 of 4"
    assert tune["CPU-hours"] == pytest.approx(1.0) and tune["worker-hours"] == pytest.approx(0.5)
    assert tune["what"].startswith("hyper-parameters on validation") and few["what"] == "Table 2"
    # the running attempt is not counted; no attempt recorded threads
    assert mine["attempts"] == 1 and mine["worker-hours"] == pytest.approx(1.0)
    assert mine["CPU-hours cover"] == "0 of 1" and mine["what"] == ""
    text = render_costs(grid_costs(engine))
    assert "| fewshot | Table 2 | 2 | 4 (1 failed, 1 interrupted) | 0.75 | 0.60 | 18.00 | 0.60 (2 of 4) |" in text
    assert "| mine |  | 1 | 1 | 1.00 | 1.00 | 60.00 | — (0 of 1) |" in text
    assert "cpu (x86_64, 2 cores); cuda:0 (H200)" in text


def test_a_database_without_ended_attempts_says_so(sqlite_url):
    engine = hdb.make_engine(sqlite_url)
    hdb.upgrade(engine)
    assert grid_costs(engine).empty
    assert render_costs(grid_costs(engine)) == "No attempt has ended yet."
