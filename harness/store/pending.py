"""Results kept in their run folder when the database could not take them.

A trained result is worth minutes to hours; a database that is down for a while (a PostgreSQL
restart, a network cut) or a SQLite file that changed under the worker must not throw it away.
The worker first retries while its lease allows (see harness.worker); then it writes everything
`queue.finish` needs to `runs/<job>/pending-result.pkl`, and the next worker that reaches the
same database with the same runs folder stores it (`queue.finish(late=True)`) and deletes the file.

A kept result names the database it belongs to, so a runs folder shared between databases never
stores a result in the wrong one.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from harness.store import queue
from harness.training.runner import RunResult

PENDING_FILE = "pending-result.pkl"
# Where the classes a kept result pickles lived before harness/ was split into packages: a result
# kept by that harness, in a runs folder that outlived the upgrade, still loads.
MOVED_MODULES = {
    "harness.pending": "harness.store.pending", "harness.queue": "harness.store.jobs",
    "harness.runner": "harness.training.runner", "harness.spec": "harness.protocol.spec",
    "harness.artifacts": "harness.training.artifacts",
}


@dataclass
class Pending:
    database: str  # the URL (password hidden) the result belongs to
    claim: queue.Claim
    result: RunResult
    wall_seconds: float | None


def database_name(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def keep(run_dir: Path, engine: Engine, claim: queue.Claim, result: RunResult,
         wall_seconds: float | None) -> Path:
    """Write the result to run_dir atomically; returns the file."""
    path = Path(run_dir) / PENDING_FILE
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump(Pending(database_name(engine), claim, result, wall_seconds), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def store_kept(engine: Engine, runs_dir: Path) -> list[tuple[str, bool]]:
    """Store every kept result of this database found under runs_dir.

    Returns (job id, stored) per result handled: stored False means the job had meanwhile been
    finished by another attempt (or cancelled), and the kept copy was dropped. A result whose job
    is not in this database stays. Database errors propagate, and the files stay for the next
    contact."""
    handled = []
    name = database_name(engine)
    for path in sorted(Path(runs_dir).glob(f"*/{PENDING_FILE}")):
        try:
            with open(path, "rb") as f:
                kept: Pending = _Unpickler(f).load()
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, TypeError):
            continue  # half-written by a process killed mid-write: the .tmp never replaced it
        if kept.database != name:
            continue
        stored = queue.finish(engine, _current(kept.claim), _typed(kept.result), kept.wall_seconds,
                              late=True)
        if stored is None:
            continue
        path.unlink(missing_ok=True)
        handled.append((kept.claim.job_id, stored))
    return handled


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        return super().find_class(MOVED_MODULES.get(module, module), name)


def _current(claim: queue.Claim) -> queue.Claim:
    """A claim kept by a harness whose Claim named its attempt `run_id` (before the `runs` table
    became `attempts`): the same claim, its attempt as `attempt_id`."""
    state = vars(claim)  # unpickling filled it as it was written; the dataclass is frozen
    if "run_id" in state:
        state["attempt_id"] = state.pop("run_id")
    return claim


def _typed(result: RunResult) -> RunResult:
    """A result kept by a harness whose RunResult held its noise set and model as dicts: the same
    result with the records typed, as harness.store.results writes them."""
    if isinstance(result.noise_set, dict):
        from harness.noise.sets import NoiseSet

        result.noise_set = NoiseSet(**result.noise_set)
    if isinstance(result.artifact, dict):
        from harness.training.artifacts import Artifact

        result.artifact = Artifact(**result.artifact)
    return result
