"""Reading the database: the only module of `analysis` that runs SQL.

Each loader is one query (chunked by job id where a list of ids is given) into a DataFrame or
arrays; everything downstream is pure pandas/numpy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from harness.store import db as hdb

# JobSpec fields that the results table has no column for; load_results adds them from results.spec.
SPEC_EXTRA = ("init_from", "per_class", "noise_mode", "max_length", "warmup_ratio", "weight_decay",
              "val_size", "train_seed")
IN_CHUNK = 500  # job ids per IN (...) clause


def engine_of(db) -> Engine:
    """An Engine from an Engine, a database URL, or the path of an SQLite file."""
    if isinstance(db, Engine):
        return db
    if isinstance(db, Path) or (isinstance(db, str) and "://" not in db):
        return hdb.make_engine("sqlite:///" + str(db))
    return hdb.make_engine(db)


def json_of(engine: Engine, column):
    """A JSON text column as SQL JSON, so that the database (SQLite or PostgreSQL) reads its fields."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB
        return sa.cast(column, JSONB)
    return sa.type_coerce(column, sa.JSON)


def load_results(db) -> pd.DataFrame:
    """One row per finished job: the columns of the `results` table, in its order, then SPEC_EXTRA.

    db: an Engine, a SQLAlchemy URL, or an SQLite file path. One SELECT; on SQLite and PostgreSQL
    the database itself pulls SPEC_EXTRA out of the spec JSON (3× faster than json.loads per row
    at 100k rows), elsewhere Python does. A field a spec leaves out is None/NA.
    """
    engine = engine_of(db)
    r = hdb.results
    dialect = engine.dialect.name
    if dialect in ("sqlite", "postgresql"):
        spec = json_of(engine, r.c.spec)
        extra = [spec[k].as_string().label(k) if k in _TEXT_FIELDS else spec[k].as_float().label(k)
                 for k in SPEC_EXTRA]
        with hdb.connect(engine) as conn:
            df = pd.read_sql(sa.select(r, *extra), conn)
    else:
        with hdb.connect(engine) as conn:
            df = pd.read_sql(sa.select(r), conn)
        specs = [json.loads(s) for s in df["spec"]]
        for key in SPEC_EXTRA:
            df[key] = pd.Series([s.get(key) for s in specs], index=df.index, dtype=object)
    for key in _TEXT_FIELDS:
        df[key] = df[key].astype(object).where(df[key].notna(), None)
    # Rows written before schema 3 have no batching/sampling: that harness grouped batches by
    # length and drew uniform samples (per-class ones stratified).
    df["batching"] = df["batching"].fillna("length")
    df["sampling"] = df["sampling"].fillna(df["per_class"].map(
        lambda k: "uniform" if pd.isna(k) else "stratified"))
    for key in ("per_class", "max_length", "val_size", "train_seed", "steps", "best_step", "n"):
        df[key] = pd.to_numeric(df[key]).astype("Int64")
    for key in ("warmup_ratio", "weight_decay"):
        df[key] = pd.to_numeric(df[key], errors="coerce").astype(float)
    return df


_TEXT_FIELDS = ("init_from", "noise_mode")


def load_predictions(db, job_ids=None) -> pd.DataFrame:
    """Per-example test predictions, one row each: job_id, example, label, prediction.

    Reads both stores: the packed `test_predictions` rows jobs write now, and the row-per-example
    `predictions` table of jobs stored by older harnesses. job_ids: only these jobs (default all).
    """
    from harness.store.packing import unpack_predictions

    engine = engine_of(db)
    p, tp = hdb.predictions, hdb.test_predictions
    ids = None if job_ids is None else list(dict.fromkeys(job_ids))
    chunks = [None] if ids is None else [ids[i:i + IN_CHUNK] for i in range(0, len(ids), IN_CHUNK)]
    frames = []
    with hdb.connect(engine) as conn:
        for chunk in chunks:
            q = sa.select(p.c.job_id, p.c.example, p.c.label, p.c.prediction)
            packed = sa.select(tp)
            if chunk is not None:
                q, packed = q.where(p.c.job_id.in_(chunk)), packed.where(tp.c.job_id.in_(chunk))
            frames.append(pd.read_sql(q, conn))
            for row in conn.execute(packed).mappings():
                ex, labels, preds = unpack_predictions(row)
                frames.append(pd.DataFrame({"job_id": row["job_id"], "example": ex, "label": labels,
                                            "prediction": preds}))
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({"job_id": pd.Series(dtype=object), "example": pd.Series(dtype="int64"),
                             "label": pd.Series(dtype=float), "prediction": pd.Series(dtype=float)})
    return pd.concat(frames, ignore_index=True)


