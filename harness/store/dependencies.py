"""Jobs that start from another job's model (the transfer grid, Table 7): whether a job must keep
its model, where a finished job's model is, how often a job waited for one, and putting a source
job back in the queue when its model is gone.

The queue itself only knows `jobs.depends_on` (a job is claimed once its source is done); the
worker uses these to link models in and out of a job (harness.worker).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from harness.training import artifacts
from harness.store import db, queue
from harness.store.jobs import Outcome

jobs, stored = db.jobs, db.artifacts
_p = sa.bindparam

# Built once, at import (see harness.store.queue).
_HAS_DEPENDENTS = sa.select(jobs.c.id).where(jobs.c.depends_on == _p("job")).limit(1)
_STORED_MODEL = sa.select(stored.c.path, stored.c.sha256).where(
    stored.c.job_id == _p("job"), stored.c.kind == artifacts.MODEL)


def has_dependents(engine: Engine, job_id: str) -> bool:
    """Whether any job waits on this one (depends_on): then its model must be kept."""
    with db.connect(engine) as conn:
        return conn.execute(_HAS_DEPENDENTS, {"job": job_id}).first() is not None


def stored_model(engine: Engine, job_id: str) -> tuple[str, str] | None:
    """(folder, sha256) of the model a finished job kept, or None if it kept none."""
    with db.connect(engine) as conn:
        row = conn.execute(_STORED_MODEL, {"job": job_id}).first()
    return None if row is None else (row[0], row[1])


def deferrals(engine: Engine, job_id: str) -> int:
    """How often the job was handed back unrun because the model it starts from was unusable."""
    return queue.count_attempts(engine, job_id, Outcome.DEFERRED)


def redo(engine: Engine, job_id: str, reason: str) -> bool:
    """Put a done job back in the queue with a fresh set of attempts (its stored model is gone).

    Only a job that is still done moves (queue.redo), so when many dependents notice at once it
    is re-queued once. True if this call re-queued it."""
    return queue.redo(engine, [job_id], reason) == 1
