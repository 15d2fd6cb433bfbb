"""The job queue: the lifecycle of a job over the `jobs` and `attempts` tables (one `attempts` row
per attempt), as a handful of verbs: enqueue, claim, heartbeat, finish, fail, release, requeue_stale,
cancel, retry, redo; and grids_in, count_attempts to read it.

Every verb is one short transaction. Time for leases is always the database's clock
(harness.store.dialects.db_now), so that workers on machines whose clocks disagree still agree on which
lease has expired. What a finished job keeps is written by harness.store.results, inside finish's
transaction; jobs that start from another job's model are harness.store.dependencies'.
"""

from __future__ import annotations

import json
import socket
import traceback
from dataclasses import replace
from typing import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from harness.store import db, dialects, results
from harness.store.jobs import Claim, Outcome, Status  # noqa: F401  (the queue's words, re-exported)
from harness.training.runner import RunResult
from harness.protocol.spec import JobSpec

LEASE_SECONDS = 60.0  # a running job whose lease is this old without a heartbeat is presumed lost
MAX_ATTEMPTS = 3  # attempts before a job that keeps failing (or being lost) is marked failed
INSERT_CHUNK = 500  # rows per INSERT statement when enqueueing
ERROR_CHARS = 500  # a job's error line (jobs.error) is cut to this; attempts.error keeps it whole


# ---- statements -----------------------------------------------------------------------------
# Built once, at import: building SQLAlchemy constructs per call cost more CPU than the database
# work itself (profiled: ~60% of a claim + finish cycle). Status and outcome values are bound as
# parameters. A parameter is never named after a column of the table an UPDATE changes: SQLAlchemy
# would take it as one more column to SET (so the attempt is `this_attempt`, not `attempt_id`).

jobs, attempts = db.jobs, db.attempts
_p = sa.bindparam
_NOW = dialects.db_now()
_STAMP = sa.func.current_timestamp()  # updated_at, ended_at: the database's time of day
_NULL = sa.null()  # written into the SQL: one parameter fewer to send per NULL

_j, _source = jobs.alias("j"), jobs.alias("d")
# The next queued job whose dependency (if any) is done. PostgreSQL: SKIP LOCKED lets concurrent
# claimers pass over each other's rows; SQLite leaves it out (BEGIN IMMEDIATE serialises claims).
_CLAIM = (sa.select(_j.c.id, _j.c.attempts, _j.c.grid, _j.c.spec)
          .where(_j.c.status == Status.QUEUED.value,
                 sa.or_(_j.c.depends_on.is_(None),
                        sa.exists().where(_source.c.id == _j.c.depends_on,
                                          _source.c.status == Status.DONE.value)))
          .order_by(_j.c.priority, _j.c.seq).limit(1)
          .with_for_update(skip_locked=True, of=_j))
_CLAIM_IN_GRID = _CLAIM.where(_j.c.grid == _p("in_grid"))
_INSERT_ATTEMPT = sa.insert(attempts).returning(attempts.c.id)
_TAKE = sa.update(jobs).where(jobs.c.id == _p("job")).values(
    status=Status.RUNNING.value, attempts=_p("attempt"), attempt_id=_p("this_attempt"),
    worker=_p("holder"), lease_expires=_NOW + _p("lease", type_=sa.Float), progress=_NULL,
    updated_at=_STAMP)

_HOLDS = sa.and_(jobs.c.id == _p("job"), jobs.c.attempt_id == _p("this_attempt"),
                 jobs.c.status == Status.RUNNING.value)
_HEARTBEAT = sa.update(jobs).where(_HOLDS).values(
    lease_expires=_NOW + _p("lease", type_=sa.Float),
    progress=sa.func.coalesce(_p("beat", type_=sa.Text), jobs.c.progress))
