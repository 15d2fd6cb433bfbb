"""Claims per second: P worker processes drain K instantly-finished jobs from one database.

    python benchmarks/bench_queue.py --workers 8 --jobs 2000 [--db postgresql+psycopg://postgres@127.0.0.1/bench]

Each worker runs the real claim → finish cycle (the runner returns at once), so the figure is
the queue's own throughput: how fast the database hands out and closes jobs.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness.store import db, queue  # noqa: E402
from harness.protocol.spec import JobSpec  # noqa: E402


def _drain(url: str, name: str, start, counts) -> None:
    from runners import instant

    engine = db.open_db(url)
    start.wait()
    done = 0
    while (c := queue.claim(engine, name)) is not None:
        queue.finish(engine, c, instant(c.spec, None))
        done += 1
    counts[name] = done


def bench(url: str, workers: int, jobs: int) -> dict:
    engine = db.open_db(url, create=True)
    specs = [JobSpec.make(task="sst2", n=20, seed=i, loss="ce", model="bench") for i in range(jobs)]
    queue.enqueue(engine, "bench", specs)
    ctx = mp.get_context("spawn")
    start, counts = ctx.Event(), ctx.Manager().dict()
    procs = [ctx.Process(target=_drain, args=(url, f"w{i}", start, counts)) for i in range(workers)]
    [p.start() for p in procs]
    time.sleep(3)  # let every process import and connect before the clock starts
    t0 = time.perf_counter()
    start.set()
    [p.join() for p in procs]
    seconds = time.perf_counter() - t0
    with engine.connect() as conn:
        results = conn.execute(sa.text("select count(*) from results")).scalar_one()
        attempts = conn.execute(sa.text("select count(*) from attempts")).scalar_one()
    return dict(workers=workers, jobs=jobs, seconds=seconds, claims_per_second=jobs / seconds,
                results=results, attempts=attempts, per_worker=dict(counts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = a.db or f"sqlite:///{tmp}/bench.db"
        r = bench(url, a.workers, a.jobs)
    print(f"{r['workers']} workers, {r['jobs']} jobs on {url.split(':')[0]}: {r['seconds']:.2f} s, "
          f"{r['claims_per_second']:.0f} claims/s (claim + finish each); results {r['results']}, "
          f"attempts {r['attempts']}; per worker {sorted(r['per_worker'].values())}")


if __name__ == "__main__":
    main()
