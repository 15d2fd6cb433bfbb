"""Synthetic results with a known effect, for tests and benchmarks of `analysis`.

`synthetic_results` draws one row per job in the shape of `load_results` (scores as fractions):
a run's true accuracy is base(task) + a shift shared by the CE and CE+SCL runs of one seed (so
pairing by seed helps, as it does for real runs that train on the same sample) + `effect` for
CE+SCL; its test score is the accuracy of n_test Bernoulli predictions, so seed-level and
example-level tests both see the sampling noise they model. `fill_db` writes such a frame (with
its jobs, attempts, predictions and embeddings) into a harness database.
"""

from __future__ import annotations

import json
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import sqlalchemy as sa

from analysis.layouts import FULL_TRAIN_ROWS, LAYOUTS
from harness.store import db as hdb
from harness.protocol.paper import NOISE, PAPER_BATCH_SIZE, TRANSFER
from harness.store.jobs import Outcome, Status
from harness.protocol.spec import SMALL_MODEL, JobSpec

MODEL = SMALL_MODEL
BASE = {"sst2": 0.80, "qnli": 0.65, "mnli": 0.45, "cola": 0.70, "mrpc": 0.72, "rte": 0.58,
        "amazon_polarity_sample": 0.85, "yelp_polarity": 0.86, "mr": 0.75, "cr": 0.78, "mpqa": 0.80,
        "subj": 0.88}
NUM_LABELS = {"mnli": 3}
FULL_ROWS = FULL_TRAIN_ROWS | {"qnli": 9_999, "mnli": 9_999}  # the local mirror's subsets


def grid(table: int) -> list[dict]:
    """The spec fields of each cell of one of the paper's tables (losses and seeds come later)."""
    if table not in LAYOUTS or LAYOUTS[table].design is TRANSFER:  # its runs need a stage-1 model
        raise ValueError(f"no synthetic grid for table {table}; use transfer_results for transfer")
    return LAYOUTS[table].design.cells()


def synthetic_results(cells: Iterable[dict], *, seeds: Iterable[int] = range(10), effect: float = 0.0,
                      losses=("ce", "ce+scl"), model: str = MODEL, n_test: int = 200,
                      seed_sd: float = 0.03, rng=0, extra: dict | None = None,
                      grid: str | None = None) -> pd.DataFrame:
    """One row per job: every cell × loss × seed.

    effect: accuracy added to CE+SCL (a float, or a dict cell-task -> float). seed_sd: sd of the
    per-seed shift CE and CE+SCL share. n_test: test examples behind each test score. extra: spec
    fields set on every job (e.g. lr, epochs). grid: the jobs' grid (default: the paper's grid
    that holds such a job, see `grid_of`). The frame carries `_correct` (0/1 per example) for
    fill_db's predictions.
    """
    rng = np.random.default_rng(rng)
    recs = []
    for cell in cells:
        fields = {"noise": 0.0, "batch_size": 16, **cell, **(extra or {})}
        task = fields["task"]
        eff = effect.get(task, 0.0) if isinstance(effect, dict) else effect
        for s in seeds:
            shift = rng.normal(0, seed_sd)
            for loss in losses:
                p = float(np.clip(BASE.get(task, 0.7) + shift + (eff if loss == "ce+scl" else 0.0), 0.01, 0.99))
                correct = (rng.random(n_test) < p).astype(np.int8)
                val = float(np.clip(p + rng.normal(0, 0.02), 0, 1))
                recs.append(_record(dict(fields, seed=s, loss=loss, model=model), correct, val, grid))
    return _frame(recs)


NOISY_T = NOISE.noisy  # Table 3's noisy temperatures (its 'average' column)
TABLE3_TASKS = NOISE.tasks


def noise_scores(*, tasks=TABLE3_TASKS, seeds: int = 10, temps=NOISY_T, effect: float = 0.0,
                 slope: float = 0.0, seed_sd: float = 2.0, seed_gap_sd: float = 1.5,
                 seed_slope_sd: float = 1.5, run_sd: float = 1.5, rng=0) -> tuple[np.ndarray, np.ndarray]:
    """Table 3 as arrays: CE and CE+SCL test scores in points, each shaped (tasks, seeds, temps).

    A seed is one training sample; its noisy sets at every T are copies of it, so it carries
    effects into every T: a shift shared by both losses (seed_sd), and its own CE+SCL − CE gap
    (seed_gap_sd) and trend of that gap with T (seed_slope_sd, points per unit T). On top, each
    job has its own noise (run_sd: training randomness and test-set sampling). The planted truth:
    CE+SCL − CE = effect + slope · (T − mean T), in points.
    """
    rng = np.random.default_rng(rng)
    x = np.asarray(temps, float) - np.mean(temps)
    shape = (len(tasks), seeds, 1)
    base = np.array([100 * BASE.get(t, 0.7) for t in tasks])[:, None, None]
    shared = base + rng.normal(0, seed_sd, shape)
    gap = (effect + slope * x + rng.normal(0, seed_gap_sd, shape)
           + rng.normal(0, seed_slope_sd, shape) * x)
    full = (len(tasks), seeds, len(temps))
    ce = shared + rng.normal(0, run_sd, full)
    scl = shared + gap + rng.normal(0, run_sd, full)
    return ce, scl


