"""What a finished job keeps in the database, and the one module that writes it: `write_result`
stores one attempt's RunResult (result row, metrics, test predictions, embeddings, training
examples, noise set, model artifact) inside `queue.finish`'s transaction. Its reader is
`analysis/load.py`.

What is kept, and how, so that a campaign of many seeds stays small enough to commit (issue 12:
at most 64 MB after VACUUM):
- Test predictions: every job, packed into one row (`test_predictions`): the example ids as zlib'd
  int32 deltas and the labels and predictions as zlib'd int8 (float32 for regression). One row per
  example (the `predictions` table, kept for older runs) cost ~60 bytes per example: a whole job
  takes 8 KB instead of 296 KB for MNLI, 139 KB instead of 11 MB for an Amazon transfer job with
  its 200,000 test examples (benchmarks/bench_storage.py).
- Test-set [CLS] embeddings (float16, 768 bytes per example at 384 dimensions): only where the
  t-SNE figures and the embedding claim read them: clean SST-2 runs that start from the
  pre-trained model, seeds below EMBEDDING_SEEDS. Every run records whether it kept them.
"""

from __future__ import annotations

import json

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from harness.store import db, dialects
from harness.store.jobs import Claim
from harness.store.packing import pack_predictions
from harness.training.runner import RunResult
from harness.protocol.spec import JobSpec

EMBEDDING_TASKS = ("sst2",)  # the task of the t-SNE figures and the silhouette claim
EMBEDDING_SEEDS = 3  # seeds 0, 1, 2 of each cell: three CE/CE+SCL pairs per (model, N)
PREDICTIONS_STORED = "test_predictions (packed)"  # recorded in every attempt's config


def keeps_embeddings(spec: JobSpec) -> bool:
    """Whether a job's test-set embeddings are stored (see the module docstring)."""
    return (spec.task in EMBEDDING_TASKS and spec.noise == 0 and spec.init_from is None
            and spec.per_class is None and spec.seed < EMBEDDING_SEEDS)


# ---- writing one finished job ---------------------------------------------------------------

def write_result(conn: Connection, c: Claim, result: RunResult, wall_seconds: float | None) -> dict:
    """Store everything `result` holds for the job `c` ran, in the caller's transaction, replacing
    an earlier result of the same job (one run again: see harness.store.dependencies.redo). Returns
    what was stored, for the attempt's recorded config."""
    s = c.spec
    if has_result(conn, c.job_id):
        _drop_result(conn, c.job_id)
    conn.execute(_INSERT_RESULT, dict(
        job_id=c.job_id, attempt_id=c.attempt_id, grid=c.grid, task=s.task, n=s.n, noise=s.noise,
        seed=s.seed, loss=s.loss, lam=s.lam, tau=s.tau, scl_reduction=s.scl_reduction,
        model=s.model, batch_size=s.batch_size, lr=s.lr, epochs=s.epochs,
        metric=result.metric, val_score=result.val_score, test_score=result.test_score,
        val_accuracy=result.val_accuracy, test_accuracy=result.test_accuracy,
        best_epoch=result.best_epoch, steps=s.steps, best_step=result.best_step,
        n_train=result.n_train, n_test=result.n_test,
        train_seconds=result.train_seconds, scl_batch_size=result.scl_batch_size,
        wall_seconds=wall_seconds, batching=s.batching, sampling=result.sampling or s.sampling,
        class_counts=None if result.class_counts is None else json.dumps(result.class_counts),
        spec=c.spec_json))
    if result.metrics:
        conn.execute(_INSERT_METRIC, [
            dict(attempt_id=c.attempt_id, job_id=c.job_id, split=m[0], epoch=m[1], name=m[2],
                 value=float(m[3]), step=m[4] if len(m) > 4 else None) for m in result.metrics])
    if result.predictions:
        conn.execute(_INSERT_PREDICTIONS, dict(job_id=c.job_id, attempt_id=c.attempt_id,
                                               **pack_predictions(result.predictions)))
    keep_embeddings = result.embeddings is not None and keeps_embeddings(s)
    if keep_embeddings:
        emb = np.ascontiguousarray(result.embeddings, dtype=np.float16)
        conn.execute(_INSERT_EMBEDDING, dict(
            job_id=c.job_id, attempt_id=c.attempt_id, split="test", rows=emb.shape[0],
            dim=emb.shape[1], examples=json.dumps([int(e) for e in result.embedding_examples]),
            labels=json.dumps([float(v) for v in result.embedding_labels]), data=emb.tobytes()))
    if result.train_examples:
        conn.execute(_INSERT_TRAIN_EXAMPLES, dict(
            job_id=c.job_id, examples=json.dumps([int(e) for e in result.train_examples])))
    if (ns := result.noise_set) is not None:
        # the CE and the CE+SCL job of a cell share one set: the first to finish records it
        conn.execute(dialects.insert_ignore(conn.dialect.name, db.noise_sets, "key"), dict(
            key=ns.key, task=s.task, n=s.n, seed=ns.seed, temperature=ns.temperature,
            backend=ns.backend, examples=ns.examples, changed_share=ns.changed_share,
            mean_edit_distance=ns.mean_edit_distance, seconds=ns.seconds, made_by_job=c.job_id))
    if (a := result.artifact) is not None:
        conn.execute(_INSERT_ARTIFACT, dict(job_id=c.job_id, attempt_id=c.attempt_id, kind=a.kind,
                                            path=a.path, sha256=a.sha256, bytes=a.bytes))
    return dict(stored_embeddings=keep_embeddings, stored_predictions=PREDICTIONS_STORED)


def has_result(conn: Connection, job_id: str) -> bool:
    return conn.execute(_HAS_RESULT, {"job": job_id}).first() is not None


def _drop_result(conn: Connection, job_id: str) -> None:
    for delete in _DROP_RESULT:
        conn.execute(delete, {"job": job_id})


# Built once: building SQLAlchemy constructs per call costs more than the database work (see
# harness.store.queue). Everything write_result writes per job, children before the results row.
_RESULT_TABLES = (db.metrics, db.predictions, db.test_predictions, db.embeddings,
                  db.train_examples, db.artifacts, db.results)
_DROP_RESULT = tuple(sa.delete(t).where(t.c.job_id == sa.bindparam("job")) for t in _RESULT_TABLES)
_HAS_RESULT = sa.select(db.results.c.job_id).where(db.results.c.job_id == sa.bindparam("job"))
_INSERT_RESULT = sa.insert(db.results)
_INSERT_METRIC = sa.insert(db.metrics)
_INSERT_PREDICTIONS = sa.insert(db.test_predictions)
_INSERT_EMBEDDING = sa.insert(db.embeddings)
_INSERT_TRAIN_EXAMPLES = sa.insert(db.train_examples)
_INSERT_ARTIFACT = sa.insert(db.artifacts)
