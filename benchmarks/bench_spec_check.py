"""How fast `check_spec_against_data` checks specs against the local data mirror: what `harness
enqueue` pays per job. The first check of a task counts its rows; later ones use that count.

    python benchmarks/bench_spec_check.py [--specs 300] [--task sst2] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.protocol.data import check_spec_against_data  # noqa: E402
from harness.protocol.spec import JobSpec  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--specs", type=int, default=300)
    ap.add_argument("--task", default="sst2")
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    args = ap.parse_args()
    specs = [JobSpec.make(task=args.task, n=100, seed=s) for s in range(args.specs + 1)]
    t0 = time.perf_counter()
    check_spec_against_data(specs[0], args.data_dir)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in specs[1:]:
        check_spec_against_data(s, args.data_dir)
    rest = time.perf_counter() - t0
    print(f"{args.task}: first check {1e3 * first:.1f} ms (counts the rows); then {args.specs} checks in "
          f"{1e3 * rest:.1f} ms = {1e6 * rest / args.specs:.1f} µs each; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
