"""Job runners for queue tests: they stand in for fine-tuning where only the queue is under test.
Worker subprocesses load them with `--runner runners:NAME` (tests/integration on PYTHONPATH)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from harness.errors import JobInterrupted, PermanentJobError
from harness.training.runner import Progress, RunContext, RunResult
from harness.protocol.spec import JobSpec


def _result(spec: JobSpec, score: float = 0.5) -> RunResult:
    return RunResult(metric="accuracy", val_score=score, test_score=score, val_accuracy=score,
                     test_accuracy=score, best_epoch=1, n_train=spec.n or 0, n_test=10,
                     train_seconds=0.0, metrics=[("validation", 1, "accuracy", score)],
                     predictions=[(i, i % 2, 1) for i in range(4)], train_examples=[1, 2, 3])


def instant(spec: JobSpec, ctx: RunContext) -> RunResult:
    """Returns at once: the queue's own cost is all that is measured."""
    return _result(spec, score=(spec.seed % 10) / 10)


def slow(spec: JobSpec, ctx: RunContext) -> RunResult:
    """Takes HARNESS_TEST_SLOW_SECONDS (default 3) in small steps, honouring should_stop; drops a
    marker file when it starts so a test knows the job is under way."""
    seconds = float(os.environ.get("HARNESS_TEST_SLOW_SECONDS", "3"))
    (ctx.run_dir / f"started.{os.getpid()}").write_text("")
    steps = max(1, int(seconds / 0.05))
    for step in range(steps):
        if ctx.should_stop():
            raise JobInterrupted()
        ctx.progress(Progress(phase="train", epoch=1, epochs=1, step=step + 1, steps=steps, loss=1.0))
        time.sleep(0.05)
    return _result(spec)


def crash(spec: JobSpec, ctx: RunContext) -> RunResult:
    raise RuntimeError("boom: a transient failure")


def nan(spec: JobSpec, ctx: RunContext) -> RunResult:
    raise PermanentJobError("non-finite loss at epoch 1 step 3")


def gpu_fault(spec: JobSpec, ctx: RunContext) -> RunResult:
    """A sticky CUDA error, as a device-side assert or an illegal address raises it."""
    import torch

    raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")


def _db_file() -> Path:
    return Path(os.environ["HARNESS_TEST_DB_FILE"])


def unlink_db(spec: JobSpec, ctx: RunContext) -> RunResult:
    """Deletes the SQLite file while the job runs (`rm results.db` beside a worker)."""
    _db_file().unlink()
    return _result(spec)


def replace_db(spec: JobSpec, ctx: RunContext) -> RunResult:
    """Moves a copy over the SQLite file while the job runs (a restore from a backup)."""
    import shutil

    copy = _db_file().with_suffix(".copy")
    shutil.copyfile(_db_file(), copy)
    os.replace(copy, _db_file())
    return _result(spec)


def truncate_db(spec: JobSpec, ctx: RunContext) -> RunResult:
    """Truncates the SQLite file to nothing while the job runs."""
    os.truncate(_db_file(), 0)
    return _result(spec)


def corrupt_db(spec: JobSpec, ctx: RunContext) -> RunResult:
    """Overwrites every page after the first with garbage while the job runs."""
    corrupt_pages(_db_file())
    return _result(spec)


def corrupt_pages(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(4096)
        f.write(bytes((i * 37 + 11) % 251 for i in range(max(0, size - 4096))))


def threads_seen(spec: JobSpec, ctx: RunContext) -> RunResult:
    """Records the worker's torch threads and whether OpenMP waits passively (1) or not (0);
    takes HARNESS_TEST_SLOW_SECONDS (default 0.5) so that several workers get a share."""
    import torch

    time.sleep(float(os.environ.get("HARNESS_TEST_SLOW_SECONDS", "0.5")))
    r = _result(spec)
    r.metrics = [("train", None, "threads", torch.get_num_threads()),
                 ("train", None, "passive", float(os.environ.get("OMP_WAIT_POLICY") == "PASSIVE"))]
    return r
