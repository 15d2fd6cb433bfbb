"""Turning a grid and the user's overrides into validated job specs, before anything is written.

Everything that can fail a job for good and can be known now is checked here, once per distinct
value: each spec's fields, each task's data against N, each model's configuration and files
against the max length (not its weights). A job that would fail on its first step is refused at
enqueue with one line instead of failing later, one job at a time.
"""

from __future__ import annotations

from harness import grids
from harness.spec import JobSpec


def plan_jobs(grid: grids.Grid, overrides: dict, *, check_models: bool = True
              ) -> list[tuple[JobSpec, str | None]]:
    """Expand the grid with overrides and check every spec against the data and model it will use.

    check_models=False skips the model check (a machine that does not hold the workers' models).
    Raises HarnessError (one line) on the first problem; nothing is written by this function.
    """
    from harness.data import check_spec_against_data, check_spec_against_task
    from harness.models import check_model

    model = overrides.get("model")
    if model is not None and not model.strip():
        check_model(model)  # an empty --model is refused even with --no-check
    jobs = grids.expand(grid, **overrides)
    seen_data: set[tuple] = set()
    lengths: dict[str, set[int]] = {}
    for spec, _ in jobs:
        check_spec_against_task(spec)  # loss × task: per spec, it is cheap
        key = (spec.task, spec.n, spec.per_class, spec.sampling)
        if key not in seen_data:  # the data check depends only on these
            seen_data.add(key)
            check_spec_against_data(spec)
        lengths.setdefault(spec.model, set()).add(spec.max_length)
    if check_models:
        for name, wanted in lengths.items():
            check_model(name, wanted)
    return jobs
