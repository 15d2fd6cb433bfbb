"""Worker processes against real databases: many at once, killed, and stopped by signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from harness.store import db, queue
from harness.protocol.spec import JobSpec

TESTS = Path(__file__).resolve().parent


def worker_env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(TESTS), PYTHONUNBUFFERED="1", **extra)
    return env


def start_worker(url: str, runner: str, *args: str, tmp: Path, **env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "work", "--db", url, "--runner", f"runners:{runner}",
         "--runs-dir", str(tmp / "runs"), "--quiet", *args],
        env=worker_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rows(engine, sql: str):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).all()


def enqueue(url: str, k: int) -> sa.Engine:
    engine = db.open_db(url, create=True)
    queue.enqueue(engine, "g", [JobSpec.make(task="sst2", n=20, seed=i, loss="ce", model="m")
                                for i in range(k)])
    return engine


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_eight_workers_drain_2000_jobs_each_claimed_once(backend, tmp_path, request):
    url = f"sqlite:///{tmp_path / 'r.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    engine = enqueue(url, 2000)
    procs = [start_worker(url, "instant", "--until-empty", tmp=tmp_path) for _ in range(8)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert "Traceback" not in err and "FAILED" not in err, err
    assert rows(engine, "select count(*) from results")[0][0] == 2000
    assert rows(engine, "select count(*) from attempts")[0][0] == 2000  # every job claimed exactly once
    assert rows(engine, "select count(distinct job_id) from attempts")[0][0] == 2000
    assert rows(engine, "select status, count(*) from jobs group by status") == [("done", 2000)]
    workers = rows(engine, "select count(distinct worker) from attempts")[0][0]
    assert workers >= 2  # the work was really shared


def wait_for(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_worker_job_runs_again_after_its_lease_expires(db_url, tmp_path):
    engine = enqueue(db_url, 1)
    (job_id,) = rows(engine, "select id from jobs")[0]
    lease = 3.0
    victim = start_worker(db_url, "slow", "--lease-seconds", str(lease), tmp=tmp_path,
                          HARNESS_TEST_SLOW_SECONDS="60")
    wait_for(lambda: any((tmp_path / "runs" / job_id).glob("started.*")), what="job start")
    victim.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    victim.wait()
    assert rows(engine, "select status from jobs") == [("running",)]
    # while the lease is valid, a second worker's loop (requeue stale leases, then claim) finds
    # nothing; a heartbeat renewed the lease at most lease/4 before the kill
    stale, claimed = queue.requeue_stale(engine), queue.claim(engine, "second")
    assert time.monotonic() - killed < 0.75 * lease, "too slow to probe inside the lease"
    assert stale == 0 and claimed is None
    assert rows(engine, "select status, attempts from jobs") == [("running", 1)]
    # once it expires, a worker takes the job
    time.sleep(lease + 0.5)
    rescuer = start_worker(db_url, "slow", "--until-empty", tmp=tmp_path, HARNESS_TEST_SLOW_SECONDS="0.5")
    _, err = rescuer.communicate(timeout=120)
    assert rescuer.returncode == 0, err
    assert rows(engine, "select count(*) from results") == [(1,)]
    assert rows(engine, "select attempt, outcome from attempts order by attempt") == [(1, "lost"), (2, "done")]
    assert rows(engine, "select status, attempts from jobs") == [("done", 2)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_hands_the_job_back(sig, sqlite_url, tmp_path):
    engine = enqueue(sqlite_url, 1)
    (job_id,) = rows(engine, "select id from jobs")[0]
    w = start_worker(sqlite_url, "slow", tmp=tmp_path, HARNESS_TEST_SLOW_SECONDS="60")
    wait_for(lambda: any((tmp_path / "runs" / job_id).glob("started.*")), what="job start")
    w.send_signal(sig)
    _, err = w.communicate(timeout=60)
    assert w.returncode == 0, err
    assert rows(engine, "select status, attempts from jobs") == [("queued", 0)]
    assert rows(engine, "select outcome from attempts") == [("interrupted",)]
    assert rows(engine, "select count(*) from results") == [(0,)]


def test_failures_are_retried_then_recorded(sqlite_url, tmp_path):
    engine = enqueue(sqlite_url, 1)
    w = start_worker(sqlite_url, "crash", "--until-empty", tmp=tmp_path)
    _, err = w.communicate(timeout=120)
    assert w.returncode == 0, err
    assert rows(engine, "select status, attempts, error from jobs") == [
        ("failed", queue.MAX_ATTEMPTS, "RuntimeError: boom: a transient failure")]
    assert rows(engine, "select count(*) from results") == [(0,)]


def test_nan_loss_fails_at_once(sqlite_url, tmp_path):
    engine = enqueue(sqlite_url, 1)
    w = start_worker(sqlite_url, "nan", "--until-empty", tmp=tmp_path)
    w.communicate(timeout=120)
    assert rows(engine, "select status, attempts from jobs") == [("failed", 1)]
    assert "non-finite loss" in rows(engine, "select error from jobs")[0][0]


def test_max_jobs(sqlite_url, tmp_path):
    engine = enqueue(sqlite_url, 5)
    w = start_worker(sqlite_url, "instant", "--max-jobs", "2", tmp=tmp_path)
    w.communicate(timeout=120)
    assert rows(engine, "select count(*) from results") == [(2,)]


def test_a_gpu_fault_stops_the_worker_not_the_queue(sqlite_url, tmp_path):
    from harness.runtime.device import DEVICE_FAULT_EXIT

    engine = enqueue(sqlite_url, 3)
    w = start_worker(sqlite_url, "gpu_fault", "--until-empty", tmp=tmp_path)
    _, err = w.communicate(timeout=120)
    assert w.returncode == DEVICE_FAULT_EXIT, err
    assert "error:" in err and "restart the worker" in err and "Traceback" not in err
    # the job went back without using an attempt; the other jobs were never claimed
    assert rows(engine, "select status, attempts from jobs") == [("queued", 0)] * 3
    assert rows(engine, "select outcome from attempts") == [("device-fault",)]


def test_a_job_that_faults_every_gpu_fails_after_three(sqlite_url, tmp_path):
    from harness.worker import MAX_DEVICE_FAULTS

    engine = enqueue(sqlite_url, 1)
    for _ in range(MAX_DEVICE_FAULTS):
        w = start_worker(sqlite_url, "gpu_fault", "--until-empty", tmp=tmp_path)
        w.communicate(timeout=120)
    assert rows(engine, "select status from jobs") == [("failed",)]
    assert "GPU failed under this job 3 times" in rows(engine, "select error from jobs")[0][0]
    assert rows(engine, "select outcome from attempts order by id") == [
        ("device-fault",), ("device-fault",), ("failed",)]


def test_memory_is_freed_after_a_failed_job(sqlite_url, tmp_path, monkeypatch):
    import harness.worker as worker_module
    from runners import crash, instant

    engine = enqueue(sqlite_url, 2)
    freed = []
    monkeypatch.setattr(worker_module, "free_memory", freed.append)
    opts = worker_module.WorkerOptions(until_empty=True, runs_dir=tmp_path / "runs", quiet=True, max_jobs=1)
    worker_module.Worker(engine, opts, runner=crash).run()
    assert freed == ["cpu"]
    worker_module.Worker(engine, opts, runner=instant).run()
    assert freed == ["cpu"]  # not after a job that succeeded