_LOCK_JOB = sa.select(jobs.c.status, jobs.c.attempt_id).where(jobs.c.id == _p("job")).with_for_update()
# An attempt already closed (e.g. marked lost when its lease expired) keeps its first outcome.
_END_ATTEMPT = sa.update(attempts).where(
    attempts.c.id == _p("this_attempt"), attempts.c.outcome == Outcome.RUNNING.value).values(
    outcome=_p("ended"), error=_p("why"), config=_p("resolved"), ended_at=_STAMP)

# finish: the status change doubles as the ownership check, so it comes first
_DONE = sa.update(jobs).where(_HOLDS).values(
    status=Status.DONE.value, lease_expires=_NULL, error=_NULL, updated_at=_STAMP)
_ATTEMPT_EXISTS = sa.select(attempts.c.id).where(attempts.c.id == _p("this_attempt"),
                                                 attempts.c.job_id == _p("job"))
_REOPEN_ATTEMPT = sa.update(attempts).where(attempts.c.id == _p("this_attempt")).values(
    outcome=Outcome.RUNNING.value)
_ABANDON_OTHERS = sa.update(attempts).where(
    attempts.c.job_id == _p("job"), attempts.c.outcome == Outcome.RUNNING.value,
    attempts.c.id != _p("this_attempt")
).values(outcome=Outcome.ABANDONED.value, ended_at=_STAMP, error=_p("why"))
_ADOPT = sa.update(jobs).where(jobs.c.id == _p("job")).values(
    status=Status.DONE.value, lease_expires=_NULL, error=_NULL, attempt_id=_p("this_attempt"),
    updated_at=_STAMP)

_FAIL = sa.update(jobs).where(jobs.c.id == _p("job")).values(
    status=sa.case((sa.or_(_p("permanent", type_=sa.Boolean), jobs.c.attempts >= jobs.c.max_attempts),
                    Status.FAILED.value), else_=Status.QUEUED.value),
    error=_p("line"), lease_expires=_NULL, attempt_id=_NULL, updated_at=_STAMP).returning(jobs.c.status)
_RELEASE = sa.update(jobs).where(jobs.c.id == _p("job")).values(
    status=Status.QUEUED.value, attempts=jobs.c.attempts - 1, lease_expires=_NULL, attempt_id=_NULL,
    worker=_NULL, updated_at=_STAMP)

_STALE = sa.select(jobs.c.id, jobs.c.attempt_id).where(jobs.c.status == Status.RUNNING.value,
                                                       jobs.c.lease_expires < _NOW)
# Guarded by what the SELECT saw: still running, lease still expired, the same attempt (or none).
_REQUEUE = sa.update(jobs).where(
    jobs.c.id == _p("job"), jobs.c.status == Status.RUNNING.value, jobs.c.lease_expires < _NOW,
    jobs.c.attempt_id.is_not_distinct_from(_p("seen_attempt", type_=sa.Integer))
).values(status=sa.case((jobs.c.attempts >= jobs.c.max_attempts, Status.FAILED.value),
                        else_=Status.QUEUED.value),
         error="lease expired (worker lost)", lease_expires=_NULL, attempt_id=_NULL, updated_at=_STAMP)

_COUNT_ATTEMPTS = sa.select(sa.func.count()).select_from(attempts).where(
    attempts.c.job_id == _p("job"), attempts.c.outcome == _p("ended"))
_GRIDS = sa.select(jobs.c.grid).distinct()
_CANCEL = sa.update(jobs).values(status=Status.CANCELLED.value, updated_at=_STAMP)
_RETRY = sa.update(jobs).values(status=Status.QUEUED.value, attempts=0, error=_NULL, updated_at=_STAMP)
_MAX_SEQ = sa.select(sa.func.coalesce(sa.func.max(jobs.c.seq), 0))
# Only jobs that are still done move, so many callers noticing at once re-queue a job once.
_REDO = sa.update(jobs).where(jobs.c.id.in_(_p("jobs", expanding=True)),
                              jobs.c.status == Status.DONE.value).values(
    status=Status.QUEUED.value, attempts=0, error=_p("why"), lease_expires=_NULL, attempt_id=_NULL,
    worker=_NULL, progress=_NULL, updated_at=_STAMP)


