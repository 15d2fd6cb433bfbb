"""How a finished job's test predictions are packed (and unpacked), and which jobs keep their
embeddings; what finish writes to a database is tests/integration/test_storage.py."""

from __future__ import annotations

import numpy as np
import pytest

from harness.store import packing, results
from harness.protocol.spec import JobSpec


@pytest.mark.parametrize("preds", [
    [(3, 0, 1), (7, 1, 1), (8, 2, 0), (1000, 1, 2)],  # classes: int8
    [(5, 3.25, 2.5), (2, 0.0, -1.75), (9, 4.8, 4.9)],  # regression, ids not ascending: float32
    [(0, 1, 1)],
])
def test_pack_unpack_round_trip(preds):
    packed = packing.pack_predictions(preds)
    ex, labels, out = packing.unpack_predictions(dict(packed, job_id="j"))
    assert ex.tolist() == [p[0] for p in preds]
    assert np.allclose(labels, [p[1] for p in preds]) and np.allclose(out, [p[2] for p in preds])
    assert packed["encoding"].endswith("int8" if len(preds) != 3 else "float32")


def test_packed_predictions_are_small():
    rng = np.random.default_rng(0)
    ids = np.sort(rng.choice(9815, 4908, replace=False))  # an MNLI-sized test half
    labels = rng.integers(0, 3, len(ids))
    preds = np.where(rng.random(len(ids)) < 0.6, labels, rng.integers(0, 3, len(ids)))
    packed = packing.pack_predictions(list(zip(ids.tolist(), labels.tolist(), preds.tolist())))
    size = sum(len(packed[k]) for k in ("examples", "labels", "predictions"))
    assert size < 3.5 * len(ids)  # bytes; a row per example costs ~57


def test_embeddings_policy():
    keep = lambda **kw: results.keeps_embeddings(JobSpec.make(**(dict(task="sst2", n=20, seed=0) | kw)))
    assert keep() and keep(seed=2, loss="ce+scl", lam=0.9) and keep(n=None)
    assert not keep(seed=3) and not keep(task="qnli") and not keep(noise=0.3)
    assert not keep(init_from="abc") and not keep(per_class=10)
