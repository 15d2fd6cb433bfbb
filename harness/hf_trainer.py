"""A plain Hugging Face `Trainer` on our Examples, pinned to one device: what `harness bench`
times and `harness baseline` trains against our own loop."""

from __future__ import annotations

import contextlib
import dataclasses
import os

import torch
from transformers import TrainingArguments


def trainer_dataset(examples, tokenizer, max_length: int, label_dtype=None):
    """A `datasets.Dataset` of the examples' token ids (truncated to max_length, unpadded: the
    Trainer's collator pads each batch) and labels; text pairs as the tokenizer's pair input."""
    import datasets

    encoded = tokenizer(*list(zip(*examples.texts)), truncation=True, max_length=max_length)
    labels = examples.labels if label_dtype is None else examples.labels.astype(label_dtype)
    return datasets.Dataset.from_dict({**encoded, "labels": labels.tolist()})


@dataclasses.dataclass
class PinnedArguments(TrainingArguments):
    """TrainingArguments pinned to one device. Left alone, the Trainer takes cuda:0 (and makes it
    the current device) and spreads over every visible GPU with DataParallel, whatever --gpu says.
    A module-level dataclass, so that the Trainer can pickle it into its checkpoints."""
    pinned_device: str = "cpu"

    @property
    def device(self) -> torch.device:
        pinned = torch.device(self.pinned_device)
        if "_setup_devices" not in self.__dict__:  # the Trainer needs its distributed state
            self._setup_devices  # (a cached property) ... which makes cuda:0 current
            if pinned.type == "cuda":
                torch.cuda.set_device(pinned)
        return pinned

    @property
    def n_gpu(self) -> int:
        return int(self.device.type == "cuda")


def trainer_arguments(device: torch.device, **kwargs) -> PinnedArguments:
    """TrainingArguments (kwargs) pinned to `device`."""
    return PinnedArguments(pinned_device=str(device), **kwargs)


@contextlib.contextmanager
def quiet_transformers():
    """Only errors from transformers' loggers and no progress bars (loading reports, checkpoint
    writes), and no per-evaluation printout: the caller prints what it measured. Restored after."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def accelerate_device(device: torch.device):
    """The Trainer's Accelerator places batches on accelerate's device: pin that one too."""
    before = os.environ.get("ACCELERATE_TORCH_DEVICE")
    os.environ["ACCELERATE_TORCH_DEVICE"] = str(device)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("ACCELERATE_TORCH_DEVICE")
        else:
            os.environ["ACCELERATE_TORCH_DEVICE"] = before
