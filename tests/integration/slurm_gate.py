"""A job runner for tests/integration/test_slurm.py, loaded by workers that Slurm starts
(`--runner slurm_gate:gated`, tests/integration on PYTHONPATH)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from harness.errors import JobInterrupted
from harness.training.runner import RunContext, RunResult
from harness.protocol.spec import JobSpec
from runners import slow


def gated(spec: JobSpec, ctx: RunContext) -> RunResult:
    """runners.slow, once the file HARNESS_TEST_GATE exists. Until then the job waits inside the
    job (marked started, honouring should_stop), so that a test cancels or kills a worker mid-job
    without racing the clock."""
    gate = Path(os.environ["HARNESS_TEST_GATE"])
    (ctx.run_dir / f"started.{os.getpid()}").write_text("")
    while not gate.exists():
        if ctx.should_stop():
            raise JobInterrupted()
        time.sleep(0.05)
    return slow(spec, ctx)
