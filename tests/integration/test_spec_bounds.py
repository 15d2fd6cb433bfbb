"""A job queued before a bound existed (by an older harness, or written by hand) with a τ or a
noise temperature outside today's bounds fails on its first attempt with the bound's reason,
instead of storing a result whose training loss is 1e29."""

from __future__ import annotations

import dataclasses

import pytest

from harness.protocol.spec import SMALL_MODEL, JobSpec
from harness.store import db, queue
from harness.worker import Worker, WorkerOptions


@pytest.mark.parametrize("field,value,reason", [
    ("tau", 1e-30, "τ (--tau) must be ≥ 0.01"),
    ("noise", 2.5, "must be 0 (clean) or 0 < T ≤ 2"),
])
def test_a_queued_job_outside_the_bounds_fails_once_with_the_reason(field, value, reason, tmp_path):
    valid = JobSpec.make(task="sst2", n=8, seed=0, loss="ce+scl", model=SMALL_MODEL, epochs=1,
                         max_length=32, val_size=16, noise=0.3)
    spec = dataclasses.replace(valid, **{field: value})  # as an older harness stored it
    engine = db.open_db(f"sqlite:///{tmp_path / 'r.db'}", create=True)
    queue.enqueue(engine, "g", [spec])
    Worker(engine, WorkerOptions(until_empty=True, runs_dir=tmp_path / "runs", quiet=True)).run()
    with engine.connect() as conn:
        status, attempts, error = conn.exec_driver_sql("select status, attempts, error from jobs").one()
        results = conn.exec_driver_sql("select count(*) from results").scalar_one()
    assert (status, attempts, results) == ("failed", 1, 0)
    assert error.startswith("HarnessError: ") and reason in error, error
