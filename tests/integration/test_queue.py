"""The queue's verbs on real databases: SQLite files and the local PostgreSQL server."""

from __future__ import annotations

import io
import json
import re
import threading
import time
import traceback
from dataclasses import replace

import pandas as pd
import pytest
import sqlalchemy as sa

from harness.store import db, queue
from harness.errors import HarnessError, PermanentJobError
from harness.protocol.spec import JobSpec
from harness.worker import Worker, WorkerOptions
from runners import instant

RESULTS_COLUMNS = ["job_id", "grid", "task", "n", "noise", "seed", "loss", "lam", "tau", "model",
                   "batch_size", "lr", "epochs", "metric", "val_score", "test_score",
                   "test_accuracy", "train_seconds", "finished_at"]


def specs(k: int, **kw) -> list[JobSpec]:
    return [JobSpec.make(task="sst2", n=20, seed=i, loss="ce", model="m", **kw) for i in range(k)]


def count(engine, sql: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar_one()


@pytest.fixture
def engine(db_url):
    e = db.open_db(db_url, create=True)
    yield e
    e.dispose()


def test_enqueue_is_idempotent(engine):
    assert queue.enqueue(engine, "g", specs(5)) == (5, 0)
    assert queue.enqueue(engine, "g", specs(7)) == (2, 5)
    assert count(engine, "select count(*) from jobs") == 7


def test_concurrent_enqueues_add_each_job_once(engine):
    out = []
    threads = [threading.Thread(target=lambda: out.append(queue.enqueue(engine, "g", specs(300))))
               for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sum(a for a, _ in out) == 300
    assert count(engine, "select count(*) from jobs") == 300


def test_claim_finish_writes_one_result(engine):
    queue.enqueue(engine, "g", specs(2))
    a = queue.claim(engine, "w1")
    b = queue.claim(engine, "w2")
    assert a and b and a.job_id != b.job_id
    assert queue.claim(engine, "w3") is None
    assert queue.finish(engine, a, instant(a.spec, None))
    assert count(engine, "select count(*) from results") == 1
    assert count(engine, "select rows from test_predictions") == 4
    assert count(engine, "select count(*) from jobs where status = 'done'") == 1
    # the same attempt cannot write twice
    assert not queue.finish(engine, a, instant(a.spec, None))
    assert count(engine, "select count(*) from results") == 1


def test_results_have_the_documented_columns(engine):
    queue.enqueue(engine, "g", specs(1))
    c = queue.claim(engine, "w")
    queue.finish(engine, c, instant(c.spec, None))
    with engine.connect() as conn:
        df = pd.read_sql("select * from results", conn)
    assert set(RESULTS_COLUMNS) <= set(df.columns)
    assert len(df) == 1 and df.loc[0, "task"] == "sst2" and df.loc[0, "loss"] == "ce"


def raised(exc: Exception) -> Exception:
    """The exception with a real traceback, as a worker catches it."""
    try:
        raise exc
    except Exception as caught:
        return caught


def test_fail_retries_then_fails(engine):
    queue.enqueue(engine, "g", specs(1), max_attempts=2)
    c1 = queue.claim(engine, "w")
    assert queue.fail(engine, c1, raised(RuntimeError("first"))) == "queued"
    c2 = queue.claim(engine, "w")
    assert c2.attempt == 2
    assert queue.fail(engine, c2, raised(RuntimeError("second"))) == "failed"
    assert queue.claim(engine, "w") is None
    with engine.connect() as conn:
        outcomes = [r[0] for r in conn.execute(sa.text("select outcome from attempts order by id"))]
        error = conn.execute(sa.text("select error from jobs")).scalar_one()
        tb = conn.execute(sa.text("select error from attempts order by id desc")).first()[0]
    assert outcomes == ["failed", "failed"]
    assert error == "RuntimeError: second" and "Traceback" in tb


def test_worker_classifies_errors_permanent_or_transient(engine, tmp_path):
    """The worker decides what is permanent: PermanentJobError and HarnessError fail the job at
    once; any other exception is retried until the job's attempts run out."""
    errors = {0: PermanentJobError("non-finite loss"), 1: HarnessError("bad spec"),
              2: RuntimeError("CUDA hiccup")}

    def runner(spec, ctx):
        raise errors[spec.seed]

    queue.enqueue(engine, "g", specs(3), max_attempts=2)
    w = Worker(engine, WorkerOptions(until_empty=True, runs_dir=tmp_path / "runs", quiet=True), runner=runner)
    assert w.run() == 0 and w.failed == 4
    with engine.connect() as conn:
        got = conn.execute(sa.text("select seed, status, attempts, error from jobs order by seed")).all()
    assert [tuple(r) for r in got] == [(0, "failed", 1, "PermanentJobError: non-finite loss"),
                                       (1, "failed", 1, "HarnessError: bad spec"),
                                       (2, "failed", 2, "RuntimeError: CUDA hiccup")]


def test_release_hands_back_without_using_an_attempt(engine):
    queue.enqueue(engine, "g", specs(1))
    c = queue.claim(engine, "w")
    assert queue.release(engine, c)
    assert count(engine, "select attempts from jobs") == 0
    assert count(engine, "select count(*) from jobs where status = 'queued'") == 1
    assert queue.claim(engine, "w").attempt == 1


def test_expired_lease_is_requeued_and_the_old_attempt_cannot_finish(engine):
    queue.enqueue(engine, "g", specs(1))
    old = queue.claim(engine, "w1", lease_seconds=0.2)
    assert queue.requeue_stale(engine) == 0
    time.sleep(0.4)
    assert queue.requeue_stale(engine) == 1
    assert not queue.heartbeat(engine, old)
    new = queue.claim(engine, "w2")
    assert new.attempt == 2
    assert not queue.finish(engine, old, instant(old.spec, None))  # the zombie is refused
    assert queue.finish(engine, new, instant(new.spec, None))
    with engine.connect() as conn:
        outcomes = [r[0] for r in conn.execute(sa.text("select outcome from attempts order by id"))]
    assert outcomes == ["lost", "done"]
    assert count(engine, "select count(*) from results") == 1


def test_heartbeat_keeps_a_lease_alive(engine):
    queue.enqueue(engine, "g", specs(1))
    c = queue.claim(engine, "w", lease_seconds=0.5)
    for _ in range(4):
        time.sleep(0.2)
        assert queue.heartbeat(engine, c, {"step": 1}, lease_seconds=0.5)
    assert queue.requeue_stale(engine) == 0


def test_dependencies_wait_for_their_job(engine):
    first, second = specs(2)
    queue.enqueue(engine, "g", [first, second], depends={second.job_id: first.job_id})
    c = queue.claim(engine, "w")
    assert c.job_id == first.job_id
    assert queue.claim(engine, "w") is None  # second waits for first
    queue.finish(engine, c, instant(c.spec, None))
    assert queue.claim(engine, "w").job_id == second.job_id


def test_cancel_and_retry(engine):
    queue.enqueue(engine, "g", specs(3))
    assert queue.cancel(engine, grid="g") == 3
    assert queue.claim(engine, "w") is None
    assert queue.retry(engine, grid="g") == 3
    assert queue.claim(engine, "w") is not None


def test_grid_filter(engine):
    queue.enqueue(engine, "a", specs(1))
    queue.enqueue(engine, "b", specs(2)[1:])
    assert queue.claim(engine, "w", grid="b").grid == "b"
    assert queue.claim(engine, "w", grid="b") is None


@pytest.mark.postgres
@pytest.mark.parametrize("racer", ["heartbeat", "requeue_and_reclaim"])
def test_requeue_stale_spares_a_job_renewed_between_its_select_and_update(pg_url, racer):
    """Between requeue_stale's SELECT and its UPDATE another connection renews the lease (a
    heartbeat) or requeues and re-claims the job (another worker). The requeue must then leave
    the healthy job alone and mark no attempt lost."""
    engine = db.open_db(pg_url, create=True)
    # A racer that waits on a lock the requeue holds would hang this thread: fail fast instead.
    other = sa.create_engine(pg_url, connect_args={"options": "-c lock_timeout=5000"})
    try:
        queue.enqueue(engine, "g", specs(1))
        c = queue.claim(engine, "w1", lease_seconds=0.1)
        time.sleep(0.3)  # the lease has expired: the job is a requeue candidate
        fired = []

        @sa.event.listens_for(engine, "before_cursor_execute")
        def race(conn, cursor, statement, params, context, executemany):
            if re.match(r"\s*UPDATE jobs SET status ?= ?CASE", statement) and not fired:
                fired.append(True)  # the SELECT has run; the UPDATE has not
                if racer == "heartbeat":
                    assert queue.heartbeat(other, c, lease_seconds=60)
                else:
                    assert queue.requeue_stale(other) == 1
                    fired.append(queue.claim(other, "w2", lease_seconds=60))

        assert queue.requeue_stale(engine) == 0
        assert fired, "the race was not staged"
        sa.event.remove(engine, "before_cursor_execute", race)
        with engine.connect() as conn:
            status, attempt_id = conn.execute(sa.text("select status, attempt_id from jobs")).one()
            outcomes = [r[0] for r in conn.execute(sa.text("select outcome from attempts order by id"))]
        assert status == "running"
        if racer == "heartbeat":
            assert attempt_id == c.attempt_id and outcomes == ["running"]
            assert queue.finish(engine, c, instant(c.spec, None))
        else:
            assert attempt_id == fired[1].attempt_id and outcomes == ["lost", "running"]
        assert count(engine, "select count(*) from jobs where status = 'queued'") == 0
    finally:
        engine.dispose()
        other.dispose()


def test_results_record_batching_sampling_and_class_counts(engine):
    s = JobSpec.make(task="mnli", n=20, seed=0, loss="ce", model="m", batching="reshuffle",
                     sampling="stratified")
    queue.enqueue(engine, "g", [s])
    c = queue.claim(engine, "w")
    result = instant(c.spec, None)
    result.class_counts, result.sampling = {"0": 7, "1": 7, "2": 6}, "stratified"
    assert queue.finish(engine, c, result)
    df = pd.read_sql("select batching, sampling, class_counts from results", engine)
    assert df.to_dict("records") == [
        {"batching": "reshuffle", "sampling": "stratified", "class_counts": '{"0": 7, "1": 7, "2": 6}'}]


def test_simultaneous_claims_each_take_a_different_job(engine):
    """Eight workers claim at the same moment from a queue of eight: each gets a job, no job goes
    to two of them, and none is told the queue is empty while jobs wait."""
    queue.enqueue(engine, "g", specs(8))
    start = threading.Barrier(8)
    got, errors = [], []

    def worker(i):
        try:
            start.wait()
            got.append(queue.claim(engine, f"w{i}"))
        except Exception as exc:  # noqa: BLE001  (reported below, with the others)
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert None not in got and len({c.job_id for c in got}) == 8
    assert count(engine, "select count(*) from jobs where status = 'running'") == 8
    assert count(engine, "select count(distinct job_id) from attempts") == 8


@pytest.mark.postgres
def test_a_claim_passes_over_the_job_another_claim_is_taking(pg_url):
    """Staged race: a second worker claims while the first has selected (and locked) its job but
    not yet marked it running. The second must pass over that row to the next job at once (FOR
    UPDATE SKIP LOCKED), neither wait for it (FOR UPDATE alone) nor take it too (no lock)."""
    engine = db.open_db(pg_url, create=True)
    other = sa.create_engine(pg_url, connect_args={"options": "-c lock_timeout=2000"})
    try:
        queue.enqueue(engine, "g", specs(2))
        second = []

        @sa.event.listens_for(engine, "before_cursor_execute")
        def race(conn, cursor, statement, params, context, executemany):
            if re.match(r"\s*INSERT INTO attempts", statement) and not second:
                second.append(queue.claim(other, "w2"))  # the first claim has chosen its job

        first = queue.claim(engine, "w1")
        sa.event.remove(engine, "before_cursor_execute", race)
        assert second, "the race was not staged"
        assert first is not None and second[0] is not None and first.job_id != second[0].job_id
        assert count(engine, "select count(*) from jobs where status = 'running'") == 2
    finally:
        engine.dispose()
        other.dispose()


def rows(engine, sql: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def test_a_claim_records_who_took_it_and_for_how_long(engine):
    import json
    import socket

    s = specs(2)
    queue.enqueue(engine, "g", s)
    before = time.time()
    c = queue.claim(engine, "w1", host="node7", pid=4242, device="cuda:1", versions={"torch": "2.13"},
                    git_rev="abc123", lease_seconds=120)
    assert (c.job_id, c.attempt, c.grid, c.worker, c.spec, c.spec_json) == (
        s[0].job_id, 1, "g", "w1", s[0], s[0].to_json())
    (attempt,) = rows(engine, f"select job_id, attempt, worker, host, pid, device, versions, git_rev, outcome "
                              f"from attempts where id = {c.attempt_id}")
    assert attempt[:6] + attempt[7:] == (c.job_id, 1, "w1", "node7", 4242, "cuda:1", "abc123", "running")
    assert json.loads(attempt[6]) == {"torch": "2.13"}
    (job,) = rows(engine, f"select status, attempts, attempt_id, worker, lease_expires, progress from jobs "
                          f"where id = '{c.job_id}'")
    assert job[:4] == ("running", 1, c.attempt_id, "w1") and job[5] is None
    assert before + 110 < job[4] < time.time() + 130  # the database's clock, 120 s ahead
    other = queue.claim(engine, "w2")
    assert rows(engine, f"select host, versions from attempts where id = {other.attempt_id}") == [
        (socket.gethostname(), "{}")]


def test_a_heartbeat_renews_the_lease_and_keeps_the_last_progress(engine):
    import json

    queue.enqueue(engine, "g", specs(1))
    c = queue.claim(engine, "w", lease_seconds=5)
    assert queue.heartbeat(engine, c, {"step": 3}, lease_seconds=300)
    assert queue.heartbeat(engine, c, None, lease_seconds=300)  # no news: the last progress stays
    (lease, progress), = rows(engine, "select lease_expires, progress from jobs")
    assert lease > time.time() + 250 and json.loads(progress) == {"step": 3}
    assert queue.release(engine, c)
    assert not queue.heartbeat(engine, c, {"step": 4})  # no longer its job


def test_a_permanent_failure_fails_at_once_and_keeps_one_line(engine):
    queue.enqueue(engine, "g", specs(2), max_attempts=3)
    c = queue.claim(engine, "w")
    long = "x" * 600
    assert queue.fail(engine, c, raised(PermanentJobError(f"{long}\nsecond line")), permanent=True) == "failed"
    (status, error, attempt_id), = rows(engine, f"select status, error, attempt_id from jobs where id = '{c.job_id}'")
    assert status == "failed" and error == f"PermanentJobError: {long}"[:queue.ERROR_CHARS] and attempt_id is None
    (outcome, tb), = rows(engine, f"select outcome, error from attempts where id = {c.attempt_id}")
    assert outcome == "failed" and "second line" in tb and "Traceback" in tb
    # a failure reported after the job was taken back is not the job's any more
    d = queue.claim(engine, "w", lease_seconds=0.1)
    time.sleep(0.3)
    assert queue.requeue_stale(engine) == 1
    assert queue.fail(engine, d, raised(RuntimeError("late"))) is None
    assert rows(engine, f"select status from jobs where id = '{d.job_id}'") == [("queued",)]
    assert rows(engine, f"select outcome from attempts where id = {d.attempt_id}") == [("lost",)]


def test_a_release_records_why_and_gives_the_attempt_back(engine):
    queue.enqueue(engine, "g", specs(1))
    c = queue.claim(engine, "w")
    assert queue.release(engine, c, "its stage-1 model must be made again", outcome=queue.Outcome.DEFERRED)
    assert rows(engine, "select status, attempts, attempt_id, worker, lease_expires from jobs") == [
        ("queued", 0, None, None, None)]
    assert rows(engine, "select outcome, error from attempts") == [("deferred", "its stage-1 model must be made again")]
    assert queue.count_attempts(engine, c.job_id, queue.Outcome.DEFERRED) == 1
    assert not queue.release(engine, c)  # twice: no longer its job
    assert queue.claim(engine, "w").attempt == 1


def test_a_lost_last_attempt_fails_the_job(engine):
    queue.enqueue(engine, "g", specs(1), max_attempts=1)
    c = queue.claim(engine, "w", lease_seconds=0.1)
    time.sleep(0.3)
    assert queue.requeue_stale(engine) == 1
    assert rows(engine, "select status, error, attempt_id, lease_expires from jobs") == [
        ("failed", "lease expired (worker lost)", None, None)]
    assert rows(engine, f"select outcome, error from attempts where id = {c.attempt_id}") == [
        ("lost", "lease expired: the worker stopped sending heartbeats")]
    assert queue.claim(engine, "w") is None


def test_finish_stores_the_wall_time_and_closes_the_attempt(engine):
    queue.enqueue(engine, "g", specs(1))
    c = queue.claim(engine, "w")
    assert queue.finish(engine, c, instant(c.spec, None), wall_seconds=12.5)
    assert rows(engine, "select wall_seconds from results") == [(12.5,)]
    assert rows(engine, "select status, error, lease_expires from jobs") == [("done", None, None)]
    (outcome, config, ended), = rows(engine, "select outcome, config, ended_at from attempts")
    assert outcome == "done" and config and ended is not None


def lost(engine, c):
    """The lease of c expires and the job goes back to the queue, as when its worker was cut off."""
    with engine.begin() as conn:
        conn.execute(sa.text("update jobs set lease_expires = 0"))
    assert queue.requeue_stale(engine) == 1


def test_a_kept_result_is_stored_late_under_its_own_attempt(engine):
    """finish(late=True): the worker kept the result while the database was away; its lease
    expired meanwhile. The result is stored and the job is done under the attempt that made it."""
    queue.enqueue(engine, "g", specs(1))
    c = queue.claim(engine, "w1")
    lost(engine, c)
    assert not queue.finish(engine, c, instant(c.spec, None))  # on time it would be refused
    assert queue.finish(engine, c, instant(c.spec, None), late=True)
    assert rows(engine, "select status, attempt_id, error, lease_expires from jobs") == [("done", c.attempt_id, None, None)]
    assert rows(engine, "select attempt_id from results") == [(c.attempt_id,)]
    assert rows(engine, f"select outcome from attempts where id = {c.attempt_id}") == [("done",)]
    assert not queue.finish(engine, c, instant(c.spec, None), late=True)  # stored once only


def test_a_kept_result_beats_the_worker_that_took_the_job_again(engine):
    queue.enqueue(engine, "g", specs(1))
    c = queue.claim(engine, "w1")
    lost(engine, c)
    again = queue.claim(engine, "w2")
    assert queue.finish(engine, c, instant(c.spec, None), late=True)
    assert rows(engine, "select outcome, error from attempts order by id") == [
        ("done", None),  # reopened when its result was stored, then closed as done
        ("abandoned", f"attempt {c.attempt_id}'s kept result was stored")]
    assert not queue.heartbeat(engine, again)  # the second worker learns it at its next beat
    assert count(engine, "select count(*) from results") == 1


def test_a_kept_result_is_refused_for_a_job_done_cancelled_or_unknown(engine):
    queue.enqueue(engine, "g", specs(3))
    done, cancelled, elsewhere = (queue.claim(engine, f"w{i}") for i in range(3))
    assert queue.finish(engine, done, instant(done.spec, None))
    assert not queue.finish(engine, done, instant(done.spec, None), late=True)
    queue.release(engine, cancelled)
    queue.cancel(engine, job_ids=[cancelled.job_id])
    assert not queue.finish(engine, cancelled, instant(cancelled.spec, None), late=True)
    unknown = replace(elsewhere, job_id="0" * 16)
    assert queue.finish(engine, unknown, instant(elsewhere.spec, None), late=True) is None
    assert count(engine, "select count(*) from results") == 1


def test_a_kept_result_whose_attempt_the_database_lacks_gets_one(engine):
    """A database restored from a copy taken before the claim: the attempt is written again, so
    the result still names the attempt it came from."""
    queue.enqueue(engine, "g", specs(1))
    c = queue.claim(engine, "w1", host="node7")
    with engine.begin() as conn:
        conn.execute(sa.text("update jobs set status = 'queued', attempt_id = NULL"))
        conn.execute(sa.text("delete from attempts"))
    assert queue.finish(engine, c, instant(c.spec, None), late=True)
    (attempt_id, job_id, attempt, worker, host, outcome), = rows(
        engine, "select id, job_id, attempt, worker, host, outcome from attempts")
    assert (job_id, attempt, worker, host, outcome) == (c.job_id, 1, "w1", "w1", "done")
    assert rows(engine, "select attempt_id from results") == [(attempt_id,)]
    assert rows(engine, "select status, attempt_id from jobs") == [("done", attempt_id)]


def test_a_done_job_stays_done_whatever_its_worker_reports_after(engine):
    """A worker that reports on its claim after the result was stored (a hand-back on shutdown, an
    error raised while cleaning up) no longer holds the job: it keeps its one result, is not run
    again, and its attempt stays done."""
    queue.enqueue(engine, "g", specs(1))
    c = queue.claim(engine, "w")
    assert queue.finish(engine, c, instant(c.spec, None))
    assert not queue.release(engine, c)
    assert queue.fail(engine, c, raised(RuntimeError("while cleaning up"))) is None
    assert rows(engine, "select status, attempts, error from jobs") == [("done", 1, None)]
    assert rows(engine, "select outcome from attempts") == [("done",)]
    assert queue.claim(engine, "w") is None
    assert count(engine, "select count(*) from results") == 1


def test_a_done_attempt_records_the_configuration_it_ran_with(engine, tmp_path):
    """The attempt keeps the runner's resolved configuration and what was stored of the result,
    values JSON has no type for (a path) as their text rather than losing the result."""
    queue.enqueue(engine, "g", specs(1))
    c = queue.claim(engine, "w")
    result = instant(c.spec, None)
    result.config = {"lr": 2e-5, "model_path": tmp_path / "models" / "m"}
    assert queue.finish(engine, c, result)
    (config,), = rows(engine, "select config from attempts")
    recorded = json.loads(config)
    assert recorded["lr"] == 2e-5 and recorded["model_path"] == str(tmp_path / "models" / "m")
    assert recorded["stored_predictions"] == "test_predictions (packed)"


def test_attempts_that_ended_without_a_result_record_no_configuration(engine):
    """Failed, handed-back and lost attempts ran no configuration to completion: none is recorded
    (NULL, not a JSON null)."""
    queue.enqueue(engine, "g", specs(3))
    failed, released, lost_one = (queue.claim(engine, f"w{i}") for i in range(3))
    queue.fail(engine, failed, raised(RuntimeError("boom")))
    queue.release(engine, released)
    with engine.begin() as conn:
        conn.execute(sa.text(f"update jobs set lease_expires = 0 where id = '{lost_one.job_id}'"))
    assert queue.requeue_stale(engine) == 1
    assert rows(engine, "select outcome, config from attempts order by id") == [
        ("failed", None), ("interrupted", None), ("lost", None)]


def test_a_kept_result_is_dropped_once_another_attempt_stored_one(engine):
    """A kept result only fills a job that has none: after another attempt's result was stored, it
    is dropped (False), even when the job was re-queued meanwhile to run again, and the stored
    result stays."""
    queue.enqueue(engine, "g", specs(1))
    kept = queue.claim(engine, "w1")
    lost(engine, kept)  # its worker kept the result while the database was away
    again = queue.claim(engine, "w2")
    assert queue.finish(engine, again, instant(again.spec, None))
    assert queue.redo(engine, [again.job_id], "its model is gone") == 1
    assert queue.finish(engine, kept, instant(kept.spec, None), late=True) is False
    assert rows(engine, "select status, attempt_id from jobs") == [("queued", None)]
    assert rows(engine, "select attempt_id from results") == [(again.attempt_id,)]
    assert rows(engine, "select outcome from attempts order by id") == [("lost",), ("done",)]


def test_an_attempt_written_again_names_the_host_of_the_worker(engine):
    """Workers are named host:pid:tag (harness.worker). A kept result stored into a database that
    lacks its attempt writes the attempt again, on the host the result came from."""
    queue.enqueue(engine, "g", specs(1))
    c = queue.claim(engine, "node7:4242:a1b2c3")
    with engine.begin() as conn:
        conn.execute(sa.text("update jobs set status = 'queued', attempt_id = NULL"))
        conn.execute(sa.text("delete from attempts"))
    assert queue.finish(engine, c, instant(c.spec, None), late=True)
    assert rows(engine, "select worker, host, outcome from attempts") == [
        ("node7:4242:a1b2c3", "node7", "done")]


def test_a_failed_attempt_keeps_the_traceback_as_python_prints_it(engine):
    queue.enqueue(engine, "g", specs(1))
    c = queue.claim(engine, "w")
    exc = raised(RuntimeError("boom"))
    queue.fail(engine, c, exc)
    printed = io.StringIO()
    traceback.print_exception(exc, file=printed)
    assert rows(engine, "select error from attempts") == [(printed.getvalue(),)]


def test_a_release_without_a_reason_says_the_worker_stopped(engine):
    """The worker hands a job back without a reason when it was asked to stop (harness.worker)."""
    queue.enqueue(engine, "g", specs(1))
    c = queue.claim(engine, "w")
    assert queue.release(engine, c)
    assert rows(engine, "select outcome, error from attempts") == [("interrupted", "worker stopped")]


def test_requeue_stale_takes_back_every_stale_job_and_counts_them(engine):
    queue.enqueue(engine, "g", specs(3))
    claims = [queue.claim(engine, f"w{i}") for i in range(3)]
    with engine.begin() as conn:
        conn.execute(sa.text(f"update jobs set lease_expires = 0 where id <> '{claims[2].job_id}'"))
    assert queue.requeue_stale(engine) == 2
    assert rows(engine, "select status, count(*) from jobs group by status order by status") == [
        ("queued", 2), ("running", 1)]
    assert rows(engine, "select outcome from attempts order by id") == [("lost",), ("lost",), ("running",)]


@pytest.mark.postgres
def test_requeue_stale_goes_on_past_a_job_renewed_under_it(pg_url):
    """Two stale jobs; the first that requeue_stale's guarded UPDATE reaches is renewed by its
    heartbeat just before. That job is left alone, and the other is still taken back."""
    engine = db.open_db(pg_url, create=True)
    other = sa.create_engine(pg_url, connect_args={"options": "-c lock_timeout=5000"})
    try:
        queue.enqueue(engine, "g", specs(2))
        claims = {c.job_id: c for c in (queue.claim(engine, f"w{i}") for i in range(2))}
        with engine.begin() as conn:
            conn.execute(sa.text("update jobs set lease_expires = 0"))
        renewed = []

        @sa.event.listens_for(engine, "before_cursor_execute")
        def race(conn, cursor, statement, params, context, executemany):
            if re.match(r"\s*UPDATE jobs SET status ?= ?CASE", statement) and not renewed:
                renewed.append(claims[params["job"]])
                assert queue.heartbeat(other, renewed[0], lease_seconds=60)

        assert queue.requeue_stale(engine) == 1
        sa.event.remove(engine, "before_cursor_execute", race)
        assert renewed, "the race was not staged"
        (taken,) = set(claims) - {renewed[0].job_id}
        assert rows(engine, "select id, status from jobs order by status") == [
            (taken, "queued"), (renewed[0].job_id, "running")]
        assert rows(engine, f"select outcome from attempts where id = {renewed[0].attempt_id}") == [("running",)]
        assert rows(engine, f"select outcome from attempts where id = {claims[taken].attempt_id}") == [("lost",)]
    finally:
        engine.dispose()
        other.dispose()
