"""Bytes a finished job adds to an SQLite results database, after VACUUM, by test-set size.

    python benchmarks/bench_storage.py [--jobs 10]

For each test-set size of the campaign's tasks, `--jobs` jobs (70% accurate, 3 classes for MNLI)
are finished through the queue's own path (packed predictions, embeddings by policy), and the same
predictions are also written the old way (one `predictions` row per example) into a second
database, side by side. Embeddings are measured for an SST-2 job that keeps them.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from harness.store import db, queue
from harness.training.runner import RunResult
from harness.protocol.spec import JobSpec
from harness.store.results import EMBEDDING_SEEDS

# test examples per task (harness.protocol.data: half of the evaluation split) and label count
TEST_SIZES = {"sst2": (436, 2), "qnli": (2732, 2), "mnli": (4908, 3), "yelp_polarity": (19000, 2),
              "amazon_polarity_sample": (200000, 2)}
HIDDEN = 384  # MiniLM


def _result(rng, n_test: int, classes: int, embeddings: bool) -> RunResult:
    ids = np.sort(rng.choice(2 * n_test, n_test, replace=False))
    labels = rng.integers(0, classes, n_test)
    preds = np.where(rng.random(n_test) < 0.7, labels, rng.integers(0, classes, n_test))
    emb = rng.standard_normal((n_test, HIDDEN)).astype(np.float16) if embeddings else None
    return RunResult(metric="accuracy", val_score=0.7, test_score=0.7, val_accuracy=0.7,
                     test_accuracy=0.7, best_epoch=3, n_train=100, n_test=n_test, train_seconds=1.0,
                     metrics=[(s, e, "accuracy", 0.7) for s in ("validation", "test") for e in range(1, 11)]
                     + [("train", e, "loss", 0.5) for e in range(1, 11)],
                     predictions=list(zip(ids.tolist(), labels.tolist(), preds.tolist())),
                     embeddings=emb, embedding_examples=ids.tolist(), embedding_labels=labels.tolist(),
                     train_examples=list(range(100)))


def _size(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
    return path.stat().st_size


def measure(folder: Path, task: str, jobs: int, seed0: int) -> tuple[float, float]:
    """(bytes per job packed, bytes per job with row-per-example predictions)."""
    n_test, classes = TEST_SIZES[task]
    sizes = []
    for old in (False, True):
        path = folder / f"{task}_{seed0}_{old}.db"
        db.open_db(f"sqlite:///{path}", create=True).dispose()
        empty = _size(path)
        engine = db.open_db(f"sqlite:///{path}")
        rng = np.random.default_rng(0)
        specs = [JobSpec.make(task=task, n=100, seed=seed0 + i) for i in range(jobs)]
        queue.enqueue(engine, "bench", specs)
        for _ in specs:
            c = queue.claim(engine, "bench")
            r = _result(rng, n_test, classes, embeddings=True)
            queue.finish(engine, c, r)
            if old:
                with db.connect(engine) as conn, conn.begin():
                    conn.execute(sa.delete(db.test_predictions).where(db.test_predictions.c.job_id == c.job_id))
                    conn.execute(sa.insert(db.predictions), [
                        dict(job_id=c.job_id, attempt_id=c.attempt_id, example=e, label=float(y), prediction=float(p))
                        for e, y, p in r.predictions])
        engine.dispose()
        sizes.append((_size(path) - empty) / jobs)
    return sizes[0], sizes[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"{'task':<24}{'test examples':>14}{'packed B/job':>14}{'rows B/job':>12}{'ratio':>8}")
        for task, (n_test, _) in TEST_SIZES.items():
            jobs = args.jobs if n_test < 50_000 else max(1, args.jobs // 5)
            packed, rows = measure(folder, task, jobs, seed0=10)  # seeds ≥ 3: no embeddings
            print(f"{task:<24}{n_test:>14,}{packed:>14,.0f}{rows:>12,.0f}{rows / packed:>8.1f}")
        with_emb, _ = measure(folder, "sst2", EMBEDDING_SEEDS, seed0=0)  # these keep embeddings
        print(f"sst2, seeds 0-{EMBEDDING_SEEDS - 1} (with embeddings): {with_emb:,.0f} B/job")


if __name__ == "__main__":
    main()
