"""The supervised contrastive loss inside the real paraphrase-MiniLM-L3-v2: its gradient reaches
the encoder (the loss itself, on tensors, is tests/unit/test_loss.py)."""

import torch

from harness.training.finetune import compute_loss
from harness.training.models import build_model, get_tokenizer
from harness.protocol.spec import SMALL_MODEL, JobSpec
from harness.protocol.tasks import get_task


def test_scl_reaches_the_encoder():
    """With λ = 1 the encoder gets gradients from SCL alone, and CE+SCL gradients differ from CE."""
    task = get_task("sst2")
    tokenizer = get_tokenizer(SMALL_MODEL)
    texts = ["a great film", "wonderful acting", "dull and boring", "a waste of time"]
    batch = dict(tokenizer(texts, padding=True, return_tensors="pt"))
    labels = torch.tensor([1, 1, 0, 0])

    def encoder_grads(**fields):
        spec = JobSpec.make(task="sst2", seed=0, model=SMALL_MODEL, **fields)
        model = build_model(SMALL_MODEL, 2, seed=0)
        model.eval()  # no dropout: the two runs differ by the loss only
        loss, _, _ = compute_loss(model, batch, labels, spec, task)
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()
                if n.startswith(model.base_model_prefix + ".encoder") and p.grad is not None}

    scl_only = encoder_grads(loss="ce+scl", lam=1.0, tau=0.3)
    assert scl_only and any(g.abs().sum() > 0 for g in scl_only.values())
    ce = encoder_grads(loss="ce")
    both = encoder_grads(loss="ce+scl", lam=0.5, tau=0.3)
    diff = max((ce[n] - both[n]).abs().max().item() for n in ce)
    assert diff > 1e-6
