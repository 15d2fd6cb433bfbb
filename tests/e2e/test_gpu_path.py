"""The GPU path with the real model, checked on the CPU: the head in float32 under autocast,
evaluation that halves its batch on out-of-memory, the precision a job records, the per-process
model template (bit-identical to the full build). CUDA is never assumed: its functions are
monkeypatched where a test needs them (the decisions alone, without a model: tests/unit/test_device.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.runtime import device as dev
from harness.training import models
from harness.training.batching import collate, encode
from harness.training.inputs import prepare_data
from harness.errors import PermanentJobError
from harness.training.evaluate import predict
from harness.training.finetune import fine_tune
from harness.training.runner import RunContext
from harness.protocol.spec import SMALL_MODEL, JobSpec

TINY = dict(task="trec", n=24, seed=0, model=SMALL_MODEL, epochs=2, max_length=64, lr=1e-4,
            val_size=32, batch_size=8)


@pytest.fixture(scope="module")
def trec_test():
    """The 250 TREC test questions, tokenised."""
    spec = JobSpec.make(**TINY)
    pre = models.load_pretrained(SMALL_MODEL)
    return encode(pre.tokenizer, pre.path, "trec", prepare_data(spec).test, 64)


# ---- item 1: the head computes in float32 inside autocast ---------------------------------------

def test_head_output_is_float32_under_bf16_autocast(trec_test):
    model = models.build_model(SMALL_MODEL, 1, seed=0).eval()  # a regression head, as STS-B
    batch = collate(trec_test, np.arange(8), "cpu")
    seen = []
    model.classifier.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits, cls = models.forward(model, batch)
    assert logits.dtype == torch.float32
    exact = F.linear(seen[0].float(), model.classifier.weight, model.classifier.bias)
    assert torch.equal(logits, exact)  # not a bf16 product rounded back up


# ---- item 3: evaluation keeps the last hidden state only and halves its batch on OOM -------------

def test_embeddings_come_from_the_last_hidden_state_only(trec_test):
    model = models.build_model(SMALL_MODEL, 6, seed=0).eval()
    batch = collate(trec_test, np.arange(16), "cpu")
    kwargs_seen = []
    model.register_forward_pre_hook(lambda _m, _a, kw: kwargs_seen.append(dict(kw)), with_kwargs=True)
    with torch.inference_mode():
        logits, cls = models.forward(model, batch)
        full = model(**batch, output_hidden_states=True)
    assert torch.equal(cls, full.hidden_states[-1][:, 0]) and torch.equal(logits, full.logits)
    assert not kwargs_seen[0].get("output_hidden_states")


def oom_above(model, rows: int, seen: list):
    """Make `model` raise CUDA's out-of-memory error on batches of more than `rows` examples."""
    def check(_module, _args, kwargs):
        size = kwargs["input_ids"].shape[0]
        seen.append(size)
        if size > rows:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {size} MiB")
    return model.register_forward_pre_hook(check, with_kwargs=True)


def test_evaluation_oom_at_256_succeeds_at_128(trec_test, monkeypatch):
    freed = []
    monkeypatch.setattr("harness.training.evaluate.free_memory", freed.append)
    model = models.build_model(SMALL_MODEL, 6, seed=0)
    # batch_tokens out of the way: rows are the limit that binds, and that halves
    reference = predict(model, trec_test, "cpu", batch_size=128, with_embeddings=True, batch_tokens=10**9)
    seen = []
    oom_above(model, 128, seen)
    logits, cls = predict(model, trec_test, "cpu", batch_size=256, with_embeddings=True, batch_tokens=10**9)
    assert seen == [250, 128, 122]  # one failed batch of 250, then the pass again at 128
    assert freed == ["cpu"]  # the cache is freed before the retry
    assert np.array_equal(logits, reference[0]) and np.array_equal(cls, reference[1])
    assert model.training  # the mode is restored after a retry too


def test_evaluation_oom_down_to_batch_1_names_the_phase(tmp_path, monkeypatch):
    import harness.training.evaluate as ev

    def no_room(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.40 GiB")

    monkeypatch.setattr(ev, "forward", no_room)
    spec = JobSpec.make(**{**TINY, "epochs": 1})
    with pytest.raises(PermanentJobError, match=r"^validation: batch 1 does not fit in memory on cpu: CUDA out"):
        fine_tune(spec, RunContext(run_dir=tmp_path))


def test_oom_is_retried_when_other_processes_share_the_gpu(tmp_path, monkeypatch):
    import harness.training.finetune as ft

    def no_room(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(ft, "train_step", no_room)
    monkeypatch.setattr(ft, "shares_gpu", lambda device: True)
    with pytest.raises(dev.SharedDeviceOutOfMemory, match=r"^training: batch 8 does not fit.*retrying"):
        fine_tune(JobSpec.make(**{**TINY, "epochs": 1}), RunContext(run_dir=tmp_path))


# ---- item 5: precision ----------------------------------------------------------------------------

def test_the_resolved_config_records_the_precision(tmp_path):
    r = fine_tune(JobSpec.make(**{**TINY, "epochs": 1}), RunContext(run_dir=tmp_path))
    assert r.config["dtype"] == "float32" and r.config["tf32"] is False
    assert r.config["model_build"].startswith("per-process template")


# ---- item 7: the per-process template gives the full build's model, bit for bit ------------------

@pytest.mark.parametrize("num_labels", [1, 2, 6])
def test_template_model_equals_the_full_build(num_labels):
    for seed in (0, 7, 7, 12345):  # 7 twice: the second comes from the cache of draws
        fast = models.build_model(SMALL_MODEL, num_labels, seed)
        fast_rng = torch.get_rng_state()
        full = models.build_model_from_scratch(SMALL_MODEL, num_labels, seed)
        assert torch.equal(fast_rng, torch.get_rng_state())  # dropout draws from the same state
        a, b = dict(fast.named_parameters()), dict(full.named_parameters())
        a.update(fast.named_buffers())
        b.update(full.named_buffers())
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert "template" in models.model_build(SMALL_MODEL, num_labels)


def test_a_job_is_identical_with_the_template_and_the_full_build(tmp_path, monkeypatch):
    import harness.training.finetune as ft

    spec = JobSpec.make(**{**TINY, "loss": "ce+scl", "lam": 0.9, "tau": 0.3, "seed": 3})

    def comparable(r):
        return (r.val_score, r.test_score, r.best_epoch, [m for m in r.metrics if m[2] != "seconds"],
                r.predictions, r.embeddings.tobytes())

    fast = fine_tune(spec, RunContext(run_dir=tmp_path / "fast"))
    monkeypatch.setattr(ft, "build_model", lambda *a: models.float32_head(models.build_model_from_scratch(*a)))
    full = fine_tune(spec, RunContext(run_dir=tmp_path / "full"))
    assert comparable(fast) == comparable(full)
