"""What a finished job keeps: packed test predictions for every job, embeddings only where the
t-SNE figures and the embedding claim need them; written through the queue's finish path (the
packing itself and the embeddings policy: tests/unit/test_packing.py)."""

from __future__ import annotations

import json

import numpy as np
import sqlalchemy as sa

from analysis.load import load_correct, load_predictions
from harness.store import db, queue
from harness.training.runner import RunResult
from harness.protocol.spec import JobSpec


def result(preds, embeddings=True) -> RunResult:
    n = len(preds)
    emb = np.ones((n, 8), dtype=np.float16) if embeddings else None
    return RunResult(metric="accuracy", val_score=0.5, test_score=0.5, val_accuracy=0.5,
                     test_accuracy=0.5, best_epoch=1, n_train=4, n_test=n, train_seconds=0.0,
                     predictions=preds, embeddings=emb, embedding_examples=[p[0] for p in preds],
                     embedding_labels=[p[1] for p in preds], config={"k": 1})


def test_finish_stores_packed_predictions_and_embeddings_by_policy(tmp_path):
    engine = db.open_db(f"sqlite:///{tmp_path / 'r.db'}", create=True)
    specs = [JobSpec.make(task="sst2", n=20, seed=0), JobSpec.make(task="sst2", n=20, seed=5),
             JobSpec.make(task="qnli", n=20, seed=0)]
    queue.enqueue(engine, "g", specs)
    preds = [(10, 1, 1), (11, 0, 1), (15, 1, 1)]
    for _ in specs:
        queue.finish(engine, queue.claim(engine, "w"), result(preds))
    with db.connect(engine) as conn:
        kept = conn.execute(sa.text("select job_id from embeddings")).scalars().all()
        configs = dict(conn.execute(sa.text("select job_id, config from attempts")).all())
        # an older harness's row-per-example predictions, read beside the packed ones
        conn.execute(sa.insert(db.predictions).values(job_id=specs[2].job_id, attempt_id=0, example=99,
                                                      label=0.0, prediction=0.0))
        conn.commit()
    assert kept == [specs[0].job_id]
    assert [json.loads(configs[s.job_id])["stored_embeddings"] for s in specs] == [True, False, False]
    df = load_predictions(engine)
    assert len(df) == 3 * 3 + 1
    assert df[df.job_id == specs[0].job_id][["example", "label", "prediction"]].values.tolist() == \
        [[10, 1, 1], [11, 0, 1], [15, 1, 1]]
    correct = load_correct(engine, [specs[1].job_id, specs[2].job_id])
    assert correct[specs[1].job_id].to_dict() == {10: 1, 11: 0, 15: 1}
    assert correct[specs[2].job_id].to_dict() == {99: 1, 10: 1, 11: 0, 15: 1}
    assert len(load_predictions(engine, [specs[0].job_id])) == 3
