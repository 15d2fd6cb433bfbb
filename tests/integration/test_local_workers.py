"""`harness work --workers K`: K real worker processes that split the cores and wait passively;
a single worker never sets more threads than cores."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from harness.runtime import threads
from test_workers import enqueue, rows, start_worker, wait_for


def test_two_workers_split_the_cores_and_share_the_jobs(sqlite_url, tmp_path):
    engine = enqueue(sqlite_url, 6)
    p = start_worker(sqlite_url, "threads_seen", "--workers", "2", "--until-empty", tmp=tmp_path)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert rows(engine, "select status, count(*) from jobs group by status") == [("done", 6)]
    assert rows(engine, "select count(distinct pid) from attempts")[0][0] == 2
    seen = dict(rows(engine, "select name, min(value) from metrics group by name"))
    assert seen == {"threads": max(1, threads.cores() // 2), "passive": 1.0}
    assert rows(engine, "select max(value) from metrics where name = 'threads'")[0][0] == seen["threads"]


def test_one_worker_never_uses_more_threads_than_cores(sqlite_url, tmp_path):
    engine = enqueue(sqlite_url, 1)
    p = start_worker(sqlite_url, "threads_seen", "--until-empty", tmp=tmp_path, OMP_NUM_THREADS="64")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert rows(engine, "select value from metrics where name = 'threads'") == [(threads.cores(),)]


def test_an_explicit_wait_policy_is_kept():
    env = threads.worker_environment(2, {"OMP_WAIT_POLICY": "ACTIVE"})
    assert env["OMP_WAIT_POLICY"] == "ACTIVE"
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == str(max(1, threads.cores() // 2))
    assert threads.worker_environment(4 * threads.cores(), {})["OMP_NUM_THREADS"] == "1"


def test_sigterm_reaches_every_worker_and_their_jobs_go_back(sqlite_url, tmp_path):
    engine = enqueue(sqlite_url, 2)
    p = start_worker(sqlite_url, "slow", "--workers", "2", tmp=tmp_path, HARNESS_TEST_SLOW_SECONDS="60")
    wait_for(lambda: len(list((tmp_path / "runs").rglob("started.*"))) == 2, 120, "both jobs started")
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert rows(engine, "select status, count(*) from jobs group by status") == [("queued", 2)]
    assert rows(engine, "select outcome, count(*) from attempts group by outcome") == [("interrupted", 2)]