def noise_frame(ce: np.ndarray, scl: np.ndarray, *, tasks=TABLE3_TASKS, temps=NOISY_T,
                n_test: int = 1000, model: str = MODEL, mode: str = "augment") -> pd.DataFrame:
    """Results rows (the shape of load_results, scores as fractions) for `noise_scores` arrays:
    one job per task, seed, T and loss at N = 100. A score is kept to 1 / n_test (the test set).
    mode: the noisy copies beside the originals (augment, Table 3) or instead of them (replace)."""
    recs = []
    for i, task in enumerate(tasks):
        for s in range(ce.shape[1]):
            for j, t in enumerate(temps):
                for loss, scores in (("ce", ce), ("ce+scl", scl)):
                    k = int(round(np.clip(scores[i, s, j], 0, 100) / 100 * n_test))
                    correct = (np.arange(n_test) < k).astype(np.int8)
                    noisy = dict(noise_mode=mode) if t else {}
                    recs.append(_record(dict(task=task, n=100, noise=float(t), seed=s, loss=loss,
                                             model=model, **noisy), correct, k / n_test))
    return _frame(recs)


def transfer_results(*, seeds: Iterable[int] = range(10), effect: float = 0.0, sd_ce: float = 0.04,
                     sd_scl: float = 0.01, tasks=("amazon_polarity_sample", "yelp_polarity"),
                     model: str = MODEL, n_test: int = 200, rng=0) -> pd.DataFrame:
    """Table 7: two full-SST-2 source jobs (CE, CE+SCL), transfer jobs from each (20 per class,
    n = 40) and baseline jobs (no source). CE transfer runs spread with sd_ce, CE+SCL with sd_scl."""
    rng = np.random.default_rng(rng)
    recs = []
    src = {}
    for loss in ("ce", "ce+scl"):
        r = _record(dict(task="sst2", n=None, seed=0, loss=loss, model=model),
                    (rng.random(n_test) < 0.9).astype(np.int8), 0.9)
        src[loss] = r["job_id"]
        recs.append(r)
    for task in tasks:
        for s in seeds:
            for row, loss, sd, eff in (("ce", "ce", sd_ce, 0.0), ("ce+scl", "ce+scl", sd_scl, effect),
                                       ("baseline", "ce", sd_ce, -0.05)):
                p = float(np.clip(BASE[task] + eff + rng.normal(0, sd), 0.01, 0.99))
                fields = dict(task=task, n=40, per_class=20, seed=s, loss=loss, model=model,
                              init_from=None if row == "baseline" else src[row])
                recs.append(_record(fields, (rng.random(n_test) < p).astype(np.int8), p))
    return _frame(recs)


def grid_of(spec: JobSpec) -> str:
    """The paper's grid that holds a job like this one, so that the report pools it as evidence
    (analysis.evidence): transfer (a stage, per class), noise, glue or batch (full data), fewshot."""
    if spec.init_from or spec.per_class:
        return "transfer"
    if spec.noise:
        return "noise-replace" if spec.noise_mode == "replace" else "noise"
    if spec.n is None:
        return "glue" if spec.batch_size == PAPER_BATCH_SIZE else "batch"
    return "fewshot"


def _record(fields: dict, correct: np.ndarray, val: float, grid: str | None = None) -> dict:
    spec = JobSpec.make(**fields)  # CE+SCL jobs get the paper's λ and τ
    full = spec.n is None
    acc = float(correct.mean())
    return {
        "job_id": spec.job_id, "grid": grid or grid_of(spec), "task": spec.task, "n": spec.n, "noise": spec.noise,
        "seed": spec.seed, "loss": spec.loss, "lam": spec.lam, "tau": spec.tau,
        "scl_reduction": spec.scl_reduction, "model": spec.model, "batch_size": spec.batch_size,
        "lr": spec.lr, "epochs": spec.epochs, "metric": "accuracy", "val_score": val, "test_score": acc,
        "val_accuracy": val, "test_accuracy": acc, "best_epoch": 3,
        "steps": spec.steps, "best_step": spec.steps,  # a step-budget job: selected at its last step
        "n_train": FULL_ROWS.get(spec.task, 1000) if full else (spec.n * (2 if spec.noise_mode == "augment" else 1)),
        "n_test": correct.size, "train_seconds": 60.0, "wall_seconds": 70.0,
        "batching": spec.batching, "sampling": spec.sampling, "spec": spec.to_json(),
        "init_from": spec.init_from, "per_class": spec.per_class,
        "noise_mode": spec.noise_mode, "max_length": spec.max_length,
        "warmup_ratio": spec.warmup_ratio, "weight_decay": spec.weight_decay, "val_size": spec.val_size,
        "train_seed": spec.train_seed, "_correct": correct,
    }


