"""Jobs that start from another job's model (transfer, Table 7): queue verbs on both backends, then
the real worker, the real SQLite file and the real 3-layer MiniLM on a tiny stage 1 / stage 2."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import sqlalchemy as sa

from harness.training import artifacts
from harness.store import db, dependencies, queue
from harness.training.artifacts import Artifact
from harness.training.runner import RunResult
from harness.protocol.spec import SMALL_MODEL, JobSpec
from harness.worker import Worker, WorkerOptions

TINY = dict(model=SMALL_MODEL, max_length=32, lr=1e-4, val_size=32, batch_size=8)


def stage1(loss: str = "ce", epochs: int = 2) -> JobSpec:
    extra = dict(lam=0.9, tau=0.3) if loss == "ce+scl" else {}
    return JobSpec.make(task="sst2", n=32, seed=0, loss=loss, epochs=epochs, **TINY, **extra)


def stage2(source: JobSpec, task: str, seed: int) -> JobSpec:
    extra = dict(lam=0.9, tau=0.3) if source.loss == "ce+scl" else {}
    return JobSpec.make(task=task, n=8, per_class=4, seed=seed, loss=source.loss, epochs=1,
                        init_from=source.job_id, **TINY, **extra)


def rows(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def add(engine, *specs: JobSpec) -> None:
    queue.enqueue(engine, "transfer", specs, depends={s.job_id: s.init_from for s in specs if s.init_from})


def work(engine, tmp_path, display=None) -> Worker:
    w = Worker(engine, WorkerOptions(until_empty=True, runs_dir=tmp_path / "runs", quiet=True),
               display=display)
    w.run()
    return w


# ---- queue verbs, both backends ---------------------------------------------------------------

def _result(score: float, artifact: Artifact | None = None) -> RunResult:
    return RunResult(metric="accuracy", val_score=score, test_score=score, val_accuracy=score,
                     test_accuracy=score, best_epoch=1, n_train=4, n_test=4, train_seconds=0.0,
                     scl_batch_size=4, metrics=[("validation", 1, "accuracy", score)],
                     predictions=[(i, i % 2, 1) for i in range(4)], train_examples=[1, 2],
                     artifact=artifact)


def test_redo_requeues_once_and_the_new_result_replaces_the_old(db_url):
    engine = db.open_db(db_url, create=True)
    s1 = JobSpec.make(task="sst2", n=32, seed=0, model="m")
    dependents = [stage2(s1, "cr", seed) for seed in range(3)]
    add(engine, s1, *dependents)
    assert dependencies.has_dependents(engine, s1.job_id)
    assert not dependencies.has_dependents(engine, dependents[0].job_id)
    c = queue.claim(engine, "w")
    assert c.job_id == s1.job_id
    art = Artifact(kind=artifacts.MODEL, path="/nowhere/model", sha256="0" * 64, bytes=1)
    assert queue.finish(engine, c, _result(0.5, art))
    assert dependencies.stored_model(engine, s1.job_id) == ("/nowhere/model", "0" * 64)
    # three dependents notice the model is gone: the source is re-queued exactly once
    assert [dependencies.redo(engine, s1.job_id, "gone") for _ in dependents] == [True, False, False]
    assert rows(engine, "select status, attempts from jobs where id = :id", id=s1.job_id) == [("queued", 0)]
    claim = queue.claim(engine, "w")
    assert claim.job_id == s1.job_id
    assert queue.claim(engine, "w2") is None  # stage 2 waits again: its source is not done
    assert queue.finish(engine, claim, _result(0.75, replace(art, sha256="1" * 64)))
    c = claim.attempt_id
    assert rows(engine, "select test_score, attempt_id from results") == [(0.75, c)]
    assert rows(engine, "select distinct attempt_id from metrics") == [(c,)]
    assert rows(engine, "select distinct attempt_id from test_predictions") == [(c,)]
    assert rows(engine, "select count(*) from train_examples") == [(1,)]
    assert dependencies.stored_model(engine, s1.job_id) == ("/nowhere/model", "1" * 64)
    assert rows(engine, "select count(*) from artifacts") == [(1,)]


# ---- the real worker, model and data ------------------------------------------------------------

def test_stage_2_waits_for_stage_1_which_trains_once_and_is_reused(sqlite_url, tmp_path):
    engine = db.open_db(sqlite_url, create=True)
    s1 = stage1()
    dependents = [stage2(s1, "yelp_polarity", 0), stage2(s1, "yelp_polarity", 1)]
    add(engine, *dependents)  # enqueued first, so the queue order alone would run them first
    add(engine, s1)
    c = queue.claim(engine, "probe")
    assert c.job_id == s1.job_id  # stage 2 cannot be claimed before stage 1 is done
    queue.release(engine, c)

    work(engine, tmp_path)
    assert rows(engine, "select status, count(*) from jobs group by status") == [("done", 3)]
    assert rows(engine, "select outcome from attempts where job_id = :id order by id", id=s1.job_id) == [
        ("interrupted",), ("done",)]  # the probe's claim, then the one training
    order = [r[0] for r in rows(engine, "select job_id from attempts where outcome = 'done' order by id")]
    assert order[0] == s1.job_id
    path, sha = dependencies.stored_model(engine, s1.job_id)
    assert Path(path) == (tmp_path / "runs" / s1.job_id / "model").resolve()
    assert artifacts.folder_sha256(Path(path))[0] == sha
    configs = [json.loads(r[0]) for r in rows(
        engine, "select config from attempts where job_id != :id and outcome = 'done'", id=s1.job_id)]
    assert len(configs) == 2
    assert all(c["init_model_sha256"] == sha and c["init_head"] == artifacts.HEAD_KEPT for c in configs)
    assert all(c["init_from"] == s1.job_id and c["saved_model"] is None for c in configs)
    # only the job others depend on keeps a model
    assert rows(engine, "select job_id from artifacts") == [(s1.job_id,)]
    assert rows(engine, "select distinct scl_batch_size from results order by 1") == [(8,)]


def test_interrupted_stage_1_resumes_then_stage_2_runs(sqlite_url, tmp_path):
    engine = db.open_db(sqlite_url, create=True)
    s1 = stage1(epochs=2)
    s2 = stage2(s1, "yelp_polarity", 0)
    add(engine, s1, s2)

    first = {}

    def stop_in_epoch_2(label, p):  # the worker is asked to stop once epoch 1 is checkpointed
        if p.phase == "train" and p.epoch == 2:
            first["worker"].stop_requested.set()

    first["worker"] = Worker(engine, WorkerOptions(until_empty=True, runs_dir=tmp_path / "runs", quiet=True),
                             display=stop_in_epoch_2)
    first["worker"].run()
    assert rows(engine, "select status, attempts from jobs where id = :id", id=s1.job_id) == [("queued", 0)]
    assert (tmp_path / "runs" / s1.job_id / "checkpoint.pt").is_file()

    work(engine, tmp_path)
    assert rows(engine, "select status, count(*) from jobs group by status") == [("done", 2)]
    runs1 = rows(engine, "select outcome, config from attempts where job_id = :id order by id", id=s1.job_id)
    assert [o for o, _ in runs1] == ["interrupted", "done"]
    assert json.loads(runs1[1][1])["resumed_from_epoch"] == 1
    assert not (tmp_path / "runs" / s1.job_id / "checkpoint.pt").exists()
    assert rows(engine, "select count(*) from results where job_id = :id", id=s1.job_id) == [(1,)]


def test_a_deleted_stage_1_model_reruns_stage_1_not_fails_stage_2(sqlite_url, tmp_path):
    engine = db.open_db(sqlite_url, create=True)
    s1 = stage1(loss="ce+scl", epochs=1)
    add(engine, s1, stage2(s1, "yelp_polarity", 0))
    work(engine, tmp_path)
    (old_attempt,) = rows(engine, "select attempt_id from results where job_id = :id", id=s1.job_id)[0]
    path, _ = dependencies.stored_model(engine, s1.job_id)

    # the model folder is lost; two more stage-2 jobs are claimed by two workers and both notice
    shutil.rmtree(path)
    late = [stage2(s1, "yelp_polarity", 1), stage2(s1, "yelp_polarity", 2)]
    add(engine, *late)
    workers = [Worker(engine, WorkerOptions(runs_dir=tmp_path / "runs", quiet=True)) for _ in late]
    claims = [queue.claim(engine, w.name) for w in workers]
    assert {c.job_id for c in claims} == {s.job_id for s in late}
    for w, c in zip(workers, claims):
        w.run_one(c)
    assert rows(engine, "select status, attempts from jobs where id = :id", id=s1.job_id) == [("queued", 0)]
    for s in late:
        assert rows(engine, "select status, attempts from jobs where id = :id", id=s.job_id) == [("queued", 0)]
    assert rows(engine, "select count(*) from attempts where outcome = 'deferred'") == [(2,)]

    work(engine, tmp_path)
    assert rows(engine, "select status, count(*) from jobs group by status") == [("done", 4)]
    assert rows(engine, "select outcome from attempts where job_id = :id order by id", id=s1.job_id) == [
        ("done",), ("done",)]  # trained again once, however many dependents noticed
    (new_attempt,) = rows(engine, "select attempt_id from results where job_id = :id", id=s1.job_id)[0]
    assert new_attempt != old_attempt and rows(engine, "select count(*) from results") == [(4,)]
    assert rows(engine, "select distinct attempt_id from metrics where job_id = :id",
                id=s1.job_id) == [(new_attempt,)]
    path, sha = dependencies.stored_model(engine, s1.job_id)
    assert artifacts.folder_sha256(Path(path))[0] == sha
    for s in late:
        assert rows(engine, "select attempts from jobs where id = :id", id=s.job_id) == [(1,)]

    # a changed file is caught by the hash the same way
    (Path(path) / artifacts.MANIFEST_FILE).write_text("{}")
    assert "changed" in artifacts.problem(path, sha)


def test_a_head_of_another_size_is_drawn_afresh(tmp_path):
    from harness.training.models import build_model

    two = build_model(SMALL_MODEL, 2, seed=0)
    art = artifacts.save_model(two, tmp_path / "model", dict(model=SMALL_MODEL))
    six = build_model(SMALL_MODEL, 6, seed=1)
    head_before = six.classifier.weight.detach().clone()
    assert artifacts.load_into(six, Path(art.path)) == artifacts.HEAD_REINITIALISED
    assert six.classifier.weight.equal(head_before)
    name = next(k for k in two.state_dict() if "encoder" in k)
    assert six.state_dict()[name].equal(two.state_dict()[name])
