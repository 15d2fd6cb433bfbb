"""The GPU path, checked on the CPU: the head in float32 under autocast, evaluation that halves its
batch on out-of-memory, checkpoints that resume on another GPU, the precision a device gets, the
per-process model template (bit-identical to the full build), and the bench's pinned Trainer.
CUDA is never assumed: its functions are monkeypatched where a test needs them."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness import device as dev
from harness import models, template
from harness.batching import collate, encode
from harness.data import prepare_data
from harness.errors import PermanentJobError
from harness.evaluate import predict
from harness.finetune import fine_tune
from harness.runner import RunContext
from harness.spec import SMALL_MODEL, JobSpec

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
    monkeypatch.setattr("harness.evaluate.free_memory", freed.append)
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
    import harness.evaluate as ev

    def no_room(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.40 GiB")

    monkeypatch.setattr(ev, "forward", no_room)
    spec = JobSpec.make(**{**TINY, "epochs": 1})
    with pytest.raises(PermanentJobError, match=r"^validation: batch 1 does not fit in memory on cpu: CUDA out"):
        fine_tune(spec, RunContext(run_dir=tmp_path))


def test_oom_is_retried_when_other_processes_share_the_gpu(tmp_path, monkeypatch):
    import harness.finetune as ft

    def no_room(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(ft, "train_step", no_room)
    monkeypatch.setattr(ft, "shares_gpu", lambda device: True)
    with pytest.raises(dev.SharedDeviceOutOfMemory, match=r"^training: batch 8 does not fit.*retrying"):
        fine_tune(JobSpec.make(**{**TINY, "epochs": 1}), RunContext(run_dir=tmp_path))


def test_shares_gpu_counts_memory_beyond_our_own(monkeypatch):
    gib = 1 << 30
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 10 * gib)
    cuda = torch.device("cuda:0")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (69 * gib, 80 * gib))
    assert not dev.shares_gpu(cuda)  # 1 GiB beyond our reservation: our own CUDA context
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (50 * gib, 80 * gib))
    assert dev.shares_gpu(cuda)  # 20 GiB held by someone else
    assert not dev.shares_gpu(torch.device("cpu"))


def test_error_kinds():
    sticky = torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
    assert dev.is_device_fault(sticky) and not dev.is_out_of_memory(sticky)
    assert dev.is_device_fault(RuntimeError("CUDA error: device-side assert triggered"))
    wrapped = PermanentJobError("x")
    wrapped.__cause__ = sticky
    assert dev.is_device_fault(wrapped)
    for oom in (torch.OutOfMemoryError("CUDA out of memory"), torch.AcceleratorError("CUDA error: out of memory"),
                MemoryError()):
        assert dev.is_out_of_memory(oom) and not dev.is_device_fault(oom)
    assert not dev.is_device_fault(RuntimeError("a transient driver hiccup"))


# ---- item 4: checkpoints resume where fewer GPUs are visible -------------------------------------

def test_checkpoint_resumes_on_another_gpu_with_fewer_visible(tmp_path, monkeypatch):
    from harness.checkpoint import Checkpointer, TrainState

    def forbidden(*args, **kwargs):
        raise AssertionError("the RNG states of all visible GPUs are not the job's")

    saved_state = torch.arange(16, dtype=torch.uint8)
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", forbidden)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", forbidden)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: saved_state + device.index)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((state, device)))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)

    def objects():
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        optimizer = torch.optim.AdamW(model.parameters())
        return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    ckpt = Checkpointer(tmp_path, "job")
    model, optimizer, scheduler = objects()
    ckpt.save(TrainState(epoch=1), model, optimizer, scheduler, "cuda:3")  # trained on GPU 3 of 4
    state = ckpt.load(*objects(), "cuda:0")  # resumed where one GPU is visible
    assert state.epoch == 1
    assert len(restored) == 1 and torch.equal(restored[0][0], saved_state + 3)
    assert restored[0][1] == torch.device("cuda:0")

    # a checkpoint of an older harness (one state per visible GPU) still resumes
    payload = torch.load(ckpt.path, weights_only=False)
    payload["rng"]["cuda"] = [saved_state, saved_state + 1, saved_state + 2]
    torch.save(payload, ckpt.path)
    restored.clear()
    assert ckpt.load(*objects(), "cuda:1").epoch == 1
    assert torch.equal(restored[0][0], saved_state + 1)


# ---- item 5: precision ----------------------------------------------------------------------------

@pytest.fixture
def tf32_flags():
    """The process's TF32 flags, restored afterwards (they are not plain attributes)."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_emulated_bf16_trains_in_float32(monkeypatch, tf32_flags):
    cuda = torch.device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))  # a V100
    assert dev.precision(cuda) == {"dtype": "float32", "tf32": False}
    assert dev.autocast_for(cuda)[1] == "float32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))  # an H100
    torch.backends.cuda.matmul.allow_tf32 = True
    assert dev.precision(cuda) == {"dtype": "bfloat16", "tf32": True}
    assert dev.autocast_for(cuda)[1] == "bfloat16"
    assert dev.precision(torch.device("cpu")) == {"dtype": "float32", "tf32": False}


def test_device_selection_sets_tf32_and_the_allocator_once(monkeypatch, tf32_flags):
    from harness.worker import select_device

    for name in dev.ALLOC_CONF_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    assert select_device(1) == "cuda:1" and chosen == [1]
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    import os
    assert os.environ[dev.ALLOC_CONF_ENV[0]] == dev.EXPANDABLE_SEGMENTS


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
    import harness.finetune as ft

    spec = JobSpec.make(**{**TINY, "loss": "ce+scl", "lam": 0.9, "tau": 0.3, "seed": 3})

    def comparable(r):
        return (r.val_score, r.test_score, r.best_epoch, [m for m in r.metrics if m[2] != "seconds"],
                r.predictions, r.embeddings.tobytes())

    fast = fine_tune(spec, RunContext(run_dir=tmp_path / "fast"))
    monkeypatch.setattr(ft, "build_model", lambda *a: models.float32_head(models.build_model_from_scratch(*a)))
    full = fine_tune(spec, RunContext(run_dir=tmp_path / "full"))
    assert comparable(fast) == comparable(full)


def test_a_build_that_cannot_be_replayed_is_refused():
    def python_random(seed):
        torch.manual_seed(seed)
        random.random()  # the replay covers torch's generator only
        return torch.nn.Linear(4, 2)

    with pytest.raises(template.Unsupported, match="Python's or NumPy's"):
        template.record(python_random, ("weight", "bias"))

    def from_other_tensor(seed):
        torch.manual_seed(seed)
        head = torch.nn.Linear(4, 2)
        with torch.no_grad():
            head.weight.copy_(torch.randn(2, 4))  # a head written from another draw
        return head

    with pytest.raises(template.Unsupported, match="from another tensor"):
        template.record(from_other_tensor, ("weight", "bias"))


# ---- item 8: the bench's Trainer baseline on the selected GPU -----------------------------------

def test_trainer_baseline_is_pinned_to_the_selected_gpu(tmp_path, monkeypatch):
    from harness.bench import trainer_arguments

    current = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    args = trainer_arguments(torch.device("cuda:2"), output_dir=str(tmp_path), report_to=[], use_cpu=False)
    assert args.device == torch.device("cuda:2") and args.n_gpu == 1  # not cuda:0, no DataParallel
    assert args.distributed_state is not None and args.local_process_index == 0  # what Trainer reads
    assert current[-1:] == [torch.device("cuda:2")]  # the selected GPU stays the current one
