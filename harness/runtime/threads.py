"""CPU threads of worker processes that share a machine.

A worker on a CPU runs small matrix products in OpenMP parallel regions. Two habits make
processes that share cores slow each other down far more than their share:

* more threads than cores (torch's default counts every core of the machine, not the ones this
  process may use), so threads of one process queue behind each other;
* OpenMP's default wait policy: a thread that finishes its part of a parallel region spins for a
  while before sleeping. Beside another busy process the spinning threads take the cores the
  other process's threads need, and both wait on each other (SST-2 validation beside a busy
  process: 4.7 s with 2 spinning threads, 2.5 s with OMP_WAIT_POLICY=PASSIVE).

So a worker uses at most as many threads as it has cores, waits passively, and `harness work
--workers K` gives each of its K processes cores // K threads. The wait policy is read once,
when the OpenMP runtime loads with torch: `prepare_process()` must run before torch is imported.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

WAIT_POLICY = "PASSIVE"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cores() -> int:
    """CPUs this process may run on: its affinity mask, lowered by a cgroup CPU quota if any."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def threads_for(workers: int = 1) -> int:
    """Threads per worker when `workers` workers share this machine's cores."""
    return max(1, cores() // max(1, workers))


def worker_environment(workers: int, env: dict | None = None) -> dict:
    """The environment of one of `workers` worker processes: its share of the cores, passive
    waits (an explicit OMP_WAIT_POLICY is kept)."""
    out = dict(os.environ if env is None else env)
    for name in THREAD_VARIABLES:
        out[name] = str(threads_for(workers))
    out.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    return out


def prepare_process() -> None:
    """Before torch is imported: passive OpenMP waits unless the user chose a policy."""
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


def apply_threads() -> int:
    """After torch is imported: intra-op threads = OMP_NUM_THREADS if set, else the cores, and
    never more than the cores. Returns the number set."""
    import torch

    limit = cores()
    try:
        wanted = int(os.environ.get("OMP_NUM_THREADS", "") or limit)
    except ValueError:
        wanted = limit
    n = max(1, min(wanted, limit))
    torch.set_num_threads(n)
    return n
