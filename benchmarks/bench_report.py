"""Time `build_table(df, 2)` + `render` on a database of 100,000 results.

    python benchmarks/bench_report.py [--rows 100000] [--scenario mixed|dense] [--db PATH]

mixed: Table 2's 360 runs (2 models × 9 cells × 2 losses × 10 seeds) among ~99,640 results of
       other settings (other N and tasks): the table is found by vectorised selection.
dense: all 100,000 results in Table 2's cells (~5,556 seeds per cell): the statistics run on
       thousands of pairs per cell.
Loading (one SELECT into a DataFrame) is timed apart from build + render. The database is built
once and kept (default: a file in the system temp folder) so reruns time only the analysis.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis import build_table, load_results, render  # noqa: E402
from analysis.synthetic import grid, make_db, synthetic_results  # noqa: E402
from harness.store import migrations  # noqa: E402
from harness.store.db import make_engine  # noqa: E402


def build_frame(rows: int, scenario: str) -> pd.DataFrame:
    if scenario == "dense":
        seeds = range(-(-rows // 18))
        return synthetic_results(grid(2), seeds=seeds, effect=0.01, n_test=50).iloc[:rows]
    table2 = [synthetic_results(grid(2), model=m, effect=0.02, n_test=50, rng=i)
              for i, m in enumerate(["sentence-transformers/paraphrase-MiniLM-L3-v2", "distilroberta-base"])]
    rest = rows - sum(len(f) for f in table2)
    other = [dict(task=t, n=n) for n in (50, 200, 500, 2000) for t in ("sst2", "qnli", "mnli", "cola", "mrpc", "rte")]
    filler = synthetic_results(other, seeds=range(-(-rest // (2 * len(other)))), n_test=20, rng=9).iloc[:rest]
    return pd.concat(table2 + [filler], ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--scenario", choices=("mixed", "dense"), default="mixed")
    ap.add_argument("--db", type=Path, default=None)
    ap.add_argument("--fmt", default="terminal")
    args = ap.parse_args()
    # The cached database is named by schema revision, so a schema change builds a fresh one.
    path = args.db or Path(tempfile.gettempdir()) / f"bench_report_{args.scenario}_{args.rows}_v{migrations.head()}.db"
    if not path.exists():
        t0 = time.perf_counter()
        make_db(path, build_frame(args.rows, args.scenario), predictions=False)
        print(f"built {path} in {time.perf_counter() - t0:.1f} s")
    engine = make_engine("sqlite:///" + str(path))

    t0, c0 = time.perf_counter(), time.process_time()
    df = load_results(engine)
    t1, c1 = time.perf_counter(), time.process_time()
    table = build_table(df, 2, "top3")
    t2 = time.perf_counter()
    text = render(table, args.fmt)
    t3, c3 = time.perf_counter(), time.process_time()
    print(f"{len(df):,} results ({args.scenario}); Table 2 holds {sum(c.n_runs for c in table.cells):,} runs "
          f"in {len(table.sections)} section(s), {len(table.tests)} tests; output {len(text):,} characters")
    print(f"load_results (one SELECT):  {t1 - t0:6.3f} s")
    print(f"build_table(df, 2):         {t2 - t1:6.3f} s")
    print(f"render({args.fmt!r}):{' ' * max(0, 14 - len(args.fmt))}{t3 - t2:6.3f} s")
    print(f"build_table + render:       {t3 - t1:6.3f} s   (with load: {t3 - t0:.3f} s)")
    # CPU seconds of this process: what the wall clock shows on a machine with nothing else running
    print(f"CPU time: load {c1 - c0:.3f} s, build_table + render {c3 - c1:.3f} s")


if __name__ == "__main__":
    main()
