"""Grid expansion options that reshape a design (the pinned ids of every grid: test_spec_ids.py)."""

from __future__ import annotations

import pytest

from harness.protocol import grids


def test_the_transfer_grid_takes_a_smaller_stage_1():
    jobs = grids.expand(grids.get_grid("transfer"), tasks=["cr"], seeds=[0], stage1_n=500, stage1_epochs=2)
    s1 = [s for s, dep in jobs if s.task == "sst2"]
    assert {(s.n, s.epochs) for s in s1} == {(500, 2)}
    ids = {s.job_id for s in s1}
    assert all(dep in ids for s, dep in jobs if s.init_from) and all(s.init_from == dep for s, dep in jobs if dep)
    with pytest.raises(Exception, match="transfer grid only"):
        grids.expand(grids.get_grid("glue"), stage1_n=500)
