"""scripts/campaign.sh end to end on a real SQLite file, with real background workers whose runner
returns at once (tests/integration/runners.py:instant): the stages enqueue in order of priority, wait for
tuning, select, enqueue with --tuned; running them again adds nothing and starts no extra worker."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

from paths import REPO

SCRIPT = REPO / "scripts" / "campaign.sh"
L3 = "sentence-transformers/paraphrase-MiniLM-L3-v2"
L6 = "sentence-transformers/all-MiniLM-L6-v2"


def campaign(tmp_path: Path, stage: str, workers: int = 2, harness: Path | None = None, **extra: str) -> str:
    env = dict(os.environ, HARNESS_DB=f"sqlite:///{tmp_path / 'r.db'}", LOGS=str(tmp_path / "logs"),
               WORKERS=str(workers), POLL_SECONDS="1", PYTHONPATH=str(REPO / "tests" / "integration"),
               WORK_ARGS="--runner runners:instant",
               HARNESS=str(harness or REPO / ".venv" / "bin" / "harness"),
               FULL_LR="5e-5",  # else glue's full SST-2 CE job is transfer's stage 1 (lr 1e-4 here)
               **extra)
    r = subprocess.run([str(SCRIPT), stage], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def counts(tmp_path: Path) -> dict:
    with sqlite3.connect(tmp_path / "r.db") as conn:
        return {(g, s): k for g, s, k in conn.execute("select grid, status, count(*) from jobs group by 1, 2")}


def test_campaign_stages_run_in_order_and_again_add_nothing(tmp_path):
    out = campaign(tmp_path, "p1")
    assert "grid tune: added 18 jobs" in out and "added 36 CE+SCL jobs" in out  # two steps
    assert "grid fewshot: added 180 jobs" in out
    assert out.index("lr 0.0001, λ 0.5, τ 0.1") < out.index("enqueue --grid fewshot")
    assert "workers stopped" in campaign(tmp_path, "drain")
    assert counts(tmp_path) == {("tune", "done"): 54, ("fewshot", "done"): 180}
    with sqlite3.connect(tmp_path / "r.db") as conn:
        assert conn.execute("select count(*) from tuning_choices").fetchone()[0] == 3
        lrs = {json.loads(s)["lr"] for (s,) in conn.execute("select spec from jobs where grid = 'fewshot'")}
    assert lrs == {1e-4}  # the instant runner's scores tie: the smaller learning rate wins

    again = campaign(tmp_path, "p1")
    assert "added 0 jobs, 18 already existed" in again and "added 0 CE+SCL jobs" in again and "added 0 jobs, 180 already existed" in again
    assert "2 workers" in again and "2 workers" in campaign(tmp_path, "workers")  # topped up, not added
    assert len(list((tmp_path / "logs" / "workers").glob("*.pid"))) == 2
    campaign(tmp_path, "stop")

    out = campaign(tmp_path, "p2", workers=0)  # enqueue only: transfer needs real stage-1 models
    assert "grid noise: added 120 jobs" in out
    assert "grid transfer: added 62 jobs" in out and "grid transfer: added 120 jobs" in out
    for grid in ("noise", "transfer"):  # keep the test short: p3's own jobs are what it checks
        subprocess.run([str(REPO / ".venv" / "bin" / "harness"), "cancel", "--grid", grid,
                        "--db", f"sqlite:///{tmp_path / 'r.db'}"], check=True, capture_output=True)

    out = campaign(tmp_path, "p3")
    # batch size 16 on full SST-2, CoLA and QNLI is the glue grid's job: enqueued once
    assert "grid glue: added 12 jobs" in out and "grid batch: added 12 jobs, 6 already existed" in out
    assert "grid tune: added 18 jobs" in out
    # L6 before the full-data tables, and seeds 0-4 of every L6 cell queued before seeds 5-9
    assert "grid fewshot: added 60 jobs, 0 already existed" in out and "grid fewshot: added 60 jobs, 60 already existed" in out
    assert out.index("grid tune: added 18 jobs") < out.index("grid fewshot: added 60 jobs") < out.index("grid glue")
    with sqlite3.connect(tmp_path / "r.db") as conn:
        first, rest = (conn.execute(f"select {f}(seq) from jobs where grid = 'fewshot' and model = ? and seed {op} 5",
                                    (L6,)).fetchone()[0] for f, op in (("max", "<"), ("min", ">=")))
    assert first < rest
    campaign(tmp_path, "drain")
    c = counts(tmp_path)
    assert c[("tune", "done")] == 108 and c[("fewshot", "done")] == 300 and c[("noise", "cancelled")] == 120
    assert c[("glue", "done")] == 12 and c[("batch", "done")] == 12 and c[("transfer", "cancelled")] == 182
    with sqlite3.connect(tmp_path / "r.db") as conn:
        specs = [json.loads(s) for (s,) in conn.execute("select spec from jobs where grid in ('glue', 'batch')")]
        assert conn.execute("select count(*) from tuning_choices where model = ?", (L6,)).fetchone()[0] == 3
    assert {(s["model"], s["epochs"], s["seed"]) for s in specs} == {("sentence-transformers/paraphrase-MiniLM-L3-v2", 2, 0)}

    out = campaign(tmp_path, "p2", workers=0)
    assert "grid noise: added 0 jobs, 120 already existed" in out


def test_v2_stages_queue_seed_rounds_after_tuning(tmp_path):
    """Issue 22's stages under protocol v2, with step budgets standing in for the study's (a
    wrapper sets grids.V2_BUDGETS before the CLI runs): tuning first, then Table 2 one seed at a
    time over every cell, so a stretch cut short leaves cells with equal seeds; P2 interleaves
    Table 3 v2 with the noise extension seed by seed, sharing the clean runs (a minute or two)."""
    wrapper = tmp_path / "harness"
    wrapper.write_text(f"#!/bin/sh\nexec {REPO / '.venv' / 'bin' / 'python'} -c 'import sys\n"
                       "from harness.protocol import grids\n"
                       "grids.V2_BUDGETS.update({20: 75, 100: 100, 1000: 325})\n"
                       "from harness.cli import main\nsys.argv[0] = \"harness\"\nmain()' \"$@\"\n")
    wrapper.chmod(0o755)
    # one model keeps the test short (its tuning: 261 jobs); the stage loops over V2_MODELS alike
    out = campaign(tmp_path, "v2", harness=wrapper, V2_MODELS=L3)
    assert out.count("grid tune-v2: added 36 jobs") == 1 and out.count("added 225 CE+SCL jobs") == 1
    assert out.count("grid fewshot-v2: added 18 jobs, 0 already existed") == 10  # 10 seeds
    campaign(tmp_path, "stop", harness=wrapper)  # Table 2's jobs need not run to show their order
    c = counts(tmp_path)
    assert c[("tune-v2", "done")] == 261 and sum(k for (g, _), k in c.items() if g == "fewshot-v2") == 180
    with sqlite3.connect(tmp_path / "r.db") as conn:
        seqs = conn.execute("select seed, min(seq), max(seq), count(*), min(json_extract(spec, '$.steps')), "
                            "max(json_extract(spec, '$.steps')) from jobs where grid = 'fewshot-v2' "
                            "group by 1 order by 2").fetchall()
    assert [s for s, *_ in seqs] == list(range(10))
    assert all(last < first for (_, _, last, *_), (_, first, *_) in zip(seqs, seqs[1:]))
    assert all((k, lo, hi) == (18, 75, 325) for *_, k, lo, hi in seqs)

    out = campaign(tmp_path, "v2-p2", workers=0, harness=wrapper)
    # the clean runs are Table 2's N = 100 runs (as in the paper), shared by both noise designs
    assert out.count("grid noise-v2: added 24 jobs, 6 already existed") == 5
    assert out.count("grid noise-replace: added 18 jobs, 6 already existed") == 5
    assert out.index("enqueue --grid noise-v2 --tuned") < out.index("enqueue --grid noise-replace --tuned")
    # Table 7 v2: both stage-1 models once, then 3 jobs per target and seed (CE, CE+SCL, baseline)
    assert "grid transfer-v2: added 8 jobs, 0 already existed" in out
    assert out.count("grid transfer-v2: added 6 jobs, 2 already existed") == 9
    assert out.count("grid transfer-v2: added 12 jobs, 2 already existed") == 10
    assert out.rindex("enqueue --grid noise-replace") < out.index("enqueue --grid transfer-v2")
