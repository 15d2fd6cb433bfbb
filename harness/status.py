"""What the queue holds: counts by grid and status, running jobs with progress, recent failures."""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from harness import db, queue
from harness.errors import HarnessError

RECENT_FAILURES = 10


def queue_status(engine: Engine) -> dict:
    """A JSON-ready summary of the queue (also what `harness status --json` prints)."""
    with db.connect(engine) as conn:
        counts: dict[str, dict[str, int]] = {}
        for grid, status, count in conn.execute(sa.text(
                "SELECT grid, status, COUNT(*) FROM jobs GROUP BY grid, status ORDER BY grid")):
            counts.setdefault(grid, {s.value: 0 for s in queue.Status})[status] = count
        now = queue.now_sql(conn)
        # A running job whose lease has expired is stale: its worker stopped sending heartbeats,
        # and the next worker to look puts it back in the queue (queue.requeue_stale).
        running = [dict(job_id=r[0], grid=r[1], task=r[2], n=r[3], noise=r[4], seed=r[5], loss=r[6],
                        worker=r[7], attempt=r[8], progress=json.loads(r[9]) if r[9] else None,
                        lease_left_seconds=None if r[10] is None else round(r[10], 1),
                        stale=r[10] is not None and r[10] < 0)
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
                running=running, stale=sum(j["stale"] for j in running), recent_failures=failures)


def find_job(engine: Engine, job: str) -> str:
    """The job id that `job` (a whole id or a unique prefix of one) names."""
    with db.connect(engine) as conn:
        ids = conn.execute(sa.text("SELECT id FROM jobs WHERE id LIKE :p ORDER BY id LIMIT 6"),
                           {"p": job.replace("%", "").replace("_", "") + "%"}).scalars().all()
    if job in ids:
        return job
    if len(ids) == 1 and job:
        return ids[0]
    if not ids:
        raise HarnessError(f"no job {job!r} in this database (`harness status` lists them)")
    raise HarnessError(f"job prefix {job!r} is ambiguous: {', '.join(ids[:5])}"
                       + (", ..." if len(ids) > 5 else ""))


def job_detail(engine: Engine, job: str) -> dict:
    """One job in full: its spec, state and every attempt with its whole traceback."""
    job_id = find_job(engine, job)
    with db.connect(engine) as conn:
        now = queue.now_sql(conn)
        row = conn.execute(sa.text(
            "SELECT id, grid, status, attempts, max_attempts, worker, progress, error, spec,"
            f" lease_expires - {now} FROM jobs WHERE id = :id"), {"id": job_id}).one()
        runs = [dict(run_id=r[0], attempt=r[1], worker=r[2], device=r[3], outcome=r[4],
                     started_at=str(r[5]), ended_at=None if r[6] is None else str(r[6]), error=r[7])
                for r in conn.execute(sa.text(
                    "SELECT id, attempt, worker, device, outcome, started_at, ended_at, error"
                    " FROM runs WHERE job_id = :id ORDER BY id"), {"id": job_id})]
    lease = None if row[9] is None else round(row[9], 1)
    return dict(job_id=row[0], grid=row[1], status=row[2], attempts=row[3], max_attempts=row[4],
                worker=row[5], progress=json.loads(row[6]) if row[6] else None, error=row[7],
                spec=json.loads(row[8]), lease_left_seconds=lease,
                stale=row[2] == "running" and lease is not None and lease < 0, runs=runs)
