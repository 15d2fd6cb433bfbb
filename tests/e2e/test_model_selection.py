"""Model selection inside a real `fine_tune` run (paraphrase-MiniLM-L3-v2 on the TREC mirror, CPU):
every selection pass reads validation rows and never a test row, and the test set is read once,
with the weights of the best validation pass. Spies on `predict` and `task_metrics` see what each
pass reads; the validation scores are scripted, so the best pass is known in advance. The
selection rule on its own is tests/unit/test_checkpoint_selection.py."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import harness.training.finetune as ft
from harness.protocol.data import protocol_splits
from harness.protocol.spec import SMALL_MODEL, JobSpec
from harness.training.runner import RunContext

# peaks at pass 2, which the last pass ties: the earlier is kept
CURVE = [0.7, 0.9, 0.9]
BEST = 2


def fingerprint(model) -> str:
    h = hashlib.sha256()
    for v in model.state_dict().values():
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def test_selection_reads_validation_rows_and_tests_the_best_weights_once(tmp_path, monkeypatch):
    spec = JobSpec.make(task="trec", n=8, seed=0, model=SMALL_MODEL, epochs=len(CURVE), max_length=32,
                        lr=1e-4, val_size=24, batch_size=8)  # one step an epoch
    splits = protocol_splits("trec", spec.val_size)
    encoded, passes, scored = [], [], []
    real_encode, real_predict, real_metrics = ft.encode, ft.predict, ft.task_metrics

    def encode(tokenizer, tokenizer_id, task, examples, *args, **kwargs):
        enc = real_encode(tokenizer, tokenizer_id, task, examples, *args, **kwargs)
        encoded.append((enc, examples))
        return enc

    def predict(model, enc, *args, **kwargs):
        examples = next(ex for e, ex in encoded if e is enc)
        passes.append((frozenset(examples.rows.tolist()), fingerprint(model)))
        return real_predict(model, enc, *args, **kwargs)

    def task_metrics(task, labels, logits):
        scored.append(np.asarray(labels).copy())
        if len(scored) <= len(CURVE):  # the selection passes: scripted scores
            return {"score": CURVE[len(scored) - 1], "accuracy": CURVE[len(scored) - 1]}
        return real_metrics(task, labels, logits)

    monkeypatch.setattr(ft, "encode", encode)
    monkeypatch.setattr(ft, "predict", predict)
    monkeypatch.setattr(ft, "task_metrics", task_metrics)
    r = ft.fine_tune(spec, RunContext(run_dir=tmp_path / "run"))

    validation, test = frozenset(splits.validation.rows.tolist()), frozenset(splits.test.rows.tolist())
    assert validation and test and not validation & test  # the fixture can tell them apart
    assert [rows for rows, _ in passes] == [validation] * len(CURVE) + [test]
    assert len(scored) == len(CURVE) + 1
    for labels in scored[:-1]:
        np.testing.assert_array_equal(labels, splits.validation.labels)
    np.testing.assert_array_equal(scored[-1], splits.test.labels)

    # the test pass ran on the weights the best validation pass saw, not the last epoch's
    weights = [w for _, w in passes]
    assert weights[-1] == weights[BEST - 1]
    assert len(set(weights[:-1])) == len(CURVE)  # every epoch trained: each pass saw other weights
    assert (r.best_epoch, r.val_score, r.val_accuracy) == (BEST, CURVE[BEST - 1], CURVE[BEST - 1])
    assert r.test_score == pytest.approx(np.mean([y == p for _, y, p in r.predictions]))
    assert [(e, v) for split, e, name, v in r.metrics if (split, name) == ("validation", "accuracy")] == \
        list(enumerate(CURVE, 1))
    assert [e for split, e, name, _ in r.metrics if (split, name) == ("test", "accuracy")] == [BEST]
    assert r.embeddings.shape[0] == len(test)
