"""README line 1 in a folder like a clone, with a real 3-layer MiniLM on the real data: the smoke
grid goes to demo.db, trains, and its Table 2 says what it is; the campaign's results.db beside
it is the same file, byte for byte, afterwards. (One seed and one epoch: the README's 8 jobs of
6 epochs take minutes; the path through the commands is the same.)"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from analysis.synthetic import grid, make_db, synthetic_results


def harness(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_DB"}  # the default paths, as a newcomer
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_readme_line_one_leaves_the_campaign_database_unchanged(tmp_path):
    campaign = tmp_path / "results.db"
    make_db(campaign, synthetic_results(grid(2)[:1], seeds=range(3), rng=1)).dispose()
    before = hashlib.md5(campaign.read_bytes()).hexdigest()

    r = harness("enqueue", "--grid", "smoke", "--seeds", "1", "--epochs", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "added 2 jobs" in r.stdout and "(sqlite:///demo.db)" in r.stdout
    r = harness("work", "--until-empty", "--quiet", "--db", "sqlite:///demo.db", cwd=tmp_path)
    assert r.returncode == 0 and "2 done, 0 failed" in r.stderr, r.stderr
    r = harness("report", "--table", "2", "--db", "sqlite:///demo.db", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("What you ran: the smoke grid, 2 finished jobs (SST-2, N = 20")
    assert "1 epoch," in r.stdout and "not evidence" in r.stdout
    assert max(map(len, r.stdout.splitlines())) <= 100

    assert hashlib.md5(campaign.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.glob("results.db*")) == ["results.db"]
