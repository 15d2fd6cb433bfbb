"""A newcomer's first hour (issue 25): the demo keeps out of the campaign's database, and what the
commands print explains itself: the demo's table says what it is and fits the terminal, filters
name what exists, `--seeds 0` teaches the form it meant, an idle worker says it waits, `status`
keeps its short columns at 80 columns and shows a job's scores, a kept result stored later is
counted as stored, and `report --all` says what it does and leaves no stale figure behind."""

from __future__ import annotations

import hashlib
import re
import subprocess
import threading
import time

import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

import runners
from analysis.synthetic import grid, make_db, synthetic_results
from harness.cli import app
from harness.store import db, queue
from harness.store.pending import PENDING_FILE
from harness.protocol.spec import JobSpec
from harness.worker import Worker, WorkerOptions
from tcp_proxy import TcpProxy

from paths import REPO

cli = CliRunner()
SMOKE = dict(lr=3e-4, warmup_ratio=0.1, epochs=6)  # the smoke grid's settings


def invoke(*args: str, **env):
    return cli.invoke(app, list(args), catch_exceptions=False, env=env or None)


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def campaign_here(tmp_path, monkeypatch):
    """A folder like a clone: a campaign's results.db at the default path, no $HARNESS_DB."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HARNESS_DB", raising=False)
    make_db(tmp_path / "results.db", synthetic_results(grid(2)[:2], seeds=range(3), rng=1)).dispose()
    return tmp_path / "results.db"


def test_the_smoke_grid_goes_to_its_own_database(campaign_here):
    before = md5(campaign_here)
    files = lambda: sorted(p.name for p in campaign_here.parent.glob("results.db*"))  # noqa: E731
    r = invoke("enqueue", "--grid", "smoke")
    assert r.exit_code == 0, r.output
    assert "added 8 jobs" in r.stdout and "(sqlite:///demo.db)" in r.stdout
    assert "harness work --until-empty --db sqlite:///demo.db" in r.stdout
    assert md5(campaign_here) == before
    assert files() == ["results.db"] and (campaign_here.parent / "demo.db").is_file()
    with db.open_db("sqlite:///demo.db").connect() as conn:
        assert conn.execute(sa.text("select grid, count(*) from jobs group by grid")).all() == [("smoke", 8)]
    # git ignores it, so README line 1 leaves `git status` clean
    assert subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", "demo.db"]).returncode == 0
    # a database named by the user is the user's choice, the smoke grid too
    r = invoke("enqueue", "--grid", "smoke", HARNESS_DB="sqlite:///mine.db")
    assert r.exit_code == 0 and "(sqlite:///mine.db)" in r.stdout and "demo" not in r.stdout
    r = invoke("enqueue", "--grid", "smoke", "--db", "sqlite:///results.db")
    with db.open_db("sqlite:///results.db").connect() as conn:
        assert conn.execute(sa.text("select count(*) from jobs where grid = 'smoke'")).scalar() == 8


def test_seeds_zero_says_how_to_ask_for_one_seed():
    r = invoke("enqueue", "--grid", "smoke", "--seeds", "0", "--dry-run", "--no-check")
    assert r.exit_code == 2
    assert "a single number is a count" in r.stderr and "--seeds 0-0" in r.stderr
    r = invoke("enqueue", "--grid", "smoke", "--seeds", "3-3", "--dry-run", "--no-check")
    assert r.exit_code == 0 and "has 2 jobs" in r.stdout and '"seed":3' in r.stdout
    assert "3-3" in invoke("enqueue", "--help").stdout


@pytest.fixture(scope="module")
def demo_and_campaign(tmp_path_factory):
    """The campaign's Table 2 cells and a smoke run beside them, in one database."""
    df = pd.concat([synthetic_results(grid(2), rng=2),
                    synthetic_results([dict(task="sst2", n=20)], seeds=range(4), rng=3, grid="smoke",
                                      extra=SMOKE)], ignore_index=True)
    path = tmp_path_factory.mktemp("demo") / "mixed.db"
    make_db(path, df).dispose()
    return f"sqlite:///{path}"


def test_the_demos_table_says_what_it_is_and_fits_the_terminal(demo_and_campaign):
    url = demo_and_campaign
    r = invoke("report", "--table", "2", "--grid", "smoke", "--db", url)
    assert r.exit_code == 0, r.output
    head = r.stdout.split("Table 2.")[0]
    assert head.startswith("What you ran: the smoke grid, 8 finished jobs (SST-2, N = 20")
    assert "not evidence" in head and "report/report.md" in head
    assert "harness report --table 2 --db sqlite:///results.db" in " ".join(head.split())
    assert "grid smoke;" in r.stdout  # the section names its grid
    assert max(map(len, r.stdout.splitlines())) <= 100
    for cols in ("80", "100"):  # all of Table 2 too: both sections, tests and notes
        r = invoke("report", "--table", "2", "--db", url, COLUMNS=cols)
        assert r.exit_code == 0 and max(map(len, r.stdout.splitlines())) <= int(cols), cols
    r = invoke("report", "--table", "2", "--grid", "fewshot", "--model", "paraphrase-MiniLM-L3-v2", "--db", url)
    assert r.exit_code == 0 and "What you ran" not in r.stdout and "grid fewshot;" in r.stdout
    assert "grid smoke" not in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["--model", "roberta-base"], "no finished job of model 'roberta-base' in this database; models here: "
                                  "sentence-transformers/paraphrase-MiniLM-L3-v2"),
    (["--grid", "glue"], "no finished job of grid 'glue' in this database; grids here: fewshot, smoke"),
])
def test_report_filters_name_what_exists(demo_and_campaign, args, needle):
    r = invoke("report", "--table", "2", *args, "--db", demo_and_campaign)
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [f"error: {needle}"]


