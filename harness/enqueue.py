"""Turning a grid and the user's overrides into validated job specs, before anything is written."""

from __future__ import annotations

from pathlib import Path

from harness import grids
from harness.errors import HarnessError
from harness.spec import JobSpec


def plan_jobs(grid: grids.Grid, overrides: dict) -> list[tuple[JobSpec, str | None]]:
    """Expand the grid with overrides and check every spec against the data it will use.

    Raises HarnessError (one line) on the first problem; nothing is written by this function.
    """
    from harness.data import check_spec_against_data

    model = overrides.get("model")
    if model and (model.startswith((".", "/", "~")) and not Path(model).expanduser().is_dir()):
        raise HarnessError(f"--model {model}: no such folder")
    jobs = grids.expand(grid, **overrides)
    seen: set[tuple] = set()
    for spec, _ in jobs:
        key = (spec.task, spec.n, spec.per_class, spec.sampling)
        if key not in seen:  # the data check depends only on these
            seen.add(key)
            check_spec_against_data(spec)
    return jobs
