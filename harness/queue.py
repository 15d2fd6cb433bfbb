"""The job queue, as a handful of verbs over the database: enqueue, claim, heartbeat, finish,
fail, release, requeue_stale, cancel, retry; and for jobs that start from another job's model
(transfer): has_dependents, stored_model, redo.

Every verb is one short transaction. Time for leases is always the database's clock, so that
workers on machines whose clocks disagree still agree on which lease has expired.
"""

from __future__ import annotations

import enum
import json
import socket
import traceback
from dataclasses import dataclass, replace
from typing import Iterable

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from harness import db, storage
from harness.runner import RunResult
from harness.spec import JobSpec

LEASE_SECONDS = 60.0  # a running job whose lease is this old without a heartbeat is presumed lost
MAX_ATTEMPTS = 3  # attempts before a job that keeps failing (or being lost) is marked failed
INSERT_CHUNK = 500  # rows per INSERT statement when enqueueing


class Status(str, enum.Enum):
    QUEUED = "queued"  # waiting for a worker
    RUNNING = "running"  # claimed; a worker holds the lease and renews it by heartbeat
    DONE = "done"  # finished with exactly one row in results
    FAILED = "failed"  # failed on its last attempt (or permanently); the error is kept
    CANCELLED = "cancelled"  # withdrawn by a user; never claimed again unless retried


@dataclass(frozen=True)
class Claim:
    """A job a worker holds: run_id identifies this attempt, and every later verb checks it."""

    job_id: str
    run_id: int
    attempt: int
    grid: str
    spec: JobSpec
    worker: str
    spec_json: str  # as stored, so the result row copies it without re-serialising


def now_sql(conn: Connection) -> str:
    """SQL for the database clock in seconds since the epoch."""
    return _now(conn.dialect.name)


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
        base = conn.execute(sa.select(sa.func.coalesce(sa.func.max(db.jobs.c.seq), 0))).scalar_one()
        for r in rows:
            r["seq"] += base + 1
        for i in range(0, len(rows), INSERT_CHUNK):
            # RETURNING counts what was inserted: rowcount is not reliable for multi-row inserts.
            stmt = _insert_ignore(conn, db.jobs, rows[i:i + INSERT_CHUNK]).returning(db.jobs.c.id)
            added += len(conn.execute(stmt).all())
    return added, len(rows) - added


def _insert_ignore(conn: Connection, table: sa.Table, rows: list[dict], key: str = "id"):
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    return insert(table).values(rows).on_conflict_do_nothing(index_elements=[key])


# ---- claim --------------------------------------------------------------------------------

def claim(engine: Engine, worker: str, *, grid: str | None = None, host: str | None = None,
          pid: int | None = None, device: str | None = None, versions: dict | None = None,
          git_rev: str | None = None, lease_seconds: float = LEASE_SECONDS) -> Claim | None:
    """Atomically take the next queued job whose dependency (if any) is done; None if there is none.

    SQLite: the transaction starts with BEGIN IMMEDIATE (see harness.db), so claims serialise.
    PostgreSQL: FOR UPDATE SKIP LOCKED lets concurrent claimers pass over each other's rows.
    """
    with db.connect(engine) as conn, conn.begin():
        row = conn.execute(_sql(conn, "claim_grid" if grid else "claim"), {"grid": grid}).first()
        if row is None:
            return None
        job_id, attempts, job_grid, spec_json = row
        attempt = attempts + 1
        run_id = conn.execute(_INSERT_RUN, dict(
            job_id=job_id, attempt=attempt, worker=worker, host=host or socket.gethostname(),
            pid=pid, device=device, versions=json.dumps(versions or {}), git_rev=git_rev,
        )).scalar_one()
        conn.execute(_sql(conn, "take"), {"attempt": attempt, "run_id": run_id, "worker": worker,
                                          "lease": lease_seconds, "id": job_id})
    return Claim(job_id, run_id, attempt, job_grid, JobSpec.from_json(spec_json), worker, spec_json)


# Statements of the hot path, built once per dialect: building SQLAlchemy constructs per call
# cost more CPU than the database work itself (profiled: ~60% of a claim + finish cycle).
_INSERT_RUN = sa.insert(db.runs).returning(db.runs.c.id)
_SQL_CACHE: dict[tuple[str, str], sa.TextClause] = {}
_CLAIM = ("SELECT j.id, j.attempts, j.grid, j.spec FROM jobs j WHERE j.status = 'queued'{grid}"
          " AND (j.depends_on IS NULL OR EXISTS"
          " (SELECT 1 FROM jobs d WHERE d.id = j.depends_on AND d.status = 'done'))"
          " ORDER BY j.priority, j.seq LIMIT 1{lock}")
