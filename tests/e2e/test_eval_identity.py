"""The cheaper evaluation (token-budget batches in length order, last layer for the first token
only) predicts exactly what the previous evaluation predicted: the same argmax on every
validation and test example of every job of the smoke grid, at every epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.training import evaluate, finetune, first_token
from harness.protocol import grids
from harness.training.finetune import fine_tune
from harness.training.models import build_model
from harness.training.runner import RunContext
from harness.protocol.spec import SMALL_MODEL

SMOKE = [s for s, _ in grids.expand(grids.get_grid("smoke"))]


@pytest.mark.parametrize("spec", SMOKE, ids=[f"seed{s.seed}-{s.loss}" for s in SMOKE])
def test_fast_evaluation_predicts_as_the_legacy_one(spec, tmp_path, monkeypatch):
    calls = []
    real = evaluate.predict

    def both(model, enc, device, autocast=None, **kw):
        kw.pop("mode", None)
        fast = real(model, enc, device, autocast, mode="fast", **kw)
        legacy = real(model, enc, device, autocast, mode="legacy", **kw)
        calls.append((fast, legacy))
        return fast

    monkeypatch.setattr(finetune, "predict", both)
    fine_tune(spec, RunContext(run_dir=tmp_path))
    assert len(calls) == spec.epochs + 1  # validation every epoch, test once
    for (fast_logits, fast_cls), (old_logits, old_cls) in calls:
        assert np.array_equal(fast_logits.argmax(1), old_logits.argmax(1))
        assert np.abs(fast_logits - old_logits).max() < 1e-4
    # Test-set embeddings: same float16 vectors up to the last bit.
    (_, fast_cls), (_, old_cls) = calls[-1]
    np.testing.assert_allclose(fast_cls.astype(np.float32), old_cls.astype(np.float32), atol=2e-3)


def test_first_token_path_is_used_and_matches_on_sentence_pairs():
    """QNLI pairs (longer, with token types) through a BERT-style model: the fast path applies,
    and its logits and [CLS] vectors match the full forward pass."""
    from harness.training.batching import encode
    from harness.training.inputs import prepare_data
    from harness.training.models import load_pretrained
    from harness.protocol.spec import JobSpec

    spec = JobSpec.make(task="qnli", n=20, seed=0, model=SMALL_MODEL, val_size=96)
    model = build_model(SMALL_MODEL, 2, 0)
    assert first_token.supported(model)
    pre = load_pretrained(SMALL_MODEL)
    enc = encode(pre.tokenizer, pre.tokenizer_id, "qnli", prepare_data(spec).validation, 128)
    fast = evaluate.predict(model, enc, "cpu", with_embeddings=True)
    legacy = evaluate.predict(model, enc, "cpu", with_embeddings=True, mode="legacy")
    assert np.array_equal(fast[0].argmax(1), legacy[0].argmax(1))
    assert np.abs(fast[0] - legacy[0]).max() < 1e-4
    np.testing.assert_allclose(fast[1].astype(np.float32), legacy[1].astype(np.float32), atol=2e-3)
    assert isinstance(model.bert.encoder.layer[-1], type(model.bert.encoder.layer[0]))  # restored


def test_unsupported_models_take_the_full_forward_pass():
    model = build_model(SMALL_MODEL, 2, 0)
    model.config._attn_implementation = "flash_attention_2"
    assert not first_token.supported(model)
    assert not first_token.supported(torch.nn.Linear(2, 2))
