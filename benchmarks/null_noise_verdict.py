"""How often the Table 3 noise verdict calls a null effect significant: per seed (now) against
pooled over (T, seed) pairs (the old test), side by side, and the power on a planted effect.

    python benchmarks/null_noise_verdict.py [--draws 200] [--table-draws 50] [--seed 0]

Data: `analysis.synthetic.noise_scores` (seeds that carry a shift, a CE+SCL − CE gap and a trend
of that gap into every T; per-job noise on top). "significant": some task's Holm-adjusted p (over
the tasks) < 0.05. --table-draws also runs the real `build_table(df, 3)` on that many null draws
and counts the report's verdict (Holm over every cell of the table).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import build_table  # noqa: E402
from analysis.calibration import TESTS, significant_share  # noqa: E402
from analysis.synthetic import NOISY_T, noise_frame, noise_scores  # noqa: E402
from analysis.tables import ALPHA  # noqa: E402

ALL_T = (0.0,) + NOISY_T
SCENARIOS = [  # (label, keyword arguments of significant_share)
    ("null: 3 tasks, 4 T, 10 seeds", {}),
    ("null: 3 tasks, 5 T, 10 seeds", dict(temps=ALL_T)),
    ("null: 1 task, 4 T, 10 seeds", dict(tasks=("qnli",))),
    ("null: 1 task, 5 T, 5 seeds", dict(tasks=("qnli",), temps=ALL_T, seeds=5)),
    ("null: 3 tasks, 4 T, 5 seeds", dict(seeds=5)),
    ("null, no seed-shared gap (seed_gap_sd 0)", dict(seed_gap_sd=0.0, seed_slope_sd=0.0)),
    ("null, seed-shared gap sd 0.75", dict(seed_gap_sd=0.75)),
    ("null, seed-shared gap sd 3", dict(seed_gap_sd=3.0)),
    ("planted gap +2 points, no trend", dict(effect=2.0)),
    ("planted trend +6 points per unit T", dict(slope=6.0)),
    ("planted trend +3 points per unit T", dict(slope=3.0)),
]


def table_verdicts(draws: int, seed: int) -> dict[str, float]:
    """Null draws through build_table: share where some 'average' cell (main effect) or some
    trend row is significant after the table's own Holm correction."""
    rng = np.random.default_rng(seed)
    main = trend = 0
    for d in range(draws):
        ce, scl = noise_scores(rng=rng)
        t = build_table(noise_frame(ce, scl), 3, "mean", n_resamples=500, seed=d)
        main += any(x.comparison.p_holm < ALPHA for x in t.tests if x.col == "average")
        trend += any(x.p_holm < ALPHA for x in t.trends)
    return {"main (average cells)": main / draws, "trend rows": trend / draws}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--table-draws", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(f"share of {args.draws} draws called significant (Holm over tasks, alpha {ALPHA}); "
          "defaults: seed sd 2, seed gap sd 1.5, seed slope sd 1.5 /unit T, run sd 1.5 (points)")
    width = max(len(s) for s, _ in SCENARIOS)
    print(f"{'scenario':<{width}}  " + "  ".join(f"{k:>18}" for k in TESTS))
    for label, kw in SCENARIOS:
        share = significant_share(args.draws, rng=args.seed, **kw)
        print(f"{label:<{width}}  " + "  ".join(f"{100 * share[k]:>17.1f}%" for k in TESTS))
    if args.table_draws:
        got = table_verdicts(args.table_draws, args.seed)
        print(f"through build_table(df, 3), {args.table_draws} null draws (3 tasks, 4 T, 10 seeds; "
              "Holm over the table): " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in got.items()))
    print(f"{time.perf_counter() - t0:.1f} s; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