def test_an_idle_worker_says_it_is_waiting(tmp_path, capsys):
    engine = db.open_db(f"sqlite:///{tmp_path / 'r.db'}", create=True)
    w = Worker(engine, WorkerOptions(runs_dir=tmp_path / "runs"), runner=runners.instant)
    t = threading.Thread(target=w.run)
    t.start()
    said = ""
    try:
        for _ in range(100):
            said += capsys.readouterr().err
            if "no queued jobs" in said:
                break
            time.sleep(0.1)
    finally:
        w.stop_requested.set()
        t.join(timeout=30)
    assert f"no queued jobs in sqlite:///{tmp_path / 'r.db'}: waiting for some" in said
    assert "--until-empty exits instead" in said
    r = invoke("work", "--until-empty", "--db", f"sqlite:///{tmp_path / 'r.db'}")
    assert r.exit_code == 0 and "0 done, 0 failed (nothing was queued in sqlite:///" in r.stderr


def test_status_keeps_its_short_columns_at_80_and_shows_a_jobs_scores(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    engine = db.open_db(url, create=True)
    spec = JobSpec.make(task="sst2", n=20, seed=7, loss="ce+scl", model="m")
    queue.enqueue(engine, "smoke", [spec])
    queue.claim(engine, "a-rather-long-host-name.cluster.example.org:123456:abcdef")
    r = invoke("status", "--db", url, COLUMNS="80")
    assert r.exit_code == 0
    (line,) = [x for x in r.stdout.splitlines() if x.startswith(spec.job_id)]
    assert line.split()[1:6] == ["sst2", "20", "0", "7", "ce+scl"]
    assert max(map(len, r.stdout.splitlines())) <= 80
    # a finished job: its scores beside the spec
    df = synthetic_results([dict(task="sst2", n=20)], seeds=range(1), losses=("ce",), rng=4)
    make_db(tmp_path / "done.db", df).dispose()
    r = invoke("status", "--job", df["job_id"][0][:6], "--db", f"sqlite:///{tmp_path / 'done.db'}")
    score = df["test_score"][0]
    assert r.exit_code == 0 and f"result: test accuracy {score:.4f} at epoch 3" in r.stdout


def test_report_all_says_each_step_and_removes_figures_it_no_longer_makes(tmp_path):
    df = synthetic_results(grid(2)[:1], seeds=range(3), rng=5)
    make_db(tmp_path / "r.db", df).dispose()
    out = tmp_path / "report"
    (out / "figures").mkdir(parents=True)
    stale = out / "figures" / "tsne_sst2_20_seed0_old-model.png"
    stale.write_bytes(b"\x89PNG old")
    r = invoke("report", "--all", "--out", str(out), "--db", f"sqlite:///{tmp_path / 'r.db'}")
    assert r.exit_code == 0, r.output
    steps = r.stderr.splitlines()
    assert len(steps) >= 8 and all(re.match(r"\[ *\d+s\] ", s) for s in steps)
    assert any("Table 2: cells and significance tests" in s for s in steps)
    assert any(f"removed {stale}" in s for s in steps) and not stale.exists()
    made = sorted(p.name for p in (out / "figures").iterdir())
    shown = sorted(set(re.findall(r"figures/([\w.-]+\.(?:png|pdf))", (out / "report.md").read_text())))
    assert made == shown and made


@pytest.mark.postgres
def test_a_kept_result_the_worker_stores_later_is_counted_as_stored(pg_url, tmp_path):
    u = sa.engine.make_url(pg_url)
    proxy = TcpProxy((u.host, u.port or 5432)).start()
    url = u.set(port=proxy.port).render_as_string(hide_password=False)
    engine = db.open_db(url, create=True)
    spec = JobSpec.make(task="sst2", n=20, seed=0, loss="ce", model="m")
    queue.enqueue(engine, "g", [spec])

    def train_then_lose_the_database(s, ctx):
        proxy.stop()
        return runners._result(s)

    w = Worker(engine, WorkerOptions(runs_dir=tmp_path / "runs", max_jobs=1, lease_seconds=2.0),
               runner=train_then_lose_the_database)
    w.run()
    assert (w.kept, w.done) == (1, 0) and (tmp_path / "runs" / spec.job_id / PENDING_FILE).is_file()
    back = TcpProxy(proxy.target, port=proxy.port).start()
    try:
        w.opts.max_jobs, w.opts.until_empty = None, True
        w.run()  # its first housekeeping stores the kept result
    finally:
        back.stop()
    assert (w.kept, w.done, w.stored_kept) == (0, 1, 1)
