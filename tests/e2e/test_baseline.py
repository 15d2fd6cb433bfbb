"""`harness baseline` end to end: a real job of the smoke design (N = 20, the 3-layer MiniLM, on
the real SST-2 mirror) run by the real worker into a real SQLite file, then trained again by the
plain Hugging Face Trainer on the examples the database says it used."""

from __future__ import annotations

import json
import shutil

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from harness.cli import app
from harness.protocol.grids import GRIDS
from harness.protocol.spec import JobSpec
from harness.store import db, queue
from harness.worker import Worker, WorkerOptions

# The smoke grid's job, with 2 epochs and 32 validation examples so that both trainings are quick.
SMOKE = {k: v for k, v in GRIDS["smoke"].base.items() if k not in ("lam", "tau")}
SPEC = JobSpec.make(**{**SMOKE, "task": "sst2", "n": 20, "seed": 0, "epochs": 2, "val_size": 32})


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("baseline")
    url = f"sqlite:///{tmp / 'results.db'}"
    engine = db.open_db(url, create=True)
    queue.enqueue(engine, "smoke", [SPEC, JobSpec.make(**{**SPEC.canonical(), "seed": 1})])
    Worker(engine, WorkerOptions(until_empty=True, max_jobs=1, runs_dir=tmp / "runs", quiet=True)).run()
    with engine.connect() as conn:
        stored = conn.execute(sa.select(db.results).where(db.results.c.job_id == SPEC.job_id)).mappings().one()
    engine.dispose()
    return tmp, url, dict(stored)


def baseline(*args: str):
    return CliRunner().invoke(app, ["baseline", *args])


def test_the_trainer_trains_the_jobs_examples_and_both_are_shown(finished):
    _, url, stored = finished
    out = baseline("--job", SPEC.job_id[:8], "--epochs", "2", "--json", "--db", url)
    assert out.exit_code == 0, out.output
    c = json.loads(out.stdout)  # nothing else on stdout: no Trainer log lines
    assert (c["job_id"], c["n_train"], c["n_validation"], c["n_test"]) == (SPEC.job_id, 20, 32, 436)
    ours, theirs = c["ours"], c["trainer"]
    assert (ours["val_score"], ours["test_score"], ours["budget"]) == (
        stored["val_score"], stored["test_score"], "2 epochs")
    assert ours["selected"] == f"epoch {stored['best_epoch']}"
    # validation every epoch (steps 2 and 4 of 2 × ceil(20 / 16)), the best epoch's weights kept
    steps, scores = zip(*c["history"])
    assert steps == (2, 4) and theirs["budget"] == "2 epochs"
    assert theirs["val_score"] == pytest.approx(max(scores))
    assert theirs["selected"] == f"epoch {scores.index(max(scores)) + 1}"
    right = c["test_agreement"]
    assert sum(right.values()) == 436
    assert theirs["test_score"] == pytest.approx((right["both"] + right["Trainer only"]) / 436)
    assert ours["test_score"] == pytest.approx((right["both"] + right["ours only"]) / 436)
    assert theirs["seconds"] > 0 and c["device"] == "cpu"


def test_what_cannot_be_compared_is_refused_in_one_line(finished):
    tmp, url, _ = finished
    queued = JobSpec.make(**{**SPEC.canonical(), "seed": 1}).job_id
    cases = [(["--job", queued], f"job {queued} has no result (status queued)"),
             (["--job", "ffffffff"], "no job 'ffffffff' in this database"),
             (["--job", SPEC.job_id, "--epochs", "2", "--steps", "4"], "give --epochs or --steps, not both"),
             (["--job", SPEC.job_id, "--epochs", "2", "--eval-every", "2"], "--eval-every goes with a step budget")]
    # databases whose records of the job are not what the data give for its spec
    for name, change, message in [
            ("train.db", [sa.update(db.train_examples).values(examples=json.dumps(list(range(20))))],
             "trained on other examples than the data give now"),
            ("test.db", [sa.delete(db.test_predictions), sa.update(db.results).values(n_test=400)],
             "tested on other examples than the data give now (36 test examples differ)")]:
        shutil.copy(tmp / "results.db", tmp / name)
        engine = db.make_engine(f"sqlite:///{tmp / name}")
        with engine.begin() as conn:
            for statement in change:
                conn.execute(statement)
        engine.dispose()
        cases.append((["--job", SPEC.job_id, "--db", f"sqlite:///{tmp / name}"], message))
    for args, message in cases:
        out = baseline(*args, *([] if "--db" in args else ["--db", url]))
        assert out.exit_code == 2, out.output
        assert out.output.startswith("error: ") and message in out.output and out.output.count("\n") == 1