# ---- enqueue ------------------------------------------------------------------------------

def enqueue(engine: Engine, grid: str, specs: Iterable[JobSpec], *,
            max_attempts: int = MAX_ATTEMPTS, depends: dict[str, str] | None = None) -> tuple[int, int]:
    """Insert jobs that are not there yet (insert-or-ignore by job id). Returns (added, existing).

    Concurrent enqueues of the same grid are safe: the primary key decides, not a prior read.
    """
    specs = list({s.job_id: s for s in specs}.values())
    depends = depends or {}
    rows = [dict(id=s.job_id, grid=grid, spec=s.to_json(), task=s.task, n=s.n, noise=s.noise,
                 seed=s.seed, loss=s.loss, model=s.model, max_attempts=max_attempts,
                 depends_on=depends.get(s.job_id), seq=i)
            for i, s in enumerate(specs)]
    added = 0
    with db.connect(engine) as conn, conn.begin():
        base = conn.execute(_MAX_SEQ).scalar_one()
        for r in rows:
            r["seq"] += base + 1
        insert = dialects.insert_ignore(conn.dialect.name, jobs, "id")
        for i in range(0, len(rows), INSERT_CHUNK):
            # RETURNING counts what was inserted: rowcount is not reliable for multi-row inserts.
            stmt = insert.values(rows[i:i + INSERT_CHUNK]).returning(jobs.c.id)
            added += len(conn.execute(stmt).all())
    return added, len(rows) - added


# ---- claim --------------------------------------------------------------------------------

def claim(engine: Engine, worker: str, *, grid: str | None = None, host: str | None = None,
          pid: int | None = None, device: str | None = None, versions: dict | None = None,
          git_rev: str | None = None, lease_seconds: float = LEASE_SECONDS) -> Claim | None:
    """Atomically take the next queued job whose dependency (if any) is done; None if there is none.

    SQLite: the transaction starts with BEGIN IMMEDIATE (see harness.store.db), so claims serialise.
    PostgreSQL: FOR UPDATE SKIP LOCKED lets concurrent claimers pass over each other's rows.
    """
    with db.connect(engine) as conn, conn.begin():
        row = (conn.execute(_CLAIM_IN_GRID, {"in_grid": grid}) if grid else conn.execute(_CLAIM)).first()
        if row is None:
            return None
        job_id, attempts, job_grid, spec_json = row
        attempt = attempts + 1
        attempt_id = conn.execute(_INSERT_ATTEMPT, dict(
            job_id=job_id, attempt=attempt, worker=worker, host=host or socket.gethostname(),
            pid=pid, device=device, versions=json.dumps(versions or {}), git_rev=git_rev,
        )).scalar_one()
        conn.execute(_TAKE, dict(attempt=attempt, this_attempt=attempt_id, holder=worker,
                                 lease=lease_seconds, job=job_id))
    return Claim(job_id, attempt_id, attempt, job_grid, JobSpec.from_json(spec_json), worker, spec_json)


# ---- while running ------------------------------------------------------------------------

def heartbeat(engine: Engine, c: Claim, progress: dict | None = None,
              lease_seconds: float = LEASE_SECONDS) -> bool:
    """Renew the lease (and store progress). False: the lease is lost, stop working on the job."""
    with db.connect(engine) as conn, conn.begin():
        res = conn.execute(_HEARTBEAT, dict(
            lease=lease_seconds, beat=json.dumps(progress) if progress else None,
            job=c.job_id, this_attempt=c.attempt_id))
        return res.rowcount == 1


def _owns(conn: Connection, c: Claim) -> bool:
    """Lock the job row and check that this attempt still holds it."""
    row = conn.execute(_LOCK_JOB, {"job": c.job_id}).first()
    return row is not None and row[0] == Status.RUNNING and row[1] == c.attempt_id