def load_correct(db, job_ids) -> dict[str, pd.Series]:
    """Per job, a 0/1 Series indexed by test example idx: prediction == label."""
    df = load_predictions(db, job_ids)
    if df.empty:
        return {}
    df["correct"] = (df["label"] == df["prediction"]).astype(np.int8)
    return {job: g.set_index("example")["correct"] for job, g in df.groupby("job_id", sort=False)}


def load_embeddings(db, job_ids) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per job: (vectors float32 rows × dim, example idx, labels) from the `embeddings` table."""
    engine = engine_of(db)
    e = hdb.embeddings
    out = {}
    with hdb.connect(engine) as conn:
        rows = conn.execute(sa.select(e).where(e.c.job_id.in_(list(job_ids)))).mappings().all()
    for r in rows:
        x = np.frombuffer(r["data"], dtype=np.float16).reshape(r["rows"], r["dim"]).astype(np.float32)
        out[r["job_id"]] = (x, np.asarray(json.loads(r["examples"])), np.asarray(json.loads(r["labels"])))
    return out


def load_tuning(db) -> pd.DataFrame:
    """The hyper-parameters `harness tune select` stored: one row per (task, model), the columns of
    `tuning_choices` with `seeds`, `candidates` and `base` decoded from JSON. Empty (same columns)
    for a database without choices or made before the table existed."""
    engine = engine_of(db)
    t = hdb.tuning_choices
    with hdb.connect(engine) as conn:
        if not sa.inspect(conn).has_table(t.name):
            return pd.DataFrame(columns=[c.name for c in t.columns])
        df = pd.read_sql(sa.select(t).order_by(t.c.model, t.c.task), conn)
    for key in ("seeds", "candidates", "base"):
        df[key] = df[key].map(json.loads)
    return df


def train_forwards(db) -> dict[str, int]:
    """Finished jobs by the training forward pass their result came from (the resolved config's
    `train_forward`: harness.training.packed or the model's full pass; results from before it existed ran
    the full pass). One grouped query; SQLite and PostgreSQL read the JSON themselves."""
    engine = engine_of(db)
    a, r = hdb.attempts, hdb.results
    forward = json_of(engine, a.c.config)["train_forward"].as_string()
    query = (sa.select(forward, sa.func.count()).select_from(r.join(a, a.c.id == r.c.attempt_id))
             .group_by(forward))
    counts: dict[str, int] = {}
    with hdb.connect(engine) as conn:
        for name, n in conn.execute(query):
            counts[name or "full"] = counts.get(name or "full", 0) + n
    return counts


def load_curves(db, grid: str | None = None, name: str = "accuracy") -> pd.DataFrame:
    """Validation curves of step-budget jobs (protocol v2): one row per (job, step) with the job's
    grid, model, task, n, loss, seed, lam, tau, lr and the validation `name` metric after that step.
    Epoch-protocol jobs (metrics.step null) have no rows. grid: only that grid's jobs."""
    engine = engine_of(db)
    m, r = hdb.metrics, hdb.results
    query = (sa.select(r.c.job_id, r.c.grid, r.c.model, r.c.task, r.c.n, r.c.loss, r.c.seed, r.c.lam,
                       r.c.tau, r.c.lr, m.c.step, m.c.value.label(name))
             .select_from(r.join(m, sa.and_(m.c.attempt_id == r.c.attempt_id, m.c.job_id == r.c.job_id)))
             .where(m.c.split == "validation", m.c.name == name, m.c.step.is_not(None))
             .order_by(r.c.job_id, m.c.step))
    if grid is not None:
        query = query.where(r.c.grid == grid)
    with hdb.connect(engine) as conn:
        df = pd.read_sql(query, conn)
    df["n"] = pd.to_numeric(df["n"]).astype("Int64")
    return df