_SQL = {
    "claim": lambda d: _CLAIM.format(grid="", lock=_skip_locked(d)),
    "claim_grid": lambda d: _CLAIM.format(grid=" AND j.grid = :grid", lock=_skip_locked(d)),
    "take": lambda d: ("UPDATE jobs SET status = 'running', attempts = :attempt, run_id = :run_id,"
                       f" worker = :worker, lease_expires = {_now(d)} + :lease, progress = NULL,"
                       " updated_at = CURRENT_TIMESTAMP WHERE id = :id"),
    # finish: the status change doubles as the ownership check, so it comes first
    "done": lambda d: ("UPDATE jobs SET status = 'done', lease_expires = NULL, error = NULL,"
                       " updated_at = CURRENT_TIMESTAMP"
                       " WHERE id = :id AND run_id = :run_id AND status = 'running'"),
    "has_result": lambda d: "SELECT 1 FROM results WHERE job_id = :id",
    "end_run": lambda d: ("UPDATE runs SET outcome = :outcome, error = :error, config = :config,"
                          " ended_at = CURRENT_TIMESTAMP WHERE id = :id AND outcome = 'running'"),
}


def _skip_locked(dialect: str) -> str:
    return "" if dialect == "sqlite" else " FOR UPDATE OF j SKIP LOCKED"


def _now(dialect: str) -> str:
    if dialect == "sqlite":
        return "((julianday('now') - 2440587.5) * 86400.0)"
    return "extract(epoch from clock_timestamp())"


def _sql(conn: Connection, name: str) -> sa.TextClause:
    key = (conn.dialect.name, name)
    if key not in _SQL_CACHE:
        _SQL_CACHE[key] = sa.text(_SQL[name](conn.dialect.name))
    return _SQL_CACHE[key]


# ---- while running ------------------------------------------------------------------------

def heartbeat(engine: Engine, c: Claim, progress: dict | None = None,
              lease_seconds: float = LEASE_SECONDS) -> bool:
    """Renew the lease (and store progress). False: the lease is lost, stop working on the job."""
    with db.connect(engine) as conn, conn.begin():
        res = conn.execute(sa.text(
            f"UPDATE jobs SET lease_expires = {now_sql(conn)} + :lease,"
            " progress = COALESCE(:progress, progress)"
            " WHERE id = :id AND run_id = :run_id AND status = 'running'"),
            {"lease": lease_seconds, "progress": json.dumps(progress) if progress else None,
             "id": c.job_id, "run_id": c.run_id})
        return res.rowcount == 1


def _owns(conn: Connection, c: Claim) -> bool:
    """Lock the job row and check that this attempt still holds it."""
    lock = "" if conn.dialect.name == "sqlite" else " FOR UPDATE"
    row = conn.execute(sa.text(f"SELECT status, run_id FROM jobs WHERE id = :id{lock}"),
                       {"id": c.job_id}).first()
    return row is not None and row[0] == Status.RUNNING.value and row[1] == c.run_id


def _end_run(conn: Connection, run_id: int, outcome: str, error: str | None = None,
             config: dict | None = None) -> None:
    """Close an attempt's record. An attempt already closed (e.g. marked lost when its lease
    expired) keeps its first outcome."""
    conn.execute(_sql(conn, "end_run"), dict(
        id=run_id, outcome=outcome, error=error,
        config=None if config is None else json.dumps(config, default=str)))


# ---- finish / fail / release --------------------------------------------------------------

