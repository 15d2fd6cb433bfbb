"""Hyper-parameters chosen on validation, as the paper chose them: never on test, never on the
seeds that are reported.

The `tune` grid runs, per task, CE at each of its learning rates and CE+SCL at each (λ, τ) and
learning rate, on tuning seeds no reported grid uses. `select` then picks, per (task, model):

1. the learning rate with CE's best mean validation score over the tuning seeds;
2. λ and τ with CE+SCL's best mean validation score at that learning rate.

Both losses keep one learning rate, so the reported CE and CE+SCL runs of a cell differ only in the
loss and stay paired in every table (the analysis pairs runs with equal hyper-parameters). AdamW
rescales each step, so λ's down-weighting of CE does not call for a larger step. The CE+SCL runs at
the other learning rates are kept and shown in the report, so a reader can see whether CE+SCL would
have preferred another. Ties go to the smaller learning rate, then the smaller λ and τ.

The grid can also run in two steps where CPU time is short: `--losses ce` first, then `scl_step`
(`harness tune scl`) enqueues CE+SCL at CE's learning rate alone (36 jobs instead of 108).
`enqueue --tuned` reads the stored choice: `tuned_fields` gives the spec fields it sets.

Choices are kept per tuning grid: `tune` (protocol v1) and `tune-v2` stand side by side, and each
grid that `--tuned` applies to names the tuning grid it takes its choices from (`Grid.tuned_by`).
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from harness.store import db
from harness.protocol import grids
from harness.errors import HarnessError
from harness.store.jobs import Status
from harness.protocol.spec import SMALL_MODEL, JobSpec

TUNE_GRID = "tune"
_TUNING_GRIDS = tuple(sorted({g.tuned_by for g in grids.GRIDS.values() if g.tuned_by}))
RULE = ("learning rate: CE's best mean validation score over the tuning seeds; λ, τ: CE+SCL's best "
        "mean validation score over the tuning seeds at that learning rate; ties to the smaller value")
# What a candidate setting is: the fields the tune grid varies (the rest must be shared).
VARIED = ("loss", "lr", "lam", "tau", "scl_reduction")
# Spec fields that differ per job without making it another setting.
PER_JOB = ("seed", "train_seed")
# Grids whose jobs `enqueue --tuned` can set, the fields it sets, and whose choice each job takes
# (grids.tuning_task): facts of the protocol, which the report's filter reads too.
TUNED_GRIDS, TUNED_FIELDS = grids.TUNED_GRIDS, grids.TUNED_FIELDS


@dataclass(frozen=True)
class Candidate:
    """One setting tried: its validation score on each tuning seed."""

    loss: str
    lr: float
    lam: float
    tau: float | None
    scores: dict[int, float]  # seed -> validation score of the selected epoch
    job_ids: tuple[str, ...]

    @property
    def mean(self) -> float:
        return sum(self.scores.values()) / len(self.scores)

    def rank_key(self):
        return (-self.mean, self.lr, self.lam, self.tau or 0.0)

    def record(self) -> dict:
        return dict(loss=self.loss, lr=self.lr, lam=self.lam, tau=self.tau, mean=self.mean,
                    scores={str(k): v for k, v in sorted(self.scores.items())},
                    job_ids=list(self.job_ids))


@dataclass(frozen=True)
class Choice:
    task: str
    model: str
    lr: float
    lam: float
    tau: float
    warmup_ratio: float
    metric: str
    ce_val_score: float
    scl_val_score: float
    n: int | None
    seeds: tuple[int, ...]
    candidates: tuple[Candidate, ...]
    base: dict  # spec fields every tuning job of the task shared
    grid: str = TUNE_GRID  # the tuning grid it was chosen from

    def fields(self) -> dict:
        """The JobSpec fields a tuned job takes from this choice."""
        return dict(lr=self.lr, lam=self.lam, tau=self.tau, warmup_ratio=self.warmup_ratio)


# ---- select -------------------------------------------------------------------------------

def select(engine: Engine, *, model: str = SMALL_MODEL, tasks: list[str] | None = None,
           grid: str = TUNE_GRID) -> list[Choice]:
    """The choice for each task (all tasks with tuning jobs of `model`, or `tasks`), from the
    finished tuning grid. Raises HarnessError, naming what is missing, unless every tuning job of
    each task is done."""
    by_task = _rows_by_task(engine, model, tasks, grid)
    return [dataclasses.replace(_choose(task, model, by_task[task], grid), grid=grid)
            for task in sorted(by_task)]


def scl_step(engine: Engine, *, model: str = SMALL_MODEL, tasks: list[str] | None = None,
             grid: str = TUNE_GRID) -> list[JobSpec]:
    """Step 2 of a tuning run in two steps: per task, once all its CE tuning jobs are done, the
    CE+SCL jobs at CE's chosen learning rate: each (λ, τ) of the tune grid on each CE job's
    sample, every other field as that CE job had it. Raises HarnessError while CE is unfinished."""
    out = []
    for task, rows in sorted(_rows_by_task(engine, model, tasks, grid).items()):
        ce_rows = [r for r in rows if JobSpec.from_json(r["spec"]).loss == "ce"]
        if not ce_rows:
            raise HarnessError(f"tuning of {task} ({model}) has no CE runs to choose the learning rate from")
        _check_complete(task, model, ce_rows, grid)
        specs = {r["id"]: JobSpec.from_json(r["spec"]) for r in ce_rows}
        _shared_base(task, specs.values())
        (best, *_) = sorted(_candidates(ce_rows, specs), key=Candidate.rank_key)
        for spec in (specs[i] for i in best.job_ids):
            for lam, tau in grids.get_grid(grid).scl_settings:
                out.append(JobSpec.make(**(dataclasses.asdict(spec) | dict(
                    loss="ce+scl", lam=lam, tau=tau, scl_reduction=None))))
    return out


def _rows_by_task(engine: Engine, model: str, tasks: list[str] | None, grid: str) -> dict[str, list[dict]]:
    if grid not in _TUNING_GRIDS:
        raise HarnessError(f"{grid!r} is not a tuning grid; choose one of {', '.join(_TUNING_GRIDS)}")
    rows = _tuning_rows(engine, model, tasks, grid)
    if not rows:
        raise HarnessError(f"no tuning jobs of grid {grid} for model {model}"
                           + (f" and task(s) {', '.join(tasks)}" if tasks else "")
                           + f": run `harness enqueue --grid {grid}` and `harness work --grid {grid}` first")
    by_task = defaultdict(list)
    for r in rows:
        by_task[r["task"]].append(r)
    missing = [t for t in (tasks or []) if t not in by_task]
    if missing:
        raise HarnessError(f"no tuning jobs for task(s) {', '.join(missing)} with model {model}: "
                           f"run `harness enqueue --grid {grid}` first")
    return by_task


def _tuning_rows(engine: Engine, model: str, tasks: list[str] | None, grid: str) -> list[dict]:
    j, r = db.jobs, db.results
    q = (sa.select(j.c.id, j.c.task, j.c.status, j.c.spec, r.c.val_score, r.c.metric)
         .select_from(j.outerjoin(r, r.c.job_id == j.c.id))
         .where(j.c.grid == grid, j.c.model == model))
    if tasks:
        q = q.where(j.c.task.in_(tasks))
    with db.connect(engine) as conn:
        return [dict(m) for m in conn.execute(q.order_by(j.c.seq)).mappings()]


def _choose(task: str, model: str, rows: list[dict], grid: str) -> Choice:
    _check_complete(task, model, rows, grid)
    specs = {r["id"]: JobSpec.from_json(r["spec"]) for r in rows}
    base = _shared_base(task, specs.values())
    seeds = sorted({s.seed for s in specs.values()})
    cands = _candidates(rows, specs)
    for c in cands:
        if sorted(c.scores) != seeds:
            raise HarnessError(f"tuning of {task} ({model}) is incomplete: {c.loss} at lr {c.lr:g}"
                               + (f", λ {c.lam:g}, τ {c.tau:g}" if c.loss != "ce" else "")
                               + f" ran on seeds {sorted(c.scores)}, not all of {seeds}: "
                               "enqueue the tune grid again with the same options")
    ce = sorted((c for c in cands if c.loss == "ce"), key=Candidate.rank_key)
    if not ce:
        raise HarnessError(f"tuning of {task} ({model}) has no CE runs to choose the learning rate from")
    lr = ce[0].lr
    scl = sorted((c for c in cands if c.loss == "ce+scl" and c.lr == lr), key=Candidate.rank_key)
    if not scl:
        raise HarnessError(f"tuning of {task} ({model}) has no CE+SCL runs at CE's learning rate "
                           f"{lr:g} to choose λ and τ from: `harness enqueue --grid {grid} --tasks {task} "
                           f"--model {model} --losses ce+scl --lr {lr:g}`, then select again")
    metrics = {r["metric"] for r in rows}
    return Choice(task=task, model=model, lr=lr, lam=scl[0].lam, tau=scl[0].tau,
                  warmup_ratio=base["warmup_ratio"], metric=metrics.pop(), ce_val_score=ce[0].mean,
                  scl_val_score=scl[0].mean, n=base.get("n"), seeds=tuple(seeds),
                  candidates=tuple(sorted(cands, key=lambda c: (c.loss, c.lr, c.lam, c.tau or 0.0))),
                  base=base)


def _check_complete(task: str, model: str, rows: list[dict], grid: str = TUNE_GRID) -> None:
    counts = defaultdict(int)
    for r in rows:
        counts[r["status"]] += 1
    done = counts[Status.DONE]
    if done == len(rows) and all(r["val_score"] is not None for r in rows):
        return
    rest = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()) if k != Status.DONE)
    hint = (f"`harness retry --grid {grid}` re-queues failed and cancelled jobs"
            if counts[Status.FAILED] or counts[Status.CANCELLED] else
            f"let the workers finish (`harness work --grid {grid} --until-empty`)")
    if done == len(rows):
        rest, hint = "some without a validation score", "check `harness status`"
    raise HarnessError(f"tuning of {task} ({model}) is incomplete: {done} of {len(rows)} "
                       f"jobs done ({rest}); {hint}, then select again")


def _shared_base(task: str, specs) -> dict:
    """The spec fields every tuning job shares; refuse jobs that differ in anything but the
    tuned settings and the seed (two tune enqueues with different options)."""
    bases = {json.dumps({k: v for k, v in dataclasses.asdict(s).items()
                         if k not in VARIED + PER_JOB}, sort_keys=True) for s in specs}
    if len(bases) > 1:
        decoded = [json.loads(b) for b in bases]
        differ = sorted(k for k in decoded[0] if len({json.dumps(d.get(k)) for d in decoded}) > 1)
        raise HarnessError(f"tuning jobs of {task} differ in {', '.join(differ)}, not only in the "
                           "tuned settings: cancel the ones you do not mean (`harness cancel --job`)")
    return json.loads(bases.pop())


def _candidates(rows: list[dict], specs: dict[str, JobSpec]) -> list[Candidate]:
    groups: dict[tuple, dict] = {}
    for r in rows:
        s = specs[r["id"]]
        g = groups.setdefault((s.loss, s.lr, s.lam, s.tau), dict(scores={}, ids=[]))
        g["scores"][s.seed] = float(r["val_score"])
        g["ids"].append(r["id"])
    return [Candidate(loss, lr, lam, tau, g["scores"], tuple(g["ids"]))
            for (loss, lr, lam, tau), g in groups.items()]


# ---- store and read -----------------------------------------------------------------------

def store(engine: Engine, choices: list[Choice]) -> None:
    """Write the choices, replacing earlier ones for the same (grid, task, model), in one transaction."""
    t = db.tuning_choices
    with db.connect(engine) as conn, conn.begin():
        for c in choices:
            conn.execute(sa.delete(t).where(t.c.grid == c.grid, t.c.task == c.task, t.c.model == c.model))
            conn.execute(sa.insert(t).values(
                grid=c.grid, task=c.task, model=c.model, lr=c.lr, lam=c.lam, tau=c.tau,
                warmup_ratio=c.warmup_ratio, metric=c.metric, ce_val_score=c.ce_val_score,
                scl_val_score=c.scl_val_score, n=c.n, seeds=json.dumps(list(c.seeds)), rule=RULE,
                candidates=json.dumps([x.record() for x in c.candidates]),
                base=json.dumps(c.base, sort_keys=True)))


def stored(engine: Engine, model: str | None = None, grid: str = TUNE_GRID) -> dict[tuple[str, str], dict]:
    """Stored choices of a tuning grid by (task, model): the tuned spec fields."""
    t = db.tuning_choices
    q = sa.select(t.c.task, t.c.model, *(t.c[k] for k in TUNED_FIELDS)).where(t.c.grid == grid)
    if model is not None:
        q = q.where(t.c.model == model)
    with db.connect(engine) as conn:
        return {(r["task"], r["model"]): {k: r[k] for k in TUNED_FIELDS}
                for r in conn.execute(q).mappings()}


def tuned_fields(engine: Engine, grid: str, tasks, model: str) -> dict[str, dict]:
    """Per task of the grid, the spec fields `enqueue --tuned` sets (lr, λ, τ, warm-up ratio).

    Raises HarnessError for a grid that is not tuned this way or a task without a stored choice.
    """
    if grid not in TUNED_GRIDS:
        raise HarnessError(f"--tuned applies to the {', '.join(TUNED_GRIDS)} grids, not {grid!r}")
    tuning = grids.get_grid(grid).tuned_by
    choices = stored(engine, model, tuning)
    out = {}
    for task in tasks:
        source = grids.tuning_task(grid, task)
        if (source, model) not in choices:
            raise HarnessError(f"no tuned hyper-parameters stored for {source} with model {model}: "
                               "run the tune grid and `harness tune select` first")
        out[task] = choices[(source, model)]
    return out