def _end_attempt(conn: Connection, attempt_id: int, outcome: Outcome, error: str | None = None,
                 config: dict | None = None) -> None:
    """Close an attempt's record, unless it was closed already (it keeps its first outcome)."""
    conn.execute(_END_ATTEMPT, dict(
        this_attempt=attempt_id, ended=Outcome(outcome).value, why=error,
        resolved=None if config is None else json.dumps(config, default=str)))


# ---- finish / fail / release --------------------------------------------------------------

def finish(engine: Engine, c: Claim, result: RunResult, wall_seconds: float | None = None, *,
           late: bool = False) -> bool | None:
    """Write the result, its metrics, predictions and embeddings (harness.store.results), and mark the job
    done, in one transaction. False (and no result written) when this attempt no longer holds
    the job.

    late=True: a result kept in its run folder while the database was unreachable (see
    harness.store.pending). Its lease has likely expired, so it is taken whenever the job has no result
    yet and is not done or cancelled: a trained result beats training again. A worker that
    re-claimed the job meanwhile loses its lease at its next heartbeat. None: the job is not in
    this database (a kept result waits for the right one)."""
    with db.connect(engine) as conn, conn.begin():
        if late:
            c = _adopt(conn, c)
            if not isinstance(c, Claim):
                return c
        elif conn.execute(_DONE, {"job": c.job_id, "this_attempt": c.attempt_id}).rowcount != 1:
            _end_attempt(conn, c.attempt_id, Outcome.ABANDONED, "lease lost before the result was written")
            return False
        stored = results.write_result(conn, c, result, wall_seconds)
        _end_attempt(conn, c.attempt_id, Outcome.DONE, config=result.config | stored)
    return True


def _adopt(conn: Connection, c: Claim) -> Claim | bool | None:
    """For finish(late=True): make the job this attempt's again, or say why not (False: finished
    or cancelled meanwhile; None: no such job here). A database restored from a copy may lack
    the attempt's row: one is written, so the result still names the attempt it came from."""
    row = conn.execute(_LOCK_JOB, {"job": c.job_id}).first()
    if row is None:
        return None
    if row[0] in (Status.DONE, Status.CANCELLED) or results.has_result(conn, c.job_id):
        return False
    if conn.execute(_ATTEMPT_EXISTS, {"this_attempt": c.attempt_id, "job": c.job_id}).first() is None:
        attempt_id = conn.execute(_INSERT_ATTEMPT, dict(
            job_id=c.job_id, attempt=c.attempt, worker=c.worker, host=c.worker.split(":")[0])).scalar_one()
        c = replace(c, attempt_id=attempt_id)
    # This attempt may have been marked lost meanwhile, and another may hold the job now: reopen
    # this one so that finish closes it as done, and close the other.
    conn.execute(_REOPEN_ATTEMPT, {"this_attempt": c.attempt_id})
    conn.execute(_ABANDON_OTHERS, {"job": c.job_id, "this_attempt": c.attempt_id,
                                   "why": f"attempt {c.attempt_id}'s kept result was stored"})
    conn.execute(_ADOPT, {"job": c.job_id, "this_attempt": c.attempt_id})
    return c


def fail(engine: Engine, c: Claim, exc: BaseException, *, permanent: bool = False) -> Status | None:
    """Record a failed attempt. The job goes back to the queue while attempts remain (unless the
    failure is permanent), else it is failed. Returns the job's new status, None if not ours."""
    tb = "".join(traceback.format_exception(exc))
    line = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:ERROR_CHARS]
    with db.connect(engine) as conn, conn.begin():
        if not _owns(conn, c):
            _end_attempt(conn, c.attempt_id, Outcome.ABANDONED, tb)
            return None
        _end_attempt(conn, c.attempt_id, Outcome.FAILED, tb)
        status = conn.execute(_FAIL, dict(permanent=permanent, line=line, job=c.job_id)).scalar_one()
    return Status(status)


