"""The GPU path's decisions, checked on the CPU with CUDA's functions monkeypatched: which errors
are out-of-memory or device faults, whether other processes share the GPU, checkpoints that resume
where fewer GPUs are visible, the precision a device gets, builds the model template refuses, and
the bench's Trainer pinned to the selected GPU (the same path with the real model:
tests/e2e/test_gpu_path.py)."""

from __future__ import annotations

import random

import pytest
import torch

from harness.runtime import device as dev
from harness.training import template
from harness.errors import PermanentJobError


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


def test_checkpoint_resumes_on_another_gpu_with_fewer_visible(tmp_path, monkeypatch):
    from harness.training.checkpoint import Checkpointer, TrainState

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


def test_trainer_baseline_is_pinned_to_the_selected_gpu(tmp_path, monkeypatch):
    from harness.hf_trainer import trainer_arguments

    current = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    args = trainer_arguments(torch.device("cuda:2"), output_dir=str(tmp_path), report_to=[], use_cpu=False)
    assert args.device == torch.device("cuda:2") and args.n_gpu == 1  # not cuda:0, no DataParallel
    assert args.distributed_state is not None and args.local_process_index == 0  # what Trainer reads
    assert current[-1:] == [torch.device("cuda:2")]  # the selected GPU stays the current one
