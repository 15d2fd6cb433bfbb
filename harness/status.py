"""What the queue holds: counts by grid and status, running jobs with progress, recent failures."""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from harness import db, queue

RECENT_FAILURES = 10


def queue_status(engine: Engine) -> dict:
    """A JSON-ready summary of the queue (also what `harness status --json` prints)."""
    with db.connect(engine) as conn:
        counts: dict[str, dict[str, int]] = {}
        for grid, status, count in conn.execute(sa.text(
                "SELECT grid, status, COUNT(*) FROM jobs GROUP BY grid, status ORDER BY grid")):
            counts.setdefault(grid, {s.value: 0 for s in queue.Status})[status] = count
        now = queue.now_sql(conn)
        running = [dict(job_id=r[0], grid=r[1], task=r[2], n=r[3], noise=r[4], seed=r[5], loss=r[6],
                        worker=r[7], attempt=r[8], progress=json.loads(r[9]) if r[9] else None,
                        lease_left_seconds=None if r[10] is None else round(r[10], 1))
                   for r in conn.execute(sa.text(
                       "SELECT id, grid, task, n, noise, seed, loss, worker, attempts, progress,"
                       f" lease_expires - {now} FROM jobs WHERE status = 'running' ORDER BY seq"))]
        failures = [dict(job_id=r[0], grid=r[1], task=r[2], n=r[3], seed=r[4], loss=r[5],
                         status=r[6], attempts=r[7], error=r[8])
                    for r in conn.execute(sa.text(
                        "SELECT id, grid, task, n, seed, loss, status, attempts, error FROM jobs"
                        " WHERE error IS NOT NULL ORDER BY updated_at DESC, seq DESC LIMIT :k"),
                        {"k": RECENT_FAILURES})]
    return dict(database=engine.url.render_as_string(hide_password=True), counts=counts,
                running=running, recent_failures=failures)