def release(engine: Engine, c: Claim, reason: str = "worker stopped", *,
            outcome: Outcome = Outcome.INTERRUPTED) -> bool:
    """Hand a job back to the queue without using up an attempt (the worker was asked to stop, or
    the job must wait: Outcome.DEFERRED, or its GPU failed: Outcome.DEVICE_FAULT)."""
    with db.connect(engine) as conn, conn.begin():
        if not _owns(conn, c):
            return False
        _end_attempt(conn, c.attempt_id, outcome, reason)
        conn.execute(_RELEASE, {"job": c.job_id})
    return True


def count_attempts(engine: Engine, job_id: str, outcome: Outcome) -> int:
    """How many of the job's attempts ended with `outcome` (e.g. handed back for a GPU fault)."""
    with db.connect(engine) as conn:
        return conn.execute(_COUNT_ATTEMPTS, {"job": job_id, "ended": Outcome(outcome).value}).scalar_one()


# ---- housekeeping -------------------------------------------------------------------------

def requeue_stale(engine: Engine) -> int:
    """Jobs whose lease expired (worker killed, machine lost): their attempt is recorded as lost,
    and the job goes back to the queue, or to failed after its last attempt. Returns how many.

    The candidates are read first, then each is changed by one UPDATE guarded by the attempt it
    saw (attempt_id) and by the lease still being expired, so a heartbeat that renewed the lease, or
    another worker that requeued and re-claimed the job in between, leaves it untouched. An
    attempt is marked lost only when its guarded UPDATE changed the row.
    """
    requeued = 0
    with db.connect(engine) as conn, conn.begin():
        for job_id, attempt_id in conn.execute(_STALE).all():
            if conn.execute(_REQUEUE, {"job": job_id, "seen_attempt": attempt_id}).rowcount != 1:
                continue  # renewed or re-claimed since the SELECT: a healthy job, leave it
            requeued += 1
            if attempt_id is not None:
                _end_attempt(conn, attempt_id, Outcome.LOST,
                             "lease expired: the worker stopped sending heartbeats")
    return requeued


def grids_in(engine: Engine) -> set[str]:
    """The grids that have jobs in this database."""
    with db.connect(engine) as conn:
        return set(conn.execute(_GRIDS).scalars())


def cancel(engine: Engine, *, job_ids: list[str] | None = None, grid: str | None = None) -> int:
    """Withdraw queued jobs (running ones finish their attempt; their result is still kept)."""
    return _set_status(engine, _CANCEL, [Status.QUEUED], job_ids, grid)


def retry(engine: Engine, *, job_ids: list[str] | None = None, grid: str | None = None) -> int:
    """Put failed and cancelled jobs back in the queue with a fresh set of attempts."""
    return _set_status(engine, _RETRY, [Status.FAILED, Status.CANCELLED], job_ids, grid)



def redo(engine: Engine, job_ids: list[str], reason: str) -> int:
    """Put done jobs back in the queue with a fresh set of attempts, saying why in their error
    line (their model is gone, their data changed). Their result rows stay until the new run
    replaces them (harness.store.results.write_result). Returns how many this call re-queued."""
    why = f"re-queued: {reason}"[:ERROR_CHARS]
    done = 0
    with db.connect(engine) as conn, conn.begin():
        for i in range(0, len(job_ids), INSERT_CHUNK):
            done += conn.execute(_REDO, {"jobs": job_ids[i:i + INSERT_CHUNK], "why": why}).rowcount
    return done


def _set_status(engine: Engine, update: sa.Update, from_: list[Status], job_ids, grid) -> int:
    stmt = update.where(jobs.c.status.in_([s.value for s in from_]))
    if job_ids:
        stmt = stmt.where(jobs.c.id.in_(job_ids))
    if grid:
        stmt = stmt.where(jobs.c.grid == grid)
    with db.connect(engine) as conn, conn.begin():
        return conn.execute(stmt).rowcount
