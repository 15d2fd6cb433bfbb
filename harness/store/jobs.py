"""What the queue's rows mean: a job's status, an attempt's outcome, and the claim a worker holds.

Kept apart from harness.store.queue (the verbs) so that the result writer (harness.store.results)
and the readers (analysis) can name them without importing the queue.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from harness.protocol.spec import JobSpec


class _Value(str, enum.Enum):
    """A string enum that is stored, compared and printed as its value ('done', not Status.DONE)."""

    def __str__(self) -> str:
        return self.value


class Status(_Value):
    """A job's state (jobs.status)."""

    QUEUED = "queued"  # waiting for a worker
    RUNNING = "running"  # claimed; a worker holds the lease and renews it by heartbeat
    DONE = "done"  # finished with exactly one row in results
    FAILED = "failed"  # failed on its last attempt (or permanently); the error is kept
    CANCELLED = "cancelled"  # withdrawn by a user; never claimed again unless retried


class Outcome(_Value):
    """How one attempt of a job ended (attempts.outcome)."""

    RUNNING = "running"  # not ended yet
    DONE = "done"  # its result was stored
    FAILED = "failed"  # it raised; attempts.error holds the traceback
    LOST = "lost"  # its lease expired: the worker stopped sending heartbeats
    ABANDONED = "abandoned"  # it ended after the job was no longer its own; nothing it made was kept
    INTERRUPTED = "interrupted"  # handed back unfinished: the worker was asked to stop
    DEFERRED = "deferred"  # handed back unrun: the model it starts from must be made again
    DEVICE_FAULT = "device-fault"  # handed back: the GPU failed under it


@dataclass(frozen=True)
class Claim:
    """A job a worker holds: attempt_id identifies this attempt, and every later verb checks it."""

    job_id: str
    attempt_id: int
    attempt: int
    grid: str
    spec: JobSpec
    worker: str
    spec_json: str  # as stored, so the result row copies it without re-serialising