def finish(engine: Engine, c: Claim, result: RunResult, wall_seconds: float | None = None, *,
           late: bool = False) -> bool | None:
    """Write the result, its metrics, predictions and embeddings, and mark the job done, in one
    transaction. False (and no result written) when this attempt no longer holds the job.

    late=True: a result kept in its run folder while the database was unreachable (see
    harness.pending). Its lease has likely expired, so it is taken whenever the job has no result
    yet and is not done or cancelled: a trained result beats training again. A worker that
    re-claimed the job meanwhile loses its lease at its next heartbeat. None: the job is not in
    this database (a kept result waits for the right one)."""
    s = c.spec
    with db.connect(engine) as conn, conn.begin():
        if late:
            c = _adopt(conn, c)
            if not isinstance(c, Claim):
                return c
        elif conn.execute(_sql(conn, "done"), {"id": c.job_id, "run_id": c.run_id}).rowcount != 1:
            _end_run(conn, c.run_id, "abandoned", "lease lost before the result was written")
            return False
        if conn.execute(_sql(conn, "has_result"), {"id": c.job_id}).first() is not None:
            _drop_result(conn, c.job_id)  # a job run again (see redo): its new result replaces the old
        conn.execute(_INSERT_RESULT, dict(
            job_id=c.job_id, run_id=c.run_id, grid=c.grid, task=s.task, n=s.n, noise=s.noise,
            seed=s.seed, loss=s.loss, lam=s.lam, tau=s.tau, scl_reduction=s.scl_reduction,
            model=s.model, batch_size=s.batch_size, lr=s.lr, epochs=s.epochs,
            metric=result.metric, val_score=result.val_score, test_score=result.test_score,
            val_accuracy=result.val_accuracy, test_accuracy=result.test_accuracy,
            best_epoch=result.best_epoch, n_train=result.n_train, n_test=result.n_test,
            train_seconds=result.train_seconds, scl_batch_size=result.scl_batch_size,
            wall_seconds=wall_seconds, batching=s.batching, sampling=result.sampling or s.sampling,
            class_counts=None if result.class_counts is None else json.dumps(result.class_counts),
            spec=c.spec_json))
        if result.metrics:
            conn.execute(_INSERT_METRIC, [
                dict(run_id=c.run_id, job_id=c.job_id, split=split, epoch=epoch, name=name,
                     value=float(value)) for split, epoch, name, value in result.metrics])
        if result.predictions:
            conn.execute(_INSERT_PREDICTIONS, dict(job_id=c.job_id, run_id=c.run_id,
                                                   **storage.pack_predictions(result.predictions)))
        keep_embeddings = result.embeddings is not None and storage.keeps_embeddings(s)
        if keep_embeddings:
            emb = np.ascontiguousarray(result.embeddings, dtype=np.float16)
            conn.execute(_INSERT_EMBEDDING, dict(
                job_id=c.job_id, run_id=c.run_id, split="test", rows=emb.shape[0],
                dim=emb.shape[1], examples=json.dumps([int(e) for e in result.embedding_examples]),
                labels=json.dumps([float(v) for v in result.embedding_labels]), data=emb.tobytes()))
        if result.train_examples:
            conn.execute(_INSERT_TRAIN_EXAMPLES, dict(
                job_id=c.job_id, examples=json.dumps([int(e) for e in result.train_examples])))
        if result.noise_set is not None:
            ns = result.noise_set
            conn.execute(_insert_ignore(conn, db.noise_sets, [dict(
                key=ns["key"], task=s.task, n=s.n, seed=ns["seed"], temperature=ns["temperature"],
                backend=ns["backend"], examples=ns["examples"], changed_share=ns["changed_share"],
                mean_edit_distance=ns["mean_edit_distance"], seconds=ns["seconds"],
                made_by_job=c.job_id)], key="key"))
        if result.artifact is not None:
            a = result.artifact
            conn.execute(_INSERT_ARTIFACT, dict(job_id=c.job_id, run_id=c.run_id, kind=a["kind"],
                                                path=a["path"], sha256=a["sha256"], bytes=a["bytes"]))
        _end_run(conn, c.run_id, "done", config=result.config | dict(
            stored_embeddings=keep_embeddings, stored_predictions="test_predictions (packed)"))
    return True


