"""Which finished jobs were trained on other data than the mirror holds now, on real databases
(SQLite files and the local PostgreSQL server) and real files in the mirror's layout."""

from __future__ import annotations

import shutil

import pytest

from harness.protocol.fingerprint import mirror_fingerprint
from harness.protocol.spec import JobSpec
from harness.store import db, provenance, queue
from runners import _result

from paths import DATA_DIR


@pytest.fixture
def mirror(tmp_path):
    root = tmp_path / "data"
    for task in ("trec", "cr"):
        shutil.copytree(DATA_DIR / task, root / task)
    return root


def finish(engine, fingerprint: str | None, **kw) -> str:
    """Enqueue one job, claim it and store a result whose attempt recorded `fingerprint`."""
    spec = JobSpec.make(n=8, loss="ce", model="m", **kw)
    queue.enqueue(engine, "g", [spec])
    claim = queue.claim(engine, "w")
    assert claim.job_id == spec.job_id
    result = _result(spec)
    result.config = {} if fingerprint is None else {"data_fingerprint": fingerprint}
    assert queue.finish(engine, claim, result)
    return spec.job_id


def test_only_done_jobs_with_a_recorded_other_fingerprint_are_changed(db_url, mirror):
    engine = db.open_db(db_url, create=True)
    trec, cr = mirror_fingerprint("trec", mirror), mirror_fingerprint("cr", mirror)
    assert trec and cr and trec != cr
    same = finish(engine, trec, task="trec", seed=0)
    other = finish(engine, "0123456789abcdef", task="trec", seed=1)
    from_hub = finish(engine, "hub:0123456789abcdef", task="trec", seed=2)
    before_fingerprints = finish(engine, None, task="trec", seed=3)
    cr_job = finish(engine, cr, task="cr", seed=0)

    changes = provenance.changed_data(engine, data_dir=mirror)
    assert [(c.job_id, c.task, c.trained_on, c.now) for c in changes] == [
        (other, "trec", "0123456789abcdef", trec)]
    assert provenance.changed_data(engine, job_ids=[same, from_hub, before_fingerprints, cr_job],
                                   data_dir=mirror) == []
    assert provenance.changed_data(engine, grid="another", data_dir=mirror) == []

    (mirror / "cr" / "train.jsonl").write_text(
        (mirror / "cr" / "train.jsonl").read_text().replace("good", "bad", 1))
    changes = provenance.changed_data(engine, data_dir=mirror)
    assert sorted(c.job_id for c in changes) == sorted([other, cr_job])
    assert provenance.describe(changes).startswith(
        "2 finished jobs were trained on other data than the mirror holds now (cr 1, trec 1); ")
    assert provenance.requeue(engine, changes) == 2
    assert provenance.requeue(engine, changes) == 0  # only done jobs move
    with engine.connect() as conn:
        status = dict(conn.exec_driver_sql("select id, status from jobs").all())
        results = conn.exec_driver_sql("select count(*) from results").scalar_one()
    assert {j for j, s in status.items() if s == "queued"} == {other, cr_job}
    assert results == 5  # the old results stay until the new runs replace them
    assert provenance.changed_data(engine, data_dir=mirror) == []  # queued: no longer flagged


def test_a_mirror_without_the_task_flags_nothing(db_url, mirror, tmp_path):
    engine = db.open_db(db_url, create=True)
    finish(engine, "0123456789abcdef", task="trec", seed=0)
    shutil.rmtree(mirror / "trec")
    assert provenance.changed_data(engine, data_dir=mirror) == []
    assert provenance.changed_data(engine, data_dir=tmp_path / "no-such-folder") == []
