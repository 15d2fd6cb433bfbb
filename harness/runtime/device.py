"""What a worker's compute device needs beyond `torch.device`: process settings made once at
selection, the training precision, and which errors mean what.

- Precision: bf16 autocast only where the GPU has native bf16 (compute capability ≥ 8: A100, H100,
  RTX 30xx+). `torch.cuda.is_bf16_supported()` also counts emulation, which would give a V100 or T4
  slow emulated bf16 recorded as bf16; those train in float32 (with TF32 off: they have none).
- TF32 matmuls and `expandable_segments` in the CUDA allocator are set once, when the worker selects
  its GPU (the allocator setting must precede the first CUDA allocation).
- A sticky CUDA error (device-side assert, illegal address, launch failure) leaves the process's
  CUDA context unusable: every later job would fail too. The worker hands the job back and exits
  (DeviceFault) so that the scheduler starts a fresh process.
- Out of memory is not sticky. It fails a job for good on a device of its own (it would fail
  again), but not where other processes share the GPU: a neighbour may have caused it.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os

import torch

ALLOC_CONF_ENV = ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF")  # the new name, then the old one
EXPANDABLE_SEGMENTS = "expandable_segments:True"  # less fragmentation when batch shapes vary
NEIGHBOUR_BYTES = 1 << 30  # GPU memory in use beyond our own (and our CUDA context): another process
DEVICE_FAULT_EXIT = 3  # exit status of a worker stopped by a device fault (scripts restart it)
OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")
STICKY_MARKERS = ("device-side assert", "illegal memory access", "illegal address",
                  "illegal instruction", "misaligned address", "unspecified launch failure",
                  "uncorrectable ecc error", "cublas_status_execution_failed", "launch timed out")


class DeviceFault(Exception):
    """The process's CUDA context is unusable: the worker must exit and be restarted."""


class OutOfMemory(RuntimeError):
    """An out-of-memory error in a named phase at a batch size (the original error is the cause)."""

    def __init__(self, phase: str, batch_size: int, cause: BaseException):
        first = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:200]
        super().__init__(f"{phase}: batch {batch_size} does not fit in memory: {first}")
        self.phase, self.batch_size, self.detail = phase, batch_size, first


class SharedDeviceOutOfMemory(RuntimeError):
    """Out of memory on a GPU that other processes use too: transient, the job is retried."""


def prepare_gpu_process() -> None:
    """Before the first CUDA allocation: an allocator with expandable segments (kept if the user
    configured the allocator already)."""
    if not any(os.environ.get(name) for name in ALLOC_CONF_ENV):
        os.environ[ALLOC_CONF_ENV[0]] = EXPANDABLE_SEGMENTS


def configure_gpu() -> None:
    """Once, at device selection: TF32 matmuls and convolutions where the GPU has them."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def precision(device: torch.device) -> dict:
    """{'dtype': the autocast dtype or 'float32', 'tf32': whether float32 matmuls use TF32} of
    training on `device`, as recorded in every run's resolved config."""
    if device.type != "cuda":
        return {"dtype": "float32", "tf32": False}
    native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    tf32 = bool(torch.backends.cuda.matmul.allow_tf32) and torch.cuda.get_device_capability(device)[0] >= 8
    return {"dtype": "bfloat16" if native_bf16 else "float32", "tf32": tf32}


def autocast_for(device: torch.device):
    """(a context-manager factory for the forward pass, the dtype name) on `device`."""
    if precision(device)["dtype"] == "bfloat16":
        return functools.partial(torch.autocast, "cuda", dtype=torch.bfloat16), "bfloat16"
    return contextlib.nullcontext, "float32"


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__


def is_out_of_memory(exc: BaseException) -> bool:
    for e in _chain(exc):
        if isinstance(e, (torch.OutOfMemoryError, MemoryError, OutOfMemory, SharedDeviceOutOfMemory)):
            return True
        if isinstance(e, RuntimeError) and any(m in str(e).lower() for m in OOM_MARKERS):
            return True
    return False


def is_device_fault(exc: BaseException) -> bool:
    """A sticky CUDA error: torch.AcceleratorError and kin, not out-of-memory."""
    if is_out_of_memory(exc):
        return False
    for e in _chain(exc):
        if isinstance(e, getattr(torch, "AcceleratorError", ())):
            return True
        if isinstance(e, RuntimeError) and any(m in str(e).lower() for m in STICKY_MARKERS):
            return True
    return False


def free_memory(device: str | torch.device) -> None:
    """Return what a finished or failed job left behind: Python garbage, then the GPU's cache."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def shares_gpu(device: torch.device) -> bool:
    """Whether another process holds memory on this GPU: in use beyond what our allocator has
    reserved, by more than a CUDA context's worth (NEIGHBOUR_BYTES)."""
    if device.type != "cuda":
        return False
    try:
        free, total = torch.cuda.mem_get_info(device)
    except RuntimeError:
        return False
    return total - free - torch.cuda.memory_reserved(device) > NEIGHBOUR_BYTES