def _adopt(conn: Connection, c: Claim) -> Claim | bool | None:
    """For finish(late=True): make the job this attempt's again, or say why not (False: finished
    or cancelled meanwhile; None: no such job here). A database restored from a copy may lack
    the attempt's run row: one is written, so the result still names the attempt it came from."""
    lock = "" if conn.dialect.name == "sqlite" else " FOR UPDATE"
    row = conn.execute(sa.text(f"SELECT status FROM jobs WHERE id = :id{lock}"), {"id": c.job_id}).first()
    if row is None:
        return None
    if row[0] in (Status.DONE.value, Status.CANCELLED.value) or \
            conn.execute(_sql(conn, "has_result"), {"id": c.job_id}).first() is not None:
        return False
    if conn.execute(sa.text("SELECT 1 FROM runs WHERE id = :id AND job_id = :job"),
                    {"id": c.run_id, "job": c.job_id}).first() is None:
        run_id = conn.execute(_INSERT_RUN, dict(job_id=c.job_id, attempt=c.attempt, worker=c.worker,
                                                host=c.worker.split(":")[0])).scalar_one()
        c = replace(c, run_id=run_id)
    # This attempt may have been marked lost meanwhile, and another may hold the job now: reopen
    # this one so that finish closes it as done, and close the other.
    conn.execute(sa.text("UPDATE runs SET outcome = 'running' WHERE id = :id"), {"id": c.run_id})
    conn.execute(sa.text(
        "UPDATE runs SET outcome = 'abandoned', ended_at = CURRENT_TIMESTAMP, error = :why"
        " WHERE job_id = :job AND outcome = 'running' AND id <> :id"),
        {"job": c.job_id, "id": c.run_id, "why": f"run {c.run_id}'s kept result was stored"})
    conn.execute(sa.text(
        "UPDATE jobs SET status = 'done', lease_expires = NULL, error = NULL, run_id = :run_id,"
        " updated_at = CURRENT_TIMESTAMP WHERE id = :id"), {"id": c.job_id, "run_id": c.run_id})
    return c


# Everything finish writes per job, children before the results row.
_RESULT_TABLES = (db.metrics, db.predictions, db.test_predictions, db.embeddings, db.train_examples, db.artifacts, db.results)


def _drop_result(conn: Connection, job_id: str) -> None:
    for table in _RESULT_TABLES:
        conn.execute(sa.delete(table).where(table.c.job_id == job_id))


_INSERT_RESULT = sa.insert(db.results)
_INSERT_METRIC = sa.insert(db.metrics)
_INSERT_PREDICTIONS = sa.insert(db.test_predictions)
_INSERT_EMBEDDING = sa.insert(db.embeddings)
_INSERT_TRAIN_EXAMPLES = sa.insert(db.train_examples)
_INSERT_ARTIFACT = sa.insert(db.artifacts)


def fail(engine: Engine, c: Claim, exc: BaseException, *, permanent: bool = False) -> str | None:
    """Record a failed attempt. The job goes back to the queue while attempts remain (unless the
    failure is permanent), else it is failed. Returns the job's new status, None if not ours."""
    tb = "".join(traceback.format_exception(exc))
    line = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:500]
    with db.connect(engine) as conn, conn.begin():
        if not _owns(conn, c):
            _end_run(conn, c.run_id, "abandoned", tb)
            return None
        _end_run(conn, c.run_id, "failed", tb)
        status = conn.execute(sa.text(
            "UPDATE jobs SET status = CASE WHEN :permanent OR attempts >= max_attempts"
            " THEN 'failed' ELSE 'queued' END, error = :error, lease_expires = NULL, run_id = NULL,"
            " updated_at = CURRENT_TIMESTAMP WHERE id = :id RETURNING status"),
            {"permanent": permanent, "error": line, "id": c.job_id}).scalar_one()
    return status


def release(engine: Engine, c: Claim, reason: str = "worker stopped", *,
            outcome: str = "interrupted") -> bool:
    """Hand a job back to the queue without using up an attempt (the worker was asked to stop, or
    the job must wait: outcome 'deferred')."""
    with db.connect(engine) as conn, conn.begin():
        if not _owns(conn, c):
            return False
        _end_run(conn, c.run_id, outcome, reason)
        conn.execute(sa.text(
            "UPDATE jobs SET status = 'queued', attempts = attempts - 1, lease_expires = NULL,"
            " run_id = NULL, worker = NULL, updated_at = CURRENT_TIMESTAMP WHERE id = :id"),
            {"id": c.job_id})
    return True


# ---- jobs that start from another job's model -----------------------------------------------

def has_dependents(engine: Engine, job_id: str) -> bool:
    """Whether any job waits on this one (depends_on): then its model must be kept."""
    with db.connect(engine) as conn:
        return conn.execute(sa.text("SELECT 1 FROM jobs WHERE depends_on = :id LIMIT 1"),
                            {"id": job_id}).first() is not None


def stored_model(engine: Engine, job_id: str) -> tuple[str, str] | None:
    """(folder, sha256) of the model a finished job kept, or None if it kept none."""
    with db.connect(engine) as conn:
        row = conn.execute(sa.select(db.artifacts.c.path, db.artifacts.c.sha256).where(
            db.artifacts.c.job_id == job_id, db.artifacts.c.kind == "model")).first()
    return None if row is None else (row[0], row[1])


