"""`harness work --workers K`: K worker processes on this machine, sharing its cores.

Each process is an ordinary `harness work` (the queue's atomic claim keeps them apart) with
cores // K threads and passive OpenMP waits (harness.runtime.threads). On a CPU this is the fast way to
run a campaign: small matrix products use two threads poorly, so two one-thread workers on two
cores finish more jobs per hour than one two-thread worker. SIGINT/SIGTERM are passed on to every
worker, which hands its current job back and exits.
"""

from __future__ import annotations

import signal
import subprocess
import sys

from harness.runtime import threads


def run_local_workers(workers: int, work_args: list[str]) -> int:
    """Run `harness work *work_args` `workers` times side by side; the worst exit status."""
    env = threads.worker_environment(workers)
    command = [sys.executable, "-m", "harness.cli", "work", *work_args]
    procs = [subprocess.Popen(command, env=env) for _ in range(workers)]

    def forward(signum, _frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [p.wait() for p in procs]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return max(codes, key=abs)
