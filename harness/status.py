"""What the queue holds: counts by grid and status, running jobs with progress, recent failures."""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from harness.store import db
from harness.store.dialects import db_now
from harness.errors import HarnessError
from harness.store.jobs import Status

RECENT_FAILURES = 10
PREFIX_MATCHES = 6  # job ids read for a prefix: enough to list five and say there are more

jobs, attempts = db.jobs, db.attempts
_LEASE_LEFT = (jobs.c.lease_expires - db_now()).label("lease_left")  # seconds; < 0: stale
_COUNTS = (sa.select(jobs.c.grid, jobs.c.status, sa.func.count())
           .group_by(jobs.c.grid, jobs.c.status).order_by(jobs.c.grid))
_RUNNING = (sa.select(jobs.c.id, jobs.c.grid, jobs.c.task, jobs.c.n, jobs.c.noise, jobs.c.seed,
                      jobs.c.loss, jobs.c.worker, jobs.c.attempts, jobs.c.progress, _LEASE_LEFT)
            .where(jobs.c.status == Status.RUNNING.value).order_by(jobs.c.seq))
_FAILURES = (sa.select(jobs.c.id, jobs.c.grid, jobs.c.task, jobs.c.n, jobs.c.seed, jobs.c.loss,
                       jobs.c.status, jobs.c.attempts, jobs.c.error)
             .where(jobs.c.error.is_not(None))
             .order_by(jobs.c.updated_at.desc(), jobs.c.seq.desc()).limit(RECENT_FAILURES))
_IDS_LIKE = (sa.select(jobs.c.id).where(jobs.c.id.like(sa.bindparam("prefix")))
             .order_by(jobs.c.id).limit(PREFIX_MATCHES))
_JOB = sa.select(jobs.c.id, jobs.c.grid, jobs.c.status, jobs.c.attempts, jobs.c.max_attempts,
                 jobs.c.worker, jobs.c.progress, jobs.c.error, jobs.c.spec,
                 _LEASE_LEFT).where(jobs.c.id == sa.bindparam("job"))
_RESULT = (sa.select(db.results.c.metric, db.results.c.val_score, db.results.c.test_score,
                    db.results.c.test_accuracy, db.results.c.best_epoch, db.results.c.n_train,
                    db.results.c.n_test, db.results.c.train_seconds, db.results.c.finished_at)
           .where(db.results.c.job_id == sa.bindparam("job")))
_ATTEMPTS = (sa.select(attempts.c.id, attempts.c.attempt, attempts.c.worker, attempts.c.device,
                       attempts.c.outcome, attempts.c.started_at, attempts.c.ended_at, attempts.c.error,
                       attempts.c.config)
             .where(attempts.c.job_id == sa.bindparam("job")).order_by(attempts.c.id))
DATA_FACTS = ("data_fingerprint", "data_files", "truncated")  # from a finished attempt's config


def queue_status(engine: Engine) -> dict:
    """A JSON-ready summary of the queue (also what `harness status --json` prints)."""
    with db.connect(engine) as conn:
        counts: dict[str, dict[str, int]] = {}
        for grid, status, count in conn.execute(_COUNTS):
            counts.setdefault(grid, {s.value: 0 for s in Status})[status] = count
        # A running job whose lease has expired is stale: its worker stopped sending heartbeats,
        # and the next worker to look puts it back in the queue (queue.requeue_stale).
        running = [dict(job_id=r[0], grid=r[1], task=r[2], n=r[3], noise=r[4], seed=r[5], loss=r[6],
                        worker=r[7], attempt=r[8], progress=json.loads(r[9]) if r[9] else None,
                        lease_left_seconds=None if r[10] is None else round(r[10], 1),
                        stale=r[10] is not None and r[10] < 0)
                   for r in conn.execute(_RUNNING)]
        failures = [dict(job_id=r[0], grid=r[1], task=r[2], n=r[3], seed=r[4], loss=r[5],
                         status=r[6], attempts=r[7], error=r[8])
                    for r in conn.execute(_FAILURES)]
    return dict(database=engine.url.render_as_string(hide_password=True), counts=counts,
                running=running, stale=sum(j["stale"] for j in running), recent_failures=failures)


def find_job(engine: Engine, job: str) -> str:
    """The job id that `job` (a whole id or a unique prefix of one) names."""
    with db.connect(engine) as conn:
        ids = conn.execute(_IDS_LIKE, {"prefix": job.replace("%", "").replace("_", "") + "%"}
                           ).scalars().all()
    if job in ids:
        return job
    if len(ids) == 1 and job:
        return ids[0]
    if not ids:
        raise HarnessError(f"no job {job!r} in this database (`harness status` lists them)")
    raise HarnessError(f"job prefix {job!r} is ambiguous: {', '.join(ids[:5])}"
                       + (", ..." if len(ids) > 5 else ""))


def job_detail(engine: Engine, job: str) -> dict:
    """One job in full: its spec, state (`attempts`: how many so far), its result once it has
    one (`result`: scores, best epoch, sizes; None before) and every attempt (`history`, oldest
    first) with its whole traceback."""
    job_id = find_job(engine, job)
    with db.connect(engine) as conn:
        row = conn.execute(_JOB, {"job": job_id}).one()
        res = conn.execute(_RESULT, {"job": job_id}).mappings().first()
        history = [dict(attempt_id=r[0], attempt=r[1], worker=r[2], device=r[3], outcome=r[4],
                        started_at=str(r[5]), ended_at=None if r[6] is None else str(r[6]), error=r[7],
                        data=_data_facts(r[8]))
                   for r in conn.execute(_ATTEMPTS, {"job": job_id})]
    from harness.store import provenance

    changed = provenance.changed_data(engine, job_ids=[job_id])
    lease = None if row[9] is None else round(row[9], 1)
    return dict(job_id=row[0], grid=row[1], status=row[2], attempts=row[3], max_attempts=row[4],
                worker=row[5], progress=json.loads(row[6]) if row[6] else None, error=row[7],
                spec=json.loads(row[8]), lease_left_seconds=lease,
                result=None if res is None else {k: (str(v) if k == "finished_at" else v) for k, v in res.items()},
                stale=row[2] == Status.RUNNING and lease is not None and lease < 0, history=history,
                data_now=changed[0].now if changed else None)


def _data_facts(config: str | None) -> dict | None:
    """What a finished attempt trained on: its data's fingerprint and each split's digest, and
    how many examples of each split were cut to max_length (None: not recorded)."""
    facts = {k: v for k, v in ((json.loads(config) if config else None) or {}).items() if k in DATA_FACTS}
    return facts or None