def deferrals(engine: Engine, job_id: str, outcome: str = "deferred") -> int:
    """How often the job was handed back unrun because the model it starts from was unusable
    (or, with outcome='device-fault', because its GPU failed under it)."""
    with db.connect(engine) as conn:
        return conn.execute(sa.text("SELECT COUNT(*) FROM runs WHERE job_id = :id"
                                    " AND outcome = :outcome"), {"id": job_id, "outcome": outcome}).scalar_one()


def redo(engine: Engine, job_id: str, reason: str) -> bool:
    """Put a done job back in the queue with a fresh set of attempts (its stored model is gone).

    Only a job that is still 'done' moves, so when many dependents notice at once it is re-queued
    once; its result rows stay until the new run replaces them in `finish`. True if this call
    re-queued it."""
    with db.connect(engine) as conn, conn.begin():
        return conn.execute(sa.text(
            "UPDATE jobs SET status = 'queued', attempts = 0, error = :error, lease_expires = NULL,"
            " run_id = NULL, worker = NULL, progress = NULL, updated_at = CURRENT_TIMESTAMP"
            " WHERE id = :id AND status = 'done'"),
            {"id": job_id, "error": f"re-queued: {reason}"[:500]}).rowcount == 1


# ---- housekeeping -------------------------------------------------------------------------

def requeue_stale(engine: Engine) -> int:
    """Jobs whose lease expired (worker killed, machine lost): their attempt is recorded as lost,
    and the job goes back to the queue, or to failed after its last attempt. Returns how many.

    The candidates are read first, then each is changed by one UPDATE guarded by the attempt it
    saw (run_id) and by the lease still being expired, so a heartbeat that renewed the lease, or
    another worker that requeued and re-claimed the job in between, leaves it untouched. An
    attempt is marked lost only when its guarded UPDATE changed the row.
    """
    requeued = 0
    with db.connect(engine) as conn, conn.begin():
        now = now_sql(conn)
        stale = conn.execute(sa.text(
            f"SELECT id, run_id FROM jobs WHERE status = 'running' AND lease_expires < {now}")).all()
        for job_id, run_id in stale:
            same_attempt = "run_id IS NULL" if run_id is None else "run_id = :run_id"
            changed = conn.execute(sa.text(
                "UPDATE jobs SET status = CASE WHEN attempts >= max_attempts THEN 'failed'"
                " ELSE 'queued' END, error = 'lease expired (worker lost)', lease_expires = NULL,"
                " run_id = NULL, updated_at = CURRENT_TIMESTAMP"
                f" WHERE id = :id AND status = 'running' AND lease_expires < {now}"
                f" AND {same_attempt}"),
                {"id": job_id, "run_id": run_id}).rowcount
            if changed != 1:
                continue  # renewed or re-claimed since the SELECT: a healthy job, leave it
            requeued += 1
            if run_id is not None:
                _end_run(conn, run_id, "lost", "lease expired: the worker stopped sending heartbeats")
    return requeued


def grids_in(engine: Engine) -> set[str]:
    """The grids that have jobs in this database."""
    with db.connect(engine) as conn:
        return set(conn.execute(sa.text("SELECT DISTINCT grid FROM jobs")).scalars())


def cancel(engine: Engine, *, job_ids: list[str] | None = None, grid: str | None = None) -> int:
    """Withdraw queued jobs (running ones finish their attempt; their result is still kept)."""
    return _set_status(engine, Status.CANCELLED, [Status.QUEUED], job_ids, grid)


def retry(engine: Engine, *, job_ids: list[str] | None = None, grid: str | None = None) -> int:
    """Put failed and cancelled jobs back in the queue with a fresh set of attempts."""
    return _set_status(engine, Status.QUEUED, [Status.FAILED, Status.CANCELLED], job_ids, grid,
                       reset_attempts=True)


def _set_status(engine, to: Status, from_: list[Status], job_ids, grid, reset_attempts=False) -> int:
    stmt = sa.update(db.jobs).where(db.jobs.c.status.in_([s.value for s in from_]))
    if job_ids:
        stmt = stmt.where(db.jobs.c.id.in_(job_ids))
    if grid:
        stmt = stmt.where(db.jobs.c.grid == grid)
    values = dict(status=to.value, updated_at=sa.func.current_timestamp())
    if reset_attempts:
        values.update(attempts=0, error=None)
    with db.connect(engine) as conn, conn.begin():
        return conn.execute(stmt.values(**values)).rowcount
