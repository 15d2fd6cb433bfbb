"""Which data each finished job was trained on, against what its task's files hold now.

A job's id is a hash of its spec alone (ids of stored jobs never change), so the same spec over an
edited mirror is the same job, already done. Every attempt records the data's fingerprint in its
config (`data_fingerprint`, harness.protocol.fingerprint); `changed_data` lists the done jobs
whose recorded fingerprint differs from the one of the mirror's files now. `enqueue` and `report`
warn about them in one line, and `retry --data-changed` puts them back in the queue (queue.redo:
their result stays until the new run replaces it). Results stored before fingerprints were
recorded, those trained on the Hub's copy, and tasks the mirror no longer holds are never flagged:
there is nothing to compare.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from harness.errors import HarnessError
from harness.protocol.fingerprint import comparable, mirror_fingerprint
from harness.store import db, queue
from harness.store.jobs import Status

IN_CHUNK = 500  # job ids per IN (...) clause

_p = sa.bindparam
_TRAINED_ON = (sa.select(db.results.c.job_id, db.jobs.c.grid, db.results.c.task, db.attempts.c.config)
               .join(db.attempts, db.attempts.c.id == db.results.c.attempt_id)
               .join(db.jobs, db.jobs.c.id == db.results.c.job_id)
               .where(db.jobs.c.status == Status.DONE.value))
_OF_JOBS = _TRAINED_ON.where(db.results.c.job_id.in_(_p("jobs", expanding=True)))
_OF_GRID = _TRAINED_ON.where(db.jobs.c.grid == _p("grid"))


@dataclass(frozen=True)
class DataChange:
    """A done job whose task's data is no longer what it was trained on."""
    job_id: str
    grid: str
    task: str
    trained_on: str  # the fingerprint its attempt recorded
    now: str  # the fingerprint of the mirror's files now


def changed_data(engine: Engine, *, job_ids: list[str] | None = None, grid: str | None = None,
                 data_dir: str | Path | None = None) -> list[DataChange]:
    """The done jobs (all, those of `grid`, or those named) trained on other data than the mirror
    (data_dir, else the one the harness finds) holds now, in job id order."""
    with db.connect(engine) as conn:
        if job_ids is not None:
            rows = [r for i in range(0, len(job_ids), IN_CHUNK)
                    for r in conn.execute(_OF_JOBS, {"jobs": job_ids[i:i + IN_CHUNK]})]
        else:
            rows = conn.execute(_OF_GRID, {"grid": grid}) if grid else conn.execute(_TRAINED_ON)
            rows = rows.all()
    now: dict[str, str | None] = {}
    out = []
    for job_id, job_grid, task, config in rows:
        recorded = _recorded(config)
        if not comparable(recorded):
            continue
        if task not in now:
            now[task] = _now(task, data_dir)
        if now[task] is not None and now[task] != recorded:
            out.append(DataChange(job_id, job_grid, task, recorded, now[task]))
    return sorted(out, key=lambda c: c.job_id)


def _recorded(config: str | None) -> str | None:
    try:
        return (json.loads(config) or {}).get("data_fingerprint") if config else None
    except (ValueError, AttributeError):  # not a JSON object: recorded by something else
        return None


def _now(task: str, data_dir) -> str | None:
    try:
        return mirror_fingerprint(task, data_dir)
    except (HarnessError, OSError):  # no mirror, an unknown task name, an unreadable file
        return None


def describe(changes: list[DataChange]) -> str:
    """One line: how many finished jobs, of which tasks, and the command that runs them again."""
    tasks = Counter(c.task for c in changes)
    grids = sorted({c.grid for c in changes})
    rerun = "harness retry --data-changed" + (f" --grid {grids[0]}" if len(grids) == 1 else "")
    jobs = "1 finished job was" if len(changes) == 1 else f"{len(changes)} finished jobs were"
    return (f"{jobs} trained on other data than the mirror holds now ("
            + ", ".join(f"{t} {k}" for t, k in sorted(tasks.items()))
            + f"); their results are the old data's: `{rerun}` runs them again")


def requeue(engine: Engine, changes: list[DataChange]) -> int:
    """Put the jobs back in the queue (queue.redo); returns how many moved."""
    if not changes:
        return 0
    return queue.redo(engine, [c.job_id for c in changes],
                      "trained on data files that have changed since")
