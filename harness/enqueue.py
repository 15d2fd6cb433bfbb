"""Turning a grid and the user's overrides into validated job specs, before anything is written.

Everything that can fail a job for good and can be known now is checked here, once per distinct
value: each spec's fields, each task's data against N, each model's configuration and files
against the max length (not its weights). A job that would fail on its first step is refused at
enqueue with one line instead of failing later, one job at a time.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from harness.protocol import grids
from harness import tuning
from harness.errors import HarnessError
from harness.protocol.spec import DEFAULT_MODEL, JobSpec


def plan_jobs(grid: grids.Grid, overrides: dict, *, check_models: bool = True,
              tuned: Engine | None = None) -> list[tuple[JobSpec, str | None]]:
    """Expand the grid with overrides and check every spec against the data and model it will use.

    check_models=False skips the model check (a machine that does not hold the workers' models).
    tuned: a database whose stored tuning choices set each task's lr, λ, τ and warm-up ratio
    (`enqueue --tuned`); they replace the grid's.
    Raises HarnessError (one line) on the first problem; nothing is written by this function.
    """
    from harness.protocol.data import check_spec_against_data, check_spec_against_task
    from harness.training.models import check_model

    model = overrides.get("model")
    if model is not None and not model.strip():
        check_model(model)  # an empty --model is refused even with --no-check
    jobs = grids.expand(grid, **overrides) if tuned is None else _expand_tuned(grid, overrides, tuned)
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


def _expand_tuned(grid: grids.Grid, overrides: dict, engine: Engine) -> list[tuple[JobSpec, str | None]]:
    """The grid expanded once per model and distinct tuned setting, with the tasks that take it
    (all of transfer's take SST-2's, so its stage-2 jobs keep their stage-1 dependencies): each
    model of a grid that crosses models takes its own choices."""
    pinned = [f"--{k.replace('_', '-')}" for k in tuning.TUNED_FIELDS if overrides.get(k) is not None]
    if pinned:
        raise HarnessError(f"--tuned sets {', '.join(tuning.TUNED_FIELDS)} from the stored choice: "
                           f"drop {', '.join(pinned)}")
    tasks = overrides.get("tasks") or grid.tasks
    models = [overrides["model"]] if overrides.get("model") else (
        list(grid.models) or [grid.base.get("model", DEFAULT_MODEL)])
    jobs = []
    for model in models:
        per_task = tuning.tuned_fields(engine, grid.name, tasks, model)
        by_setting: dict[tuple, list[str]] = {}
        for task in tasks:
            by_setting.setdefault(tuple(sorted(per_task[task].items())), []).append(task)
        for setting, group in by_setting.items():
            jobs += grids.expand(grid, **(overrides | dict(setting) | dict(tasks=group, model=model)))
    return jobs
