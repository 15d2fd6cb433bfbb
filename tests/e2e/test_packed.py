"""The packed training forward pass (harness.training.packed: no padding, last layer for the first token
only) computes what the model's own forward pass computes: the same logits and [CLS] vectors, the
same gradients up to the last bits, the same random numbers drawn (so the same dropout masks), on
real models and real batches; and a real job trained with it predicts as one trained without."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from harness.training import finetune, packed
from harness.training.batching import collate, encode, train_batches
from harness.training.inputs import prepare_data
from harness.training.finetune import compute_loss, fine_tune
from harness.training.models import build_model, forward, load_pretrained
from harness.training.runner import RunContext
from harness.protocol.spec import SMALL_MODEL, JobSpec
from harness.protocol.tasks import get_task

L6 = "sentence-transformers/all-MiniLM-L6-v2"


def real_batch(model_name: str, task_name: str, size: int = 16):
    """The first training batch of a real N = 100 job: padded, uneven lengths."""
    spec = JobSpec.make(task=task_name, n=100, seed=3, loss="ce+scl", lam=0.5, tau=0.3, model=model_name)
    pre = load_pretrained(model_name)
    data = prepare_data(spec)
    enc = encode(pre.tokenizer, pre.tokenizer_id, get_task(task_name).name, data.train, spec.max_length)
    positions = train_batches(enc.lengths, size, spec.batching, spec.seed, 1)[0]
    batch = collate(enc, positions, "cpu")
    return spec, batch, torch.as_tensor(data.train.labels)[positions]


def step(model, batch, labels, spec, *, packed_forward: bool, seed: int = 11):
    """Loss, logits, [CLS], gradients and the RNG state after one forward + backward."""
    task = get_task(spec.task)
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    with packed.packed_encoder(model, batch["attention_mask"]) if packed_forward else contextlib.nullcontext():
        logits, cls = forward(model, batch)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss, _, _ = compute_loss(model, batch, labels, spec, task, packed=packed_forward)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), logits.detach(), cls.detach(), grads, torch.get_rng_state()


@pytest.mark.parametrize("model_name,task_name", [(SMALL_MODEL, "sst2"), (SMALL_MODEL, "qnli"), (L6, "mnli")])
@pytest.mark.parametrize("training", [True, False], ids=["dropout", "no-dropout"])
def test_packed_forward_matches_the_full_one(model_name, task_name, training):
    spec, batch, labels = real_batch(model_name, task_name)
    assert (batch["attention_mask"] == 0).any(), "the batch must hold padding to test anything"
    model = build_model(model_name, get_task(task_name).num_labels, seed=0)
    assert packed.supported(model)
    model.train(training)
    full = step(model, batch, labels, spec, packed_forward=False)
    pk = step(model, batch, labels, spec, packed_forward=True)
    # the forward pass: the same values (the same products row by row; at most the last bits)
    for a, b in zip(full[:3], pk[:3]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    # the same random numbers drawn: every dropout mask drawn at the full layer's shape
    assert torch.equal(full[4], pk[4])
    # gradients: every parameter's, up to float rounding of sums in another order
    assert full[3].keys() == pk[3].keys()
    scale = max(g.abs().max().item() for g in full[3].values())
    worst = max((full[3][n] - pk[3][n]).abs().max().item() for n in full[3])
    assert worst <= 1e-5 * scale, f"gradients differ by {worst:.3g} (largest gradient {scale:.3g})"
    # and the model is itself again afterwards
    assert type(model.base_model.encoder).forward is type(model.base_model.encoder).__dict__["forward"]
    assert "forward" not in vars(model.base_model.encoder)


def test_a_batch_without_padding_and_a_single_example():
    spec, batch, labels = real_batch(SMALL_MODEL, "sst2")
    model = build_model(SMALL_MODEL, 2, seed=0)
    model.train()
    for rows in ([0], [0, 0, 0]):  # one example; identical rows, so no padding
        b = {k: v[rows] for k, v in batch.items()}
        width = int(b["attention_mask"].sum(1).max())
        b = {k: v[:, :width] for k, v in b.items()}
        full = step(model, b, labels[rows], spec, packed_forward=False)
        pk = step(model, b, labels[rows], spec, packed_forward=True)
        torch.testing.assert_close(pk[1], full[1], rtol=1e-5, atol=1e-6)
        assert torch.equal(full[4], pk[4])


def test_unsupported_models_train_with_the_full_forward_pass(tmp_path):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    model = build_model(SMALL_MODEL, 2, seed=0)
    model.config.chunk_size_feed_forward = 4  # the layers would chunk their feed-forward part
    assert not packed.supported(model)
    model.config.chunk_size_feed_forward = 0
    model.config._attn_implementation = "flash_attention_2"
    assert not packed.supported(model)
    tiny = DistilBertForSequenceClassification(DistilBertConfig(
        vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=32, max_position_embeddings=32))
    assert not packed.supported(tiny)


def test_a_row_starting_with_padding_is_refused():
    spec, batch, labels = real_batch(SMALL_MODEL, "sst2", size=4)
    model = build_model(SMALL_MODEL, 2, seed=0)
    bad = batch["attention_mask"].clone()
    bad[0, 0] = 0
    with pytest.raises(ValueError, match="first token"):
        with packed.packed_encoder(model, bad):
            forward(model, batch)
    assert "forward" not in vars(model.base_model.encoder)  # restored after the error


def test_a_real_job_predicts_as_with_the_full_forward_pass(tmp_path):
    """N = 20 SST-2, CE+SCL, 10 epochs: the same test predictions and selected epoch, the training
    losses equal to 1e-4 at every epoch; the resolved configuration says which pass trained."""
    spec = JobSpec.make(task="sst2", n=20, seed=1, loss="ce+scl", lam=0.5, tau=0.3, model=SMALL_MODEL)
    runs = {mode: fine_tune(spec, RunContext(run_dir=tmp_path / mode), train_forward=mode)
            for mode in finetune.TRAIN_FORWARDS}
    new, old = runs["packed"], runs["full"]
    assert new.config["train_forward"] == "packed" and old.config["train_forward"] == "full"
    assert new.best_epoch == old.best_epoch
    assert new.predictions == old.predictions
    assert (new.val_score, new.test_score) == (old.val_score, old.test_score)
    losses = lambda r: [v for split, _, name, v in r.metrics if split == "train" and name == "loss"]  # noqa: E731
    np.testing.assert_allclose(losses(new), losses(old), rtol=1e-4)
    with pytest.raises(ValueError, match="train_forward"):
        fine_tune(spec, RunContext(run_dir=tmp_path / "bad"), train_forward="sparse")
