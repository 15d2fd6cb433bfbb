"""Faults around a worker: a database that goes away (PostgreSQL behind a cut connection), SQLite
files that change under it (deleted, replaced, truncated, corrupt, immutable), another program's
file, expired leases, and which failures are retried. Real files, the real server, real workers."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

import runners
from harness.store import db, pending, queue
from harness import worker as worker_mod
from harness.cli import app
from harness.errors import DatabaseUnavailable, DataError, ModelError, PermanentJobError
from harness.store.pending import PENDING_FILE
from harness.protocol.spec import JobSpec
from harness.worker import Worker, WorkerOptions, is_permanent
from tcp_proxy import TcpProxy
from test_workers import start_worker

from paths import SMALL_MODEL_PATH

cli = CliRunner()


def specs(k: int) -> list[JobSpec]:
    return [JobSpec.make(task="sst2", n=20, seed=i, loss="ce", model="m") for i in range(k)]


def rows(engine, sql: str):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).all()


def opts(tmp_path, **kw) -> WorkerOptions:
    return WorkerOptions(until_empty=True, runs_dir=tmp_path / "runs", quiet=True, **kw)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ---- item 4: what is retried ------------------------------------------------------------------

def test_only_what_can_change_is_retried():
    assert not is_permanent(DatabaseUnavailable("server gone"))
    assert not is_permanent(RuntimeError("CUDA error: an illegal memory access"))
    assert is_permanent(DataError("x.jsonl:3: label 'a' is a str"))
    assert is_permanent(ModelError("model m: not found"))
    assert is_permanent(PermanentJobError("non-finite loss"))


def test_a_model_whose_checkpoint_lacks_its_encoder_fails_once(tmp_path, sqlite_url):
    """A GPT-2 config.json over BERT weights: transformers would train a random encoder and the
    job would be marked done. It fails on its first attempt, naming the mismatch."""
    folder = tmp_path / "gpt2-over-bert"
    shutil.copytree(SMALL_MODEL_PATH, folder)
    (folder / "config.json").write_text(json.dumps(
        {"model_type": "gpt2", "n_layer": 3, "n_embd": 384, "n_head": 12, "vocab_size": 30522,
         "n_positions": 512}))
    engine = db.open_db(sqlite_url, create=True)
    spec = JobSpec.make(task="sst2", n=8, seed=0, model=str(folder), epochs=1, max_length=32,
                        val_size=16)
    queue.enqueue(engine, "g", [spec])
    w = Worker(engine, opts(tmp_path))
    w.run()
    status, attempts, error = rows(engine, "select status, attempts, error from jobs")[0]
    assert (status, attempts) == ("failed", 1)
    assert "encoder" in error and "GPT2Config" in error
    assert rows(engine, "select count(*) from results")[0][0] == 0


# ---- item 5: a trained result is never thrown away ------------------------------------------

@pytest.fixture
def proxied_pg(pg_url):
    """(url through a proxy that a test can cut, the direct url, the proxy)."""
    u = sa.engine.make_url(pg_url)
    proxy = TcpProxy((u.host, u.port or 5432)).start()
    yield u.set(port=proxy.port).render_as_string(hide_password=False), pg_url, proxy
    proxy.stop()


@pytest.mark.postgres
def test_result_kept_when_the_database_is_down_and_stored_at_next_contact(proxied_pg, tmp_path):
    url, direct_url, proxy = proxied_pg
    engine = db.open_db(url, create=True)
    (spec,) = specs(1)
    queue.enqueue(engine, "g", [spec])

    def train_then_lose_the_database(s, ctx):
        proxy.stop()  # PostgreSQL "goes down" while the job trains
        return runners._result(s)

    w = Worker(engine, opts(tmp_path, max_jobs=1, lease_seconds=2.0), runner=train_then_lose_the_database)
    w.run()
    kept = tmp_path / "runs" / spec.job_id / PENDING_FILE
    assert w.kept == 1 and kept.is_file()
    direct = db.open_db(direct_url)
    assert rows(direct, "select count(*) from results")[0][0] == 0

    proxy.port, proxy_back = proxy.port, TcpProxy(proxy.target, port=proxy.port).start()
    try:
        trained = []
        w2 = Worker(engine, opts(tmp_path), runner=lambda s, ctx: trained.append(s) or runners._result(s))
        w2.run()
    finally:
        proxy_back.stop()
    assert trained == []  # not trained again
    assert not kept.exists()
    assert rows(direct, "select status from jobs") == [("done",)]
    (attempt_id,) = rows(direct, "select attempt_id from results")[0]
    assert rows(direct, f"select attempt, outcome from attempts where id = {attempt_id}") == [(1, "done")]
    direct.dispose()


@pytest.mark.postgres
def test_result_stored_by_retrying_when_the_database_returns_within_the_lease(proxied_pg, tmp_path):
    url, direct_url, proxy = proxied_pg
    engine = db.open_db(url, create=True)
    queue.enqueue(engine, "g", specs(1))
    back = []

    def blip(s, ctx):
        proxy.stop()
        timer = threading.Timer(1.5, lambda: back.append(TcpProxy(proxy.target, port=proxy.port).start()))
        timer.start()
        return runners._result(s)

    try:
        w = Worker(engine, opts(tmp_path, max_jobs=1, lease_seconds=20.0), runner=blip)
        w.run()
    finally:
        time.sleep(1.6)
        for p in back:
            p.stop()
    assert w.done == 1 and w.kept == 0
    assert not list((tmp_path / "runs").glob(f"*/{PENDING_FILE}"))
    direct = db.open_db(direct_url)
    assert rows(direct, "select count(*) from results")[0][0] == 1
    direct.dispose()


@pytest.mark.postgres
def test_an_idle_worker_waits_for_the_database_then_exits(proxied_pg, tmp_path, monkeypatch):
    url, _, proxy = proxied_pg
    engine = db.open_db(url, create=True)
    proxy.stop()
    monkeypatch.setattr(worker_mod, "DB_OUTAGE_SECONDS", 2.0)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable):
        Worker(engine, opts(tmp_path), runner=runners.instant).run()
    assert time.monotonic() - started >= 1.5  # it waited: an unreachable database is transient


def test_a_result_kept_by_a_harness_that_passed_records_as_dicts_is_stored(sqlite_url, tmp_path):
    """Before RunResult carried typed NoiseSet and Artifact records it carried their dicts; a
    result kept then, in a runs folder that outlived the upgrade, is still stored whole."""
    engine = db.open_db(sqlite_url, create=True)
    (spec,) = specs(1)
    queue.enqueue(engine, "g", [spec])
    c = queue.claim(engine, "w", lease_seconds=0.1)
    result = runners._result(spec)
    result.artifact = dict(kind="model", path="/nowhere/model", sha256="0" * 64, bytes=1)
    result.noise_set = dict(key="k", backend="firefox-pt", temperature=0.3, seed=0, examples=20,
                            changed_share=0.5, mean_edit_distance=3.0, seconds=1.0, cached=False,
                            path="/nowhere/noise.json")
    (tmp_path / "runs" / spec.job_id).mkdir(parents=True)
    pending.keep(tmp_path / "runs" / spec.job_id, engine, c, result, 1.0)
    assert pending.store_kept(engine, tmp_path / "runs") == [(spec.job_id, True)]
    assert rows(engine, "select path, sha256 from artifacts") == [("/nowhere/model", "0" * 64)]
    assert rows(engine, "select key, temperature, made_by_job from noise_sets") == [("k", 0.3, spec.job_id)]


def test_a_result_kept_when_the_claim_said_run_id_is_stored_under_its_attempt(sqlite_url, tmp_path):
    """Before the `runs` table became `attempts`, a Claim named its attempt `run_id`; a result kept
    then, in a runs folder that outlived the upgrade, is still stored under that attempt."""
    engine = db.open_db(sqlite_url, create=True)
    (spec,) = specs(1)
    queue.enqueue(engine, "g", [spec])
    c = queue.claim(engine, "w", lease_seconds=0.1)
    old = copy.copy(c)
    vars(old)["run_id"] = vars(old).pop("attempt_id")  # the Claim as that harness pickled it
    (tmp_path / "runs" / spec.job_id).mkdir(parents=True)
    pending.keep(tmp_path / "runs" / spec.job_id, engine, old, runners._result(spec), 1.0)
    assert pending.store_kept(engine, tmp_path / "runs") == [(spec.job_id, True)]
    assert rows(engine, "select attempt_id from results") == [(c.attempt_id,)]
    assert rows(engine, "select outcome from attempts") == [("done",)]


def test_a_result_kept_before_harness_was_split_into_packages_is_stored(tmp_path, monkeypatch):
    """A pending-result.pkl written by the harness of one flat harness/ folder (its pickle names
    harness.queue.Claim, harness.runner.RunResult, harness.spec.JobSpec, ...): the split harness
    loads it and stores it, records and all. The fixture was written by that harness against
    `sqlite:///pending-fixture.db` for job fewshot sst2 N=20 seed 3 CE+SCL, attempt 1."""
    fixture = Path(__file__).parent / "fixtures" / "pending-result-before-packages.pkl"
    assert b"harness.runner" in fixture.read_bytes()  # the old module paths really are in it
    monkeypatch.chdir(tmp_path)
    engine = db.open_db("sqlite:///pending-fixture.db", create=True)
    spec = JobSpec.make(task="sst2", n=20, seed=3, loss="ce+scl")
    queue.enqueue(engine, "fewshot", [spec])
    c = queue.claim(engine, "w", lease_seconds=0.1)
    assert c.attempt_id == 1
    (tmp_path / "runs" / spec.job_id).mkdir(parents=True)
    shutil.copy(fixture, tmp_path / "runs" / spec.job_id / PENDING_FILE)
    assert pending.store_kept(engine, tmp_path / "runs") == [(spec.job_id, True)]
    assert rows(engine, "select job_id, attempt_id from results") == [(spec.job_id, 1)]
    assert rows(engine, "select path from artifacts") == [("/nowhere/model",)]
    assert rows(engine, "select key, made_by_job from noise_sets") == [("k", spec.job_id)]
    assert not (tmp_path / "runs" / spec.job_id / PENDING_FILE).exists()


# ---- item 6: SQLite files that change under a worker -----------------------------------------

FILE_FAULTS = {"unlink_db": "was deleted", "replace_db": "was replaced",
               "truncate_db": "unusable", "corrupt_db": "malformed"}


@pytest.mark.parametrize("runner", list(FILE_FAULTS))
def test_worker_stops_with_one_line_and_keeps_the_result(runner, tmp_path):
    path = tmp_path / "r.db"
    engine = db.open_db(f"sqlite:///{path}", create=True)
    queue.enqueue(engine, "g", specs(2))
    engine.dispose()
    shutil.copyfile(path, tmp_path / "backup.db")
    p = start_worker(f"sqlite:///{path}", runner, "--until-empty", tmp=tmp_path,
                     HARNESS_TEST_DB_FILE=str(path))
    _, err = p.communicate(timeout=120)
    assert p.returncode != 0
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and FILE_FAULTS[runner] in last and PENDING_FILE in last, err
    (kept,) = list((tmp_path / "runs").glob(f"*/{PENDING_FILE}"))
    with open(kept, "rb") as f:
        assert pickle.load(f).claim.job_id == kept.parent.name

    # The user restores the database from a copy made before the worker started (it has no
    # record of the attempt): the next worker stores the kept result instead of training again.
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(tmp_path / "backup.db", path)
    engine = db.open_db(f"sqlite:///{path}")
    trained = []
    Worker(engine, opts(tmp_path), runner=lambda s, ctx: trained.append(s.job_id) or runners._result(s)).run()
    assert kept.parent.name not in trained and len(trained) == 1 and not kept.exists()
    assert rows(engine, "select status, count(*) from jobs group by status") == [("done", 2)]
    assert rows(engine, f"select a.outcome from results x join attempts a on a.id = x.attempt_id"
                        f" where x.job_id = '{kept.parent.name}'") == [("done",)]


def test_corrupt_database_every_command_says_so_in_one_line(tmp_path):
    path = tmp_path / "r.db"
    engine = db.open_db(f"sqlite:///{path}", create=True)
    queue.enqueue(engine, "smoke", specs(50))
    engine.dispose()
    runners.corrupt_pages(path)
    before = md5(path)
    for args in (["status"], ["status", "--json"], ["report", "--table", "2"], ["work", "--until-empty"],
                 ["retry", "--grid", "smoke"], ["enqueue", "--grid", "smoke"], ["plot"], ["db", "upgrade"]):
        r = cli.invoke(app, [*args, "--db", f"sqlite:///{path}"], catch_exceptions=False)
        assert r.exit_code != 0, args
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "malformed" in lines[0], (args, r.output)
    assert md5(path) == before


@pytest.fixture
def unwritable(tmp_path):
    """A harness database this process cannot write: immutable for root (root ignores modes),
    read-only otherwise. The folder too, so SQLite cannot make its -wal/-shm files."""
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "r.db"
    engine = db.open_db(f"sqlite:///{path}", create=True)
    queue.enqueue(engine, "smoke", specs(3))
    engine.dispose()
    as_root = os.geteuid() == 0
    if as_root:
        subprocess.run(["chattr", "+i", str(path), str(folder)], check=True)
    else:
        path.chmod(0o444)
        folder.chmod(0o555)
    yield path
    if as_root:
        subprocess.run(["chattr", "-i", str(path), str(folder)], check=True)
    else:
        folder.chmod(0o755)
        path.chmod(0o644)


def test_status_and_report_read_a_database_they_cannot_write(unwritable):
    url = f"sqlite:///{unwritable}"
    before = md5(unwritable)
    r = cli.invoke(app, ["status", "--json", "--db", url], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["counts"]["smoke"]["queued"] == 3
    r = cli.invoke(app, ["report", "--table", "2", "--db", url], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    for args in (["work", "--until-empty"], ["enqueue", "--grid", "smoke"], ["retry", "--grid", "smoke"]):
        r = cli.invoke(app, [*args, "--db", url], catch_exceptions=False)
        lines = r.stderr.strip().splitlines()
        assert r.exit_code != 0 and len(lines) == 1 and "cannot write the database" in lines[0], r.output
    assert md5(unwritable) == before


def test_another_programs_sqlite_file_is_left_exactly_as_it_was(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("create table notes (x)")
        conn.execute("insert into notes values (1)")
    before = md5(path)
    for args in (["status"], ["report", "--table", "2"], ["enqueue", "--grid", "smoke"],
                 ["work", "--until-empty"], ["db", "upgrade"]):
        r = cli.invoke(app, [*args, "--db", f"sqlite:///{path}"], catch_exceptions=False)
        lines = r.stderr.strip().splitlines()
        assert r.exit_code != 0 and len(lines) == 1, r.output
        assert "another program's" in lines[0] or "not the harness's" in lines[0], r.output
    assert md5(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]  # no -wal, no -shm
    with sqlite3.connect(path) as conn:
        assert conn.execute("pragma journal_mode").fetchone()[0] == "delete"


def test_a_new_harness_database_uses_wal(tmp_path):
    path = tmp_path / "r.db"
    db.open_db(f"sqlite:///{path}", create=True).dispose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"


# ---- item 7: expired leases are visible and taken back --------------------------------------

def test_status_shows_an_expired_lease_as_stale(sqlite_url):
    engine = db.open_db(sqlite_url, create=True)
    queue.enqueue(engine, "smoke", specs(2))
    claim = queue.claim(engine, "dead-worker", lease_seconds=0.2)
    time.sleep(0.5)
    s = json.loads(cli.invoke(app, ["status", "--json", "--db", sqlite_url]).stdout)
    (job,) = s["running"]
    assert job["job_id"] == claim.job_id and job["stale"] and s["stale"] == 1
    r = cli.invoke(app, ["status", "--db", sqlite_url], env={"COLUMNS": "80"})
    assert "stale" in r.stdout and claim.job_id in r.stdout, r.stdout


def test_until_empty_takes_back_a_dead_workers_job(tmp_path, sqlite_url, monkeypatch):
    """A killed worker's job whose lease expires while this worker is busy is run before it exits."""
    monkeypatch.setenv("HARNESS_TEST_SLOW_SECONDS", "2")
    engine = db.open_db(sqlite_url, create=True)
    queue.enqueue(engine, "smoke", specs(2))
    dead = queue.claim(engine, "dead-worker", lease_seconds=1.0)
    w = Worker(engine, opts(tmp_path), runner=runners.slow)
    w.run()
    assert w.done == 2
    assert rows(engine, "select status, count(*) from jobs group by status") == [("done", 2)]
    assert rows(engine, f"select outcome from attempts where id = {dead.attempt_id}") == [("lost",)]


def test_status_at_80_columns_whole_ids_one_line_per_error_and_the_whole_traceback(sqlite_url):
    engine = db.open_db(sqlite_url, create=True)
    queue.enqueue(engine, "smoke", specs(3))
    failed = []
    for i in range(3):
        c = queue.claim(engine, "w")
        try:
            raise RuntimeError(f"boom {i}: " + "a long explanation " * 8 + "\nsecond line of it")
        except RuntimeError as exc:
            queue.fail(engine, c, exc, permanent=True)
        failed.append(c.job_id)
    r = cli.invoke(app, ["status", "--db", sqlite_url], env={"COLUMNS": "80"})
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    for job_id in failed:
        assert sum(job_id in line for line in lines) == 1, r.stdout  # whole, on one line
    assert sum("RuntimeError" in line for line in lines) == 3
    r = cli.invoke(app, ["status", "--job", failed[0][:6], "--db", sqlite_url])
    assert r.exit_code == 0, r.output
    assert failed[0] in r.stdout and "Traceback" in r.stdout and "second line of it" in r.stdout
    r = cli.invoke(app, ["status", "--job", "zzzz", "--db", sqlite_url])
    assert r.exit_code != 0 and "no job 'zzzz'" in r.stderr
