"""A finished job records the data it trained on (a fingerprint of its task's files); when the
mirror's files change, `enqueue` and `report` say so in one line, and `retry --data-changed` runs
the job again, whose new result records the new data. The job id stays the spec's."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from harness.cli import app
from harness.protocol.fingerprint import mirror_fingerprint
from harness.store import db
from harness.worker import Worker, WorkerOptions

from paths import DATA_DIR

runner = CliRunner()
TINY = ("--grid", "smoke", "--tasks", "trec", "--seeds", "1", "--losses", "ce", "--n", "8", "--epochs", "1",
        "--max-length", "32", "--no-check")


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def recorded(url: str) -> list[tuple]:
    """(job id, status, fingerprint its result's attempt recorded) of every job."""
    with db.make_engine(url).connect() as conn:
        rows = conn.exec_driver_sql(
            "select j.id, j.status, a.config from jobs j left join results r on r.job_id = j.id "
            "left join attempts a on a.id = r.attempt_id order by j.id").all()
    return [(i, s, json.loads(c)["data_fingerprint"] if c else None) for i, s, c in rows]


def work(url: str, tmp_path) -> None:
    Worker(db.open_db(url), WorkerOptions(until_empty=True, runs_dir=tmp_path / "runs", quiet=True)).run()


def test_a_result_says_which_data_and_an_edited_mirror_is_noticed(tmp_path, monkeypatch):
    root = tmp_path / "data"
    shutil.copytree(DATA_DIR / "trec", root / "trec")  # short questions: a cheap job
    monkeypatch.setenv("HARNESS_DATA_DIR", str(root))
    url = f"sqlite:///{tmp_path / 'results.db'}"
    assert "added 1 jobs, 0 already existed" in invoke("enqueue", *TINY, "--db", url).stdout
    work(url, tmp_path)
    before = mirror_fingerprint("trec")
    [(job, status, trained_on)] = recorded(url)
    assert (status, trained_on) == ("done", before)
    quiet = invoke("report", "--table", "2", "--db", url)
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr, quiet.stderr

    # one training question edited, a line the job may never have sampled: the files differ
    train = root / "trec" / "train.jsonl"
    lines = train.read_text().splitlines()
    lines[-1] = json.dumps({**json.loads(lines[-1]), "text": "an edited question ?"})
    train.write_text("\n".join(lines) + "\n")
    after = mirror_fingerprint("trec")
    assert after != before

    again = invoke("enqueue", *TINY, "--db", url)
    assert again.exit_code == 0 and "added 0 jobs, 1 already existed" in again.stdout
    warning = again.stderr.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("warning: 1 finished job was trained on "
                                                       "other data than the mirror holds now (trec 1)")
    assert "`harness retry --data-changed --grid smoke`" in warning[0]
    report = invoke("report", "--table", "2", "--db", url)
    assert report.exit_code == 0 and report.stderr.strip() == warning[0]
    plain = invoke("retry", "--grid", "smoke", "--db", url)  # failed/cancelled only, and says why
    assert "re-queued 0 jobs" in plain.stdout and plain.stderr.strip() == warning[0]
    assert recorded(url) == [(job, "done", before)]
    detail = invoke("status", "--job", job, "--db", url).stdout
    assert f"data: fingerprint {before}; examples longer than max_length 32 tokens, cut: " in detail
    assert (f"the mirror now holds other data (fingerprint {after}): "
            f"`harness retry --data-changed --job {job}` runs it again") in detail

    r = invoke("retry", "--data-changed", "--grid", "smoke", "--db", url)
    assert r.exit_code == 0 and "re-queued 1 done jobs whose data changed" in r.stdout
    assert recorded(url) == [(job, "queued", before)]  # the old result stays until replaced
    work(url, tmp_path)
    assert recorded(url) == [(job, "done", after)]
    settled = invoke("enqueue", *TINY, "--db", url)
    assert "added 0 jobs, 1 already existed" in settled.stdout and not settled.stderr.strip()
    assert "the mirror now holds other data" not in invoke("status", "--job", job, "--db", url).stdout
    assert "re-queued 0 done jobs" in invoke("retry", "--data-changed", "--db", url).stdout