def _frame(recs: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(recs)
    for key in ("n", "per_class", "max_length", "val_size", "train_seed", "steps", "best_step"):
        df[key] = pd.array(df[key].tolist(), dtype="Int64")
    for key in ("init_from", "noise_mode", "tau", "scl_reduction"):
        df[key] = df[key].astype(object).where(df[key].notna(), None)
    return df


def fill_db(engine, df: pd.DataFrame, *, predictions: bool = True, embeddings: Iterable[str] = (),
            emb_rows: int = 120, emb_dim: int = 16, separation: Callable[[dict], float] | None = None,
            rng=0) -> None:
    """Write a synthetic frame as finished jobs: jobs, attempts and results rows (+ predictions).

    embeddings: job ids that get a test-set embedding matrix: Gaussian class clusters (unit sd)
    whose centres lie `separation(row)` from the origin; by default 4 for CE+SCL and 1 for CE
    (the picture of the paper's Figure 2).
    """
    rng = np.random.default_rng(rng)
    res_cols = [c.name for c in hdb.results.columns if c.name != "finished_at"]
    jobs, attempts, results, preds, embs = [], [], [], [], []
    labels = {}
    for i, r in enumerate(df.to_dict(orient="records"), start=1):
        spec = json.loads(r["spec"])
        jobs.append({"id": r["job_id"], "grid": r["grid"], "spec": r["spec"], "task": r["task"],
                     "n": _none(r["n"]), "noise": r["noise"], "seed": r["seed"], "loss": r["loss"],
                     "model": r["model"], "status": Status.DONE.value, "seq": i})
        attempts.append({"id": i, "job_id": r["job_id"], "attempt": 1, "worker": "synthetic",
                         "outcome": Outcome.DONE.value})
        results.append({c: _none(r.get(c)) for c in res_cols} | {"attempt_id": i})
        correct = r.get("_correct")
        task = r["task"]
        k = NUM_LABELS.get(task, 2)
        if predictions and correct is not None:
            if (task, len(correct)) not in labels:
                labels[(task, len(correct))] = np.random.default_rng(len(task)).integers(0, k, len(correct))
            y = labels[(task, len(correct))]
            yhat = np.where(correct == 1, y, (y + 1) % k)
            preds += [{"job_id": r["job_id"], "attempt_id": i, "example": e, "label": float(a),
                       "prediction": float(b)} for e, (a, b) in enumerate(zip(y, yhat))]
        if r["job_id"] in set(embeddings):
            y = rng.integers(0, k, emb_rows)
            sep = separation(r) if separation else (4.0 if spec["loss"] == "ce+scl" else 1.0)
            centers = rng.normal(0, 1, (k, emb_dim))
            centers *= sep / np.linalg.norm(centers, axis=1, keepdims=True)
            x = (centers[y] + rng.normal(0, 1, (emb_rows, emb_dim))).astype(np.float16)
            embs.append({"job_id": r["job_id"], "attempt_id": i, "split": "test", "rows": emb_rows, "dim": emb_dim,
                         "examples": json.dumps(list(range(emb_rows))), "labels": json.dumps(y.tolist()),
                         "data": x.tobytes()})
    with engine.begin() as conn:
        for table, rows in ((hdb.jobs, jobs), (hdb.attempts, attempts), (hdb.results, results),
                            (hdb.predictions, preds), (hdb.embeddings, embs)):
            if rows:
                conn.execute(sa.insert(table), rows)


def _none(x):
    if x is None or x is pd.NA or (isinstance(x, float) and np.isnan(x)):
        return None
    return x.item() if hasattr(x, "item") else x


def make_db(path, df: pd.DataFrame, **kw):
    """A new SQLite harness database at `path` holding `df`; returns its Engine."""
    engine = hdb.make_engine("sqlite:///" + str(path))
    hdb.upgrade(engine)
    fill_db(engine, df, **kw)
    return engine
