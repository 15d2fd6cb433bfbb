"""Per-epoch checkpoints of long jobs under the run folder, so that a restarted job resumes.

One file, `<run_dir>/checkpoint.pt`, holds everything the next epoch depends on: model, optimizer,
scheduler, the RNG states (dropout: the CPU's and the training GPU's, which is the only one a job
draws from), the best-so-far weights and score, the epoch metrics and the seconds spent. A
checkpoint resumes on any device: the GPU's state goes to whichever GPU trains next, however many
are visible there. Batch order needs no state: each epoch's batches are drawn from rng(seed, epoch).
The file is written atomically and deleted when the job finishes.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_MIN_EPOCH_SECONDS = 60  # "auto" policy: checkpoint epochs slower than this


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    best_score: float = -math.inf
    best_epoch: int = 0
    best_step: int | None = None  # the optimizer step of best_epoch's weights (a step budget's)
    best_accuracy: float | None = None
    best_weights: dict | None = None
    metrics: list = field(default_factory=list)
    seconds: float = 0.0  # training + evaluation so far


class Checkpointer:
    def __init__(self, run_dir: Path, job_id: str):
        self.path = Path(run_dir) / CHECKPOINT_FILE
        self.job_id = job_id

    def save(self, state: TrainState, model, optimizer, scheduler, device) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "job_id": self.job_id, "state": state.__dict__, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                    "random": random.getstate(),
                    "cuda": torch.cuda.get_rng_state(torch.device(device)) if _on_cuda(device) else None},
        }
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(payload, tmp)
        os.replace(tmp, self.path)

    def load(self, model, optimizer, scheduler, device) -> TrainState | None:
        """Restore a checkpoint of this job into the given objects; None if there is none."""
        if not self.path.is_file():
            return None
        # on the host: the model and optimizer copy what they load to their own device
        payload = torch.load(self.path, map_location="cpu", weights_only=False)
        if payload.get("job_id") != self.job_id:
            return None  # a stale file of another job: start afresh
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        rng = payload["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        np.random.set_state(rng["numpy"])
        random.setstate(rng["random"])
        cuda = rng.get("cuda")
        if isinstance(cuda, list):  # written by an older harness: one state per visible GPU
            index = torch.device(device).index or 0
            cuda = cuda[index] if index < len(cuda) else None
        if isinstance(cuda, torch.Tensor) and _on_cuda(device):
            torch.cuda.set_rng_state(cuda, torch.device(device))
        return TrainState(**payload["state"])

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)


def _on_cuda(device) -> bool:
    return torch.device(device).type == "cuda"
