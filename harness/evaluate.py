"""Inference over a split and the task metrics (accuracy beside the task's GLUE metric)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from harness.batching import Encoded, collate, eval_batches
from harness.device import OutOfMemory, free_memory, is_out_of_memory
from harness.models import forward
from harness.tasks import TaskSpec

EVAL_BATCH_SIZE = 256  # inference on a GPU: large, length-sorted batches
EVAL_BATCH_SIZE_CPU = 32  # on a CPU larger batches are slower (cache), measured on 2 cores


def eval_batch_size(device) -> int:
    return EVAL_BATCH_SIZE if torch.device(device).type == "cuda" else EVAL_BATCH_SIZE_CPU


def predict(model, enc: Encoded, device, autocast=contextlib.nullcontext,
            batch_size: int | None = None, with_embeddings: bool = False, phase: str = "evaluation"):
    """Logits [n, num_labels] (float32) and, optionally, [CLS] vectors [n, D] (float16), in the
    order of `enc` (batches run longest-first and are put back in place).

    Out of memory at batch b: free the cache and run again at b/2 (a GPU shared with other
    workers may have less room than it had), down to 1; then OutOfMemory names `phase` and b."""
    size = batch_size or eval_batch_size(device)
    was_training = model.training
    model.eval()
    try:
        while True:
            try:
                return _predict(model, enc, device, autocast, size, with_embeddings)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                if size == 1:
                    raise OutOfMemory(phase, size, exc) from exc
            # outside the except clause: the error's frames (and their tensors) are gone now
            free_memory(device)
            size = max(1, size // 2)
    finally:
        model.train(was_training)


@torch.inference_mode()
def _predict(model, enc: Encoded, device, autocast, batch_size: int, with_embeddings: bool):
    logits_out, cls_out = [], []
    order = []
    for positions in eval_batches(enc.lengths, batch_size):
        with autocast():
            logits, cls = forward(model, collate(enc, positions, device), with_embeddings)
        logits_out.append(logits.float().cpu())
        if with_embeddings:
            cls_out.append(cls.to(torch.float16).cpu())
        order.append(positions)
    inverse = np.argsort(np.concatenate(order))
    logits = torch.cat(logits_out).numpy()[inverse]
    cls = torch.cat(cls_out).numpy()[inverse] if with_embeddings else None
    return logits, cls


def predictions(task: TaskSpec, logits: np.ndarray) -> np.ndarray:
    return logits[:, 0] if task.is_regression else logits.argmax(axis=1)


def task_metrics(task: TaskSpec, labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """{'score': the task's metric, 'accuracy': ..., plus the metric by name (and spearman)}."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import f1_score, matthews_corrcoef

    pred = predictions(task, logits)
    out: dict[str, float] = {}
    if task.is_regression:
        # A constant prediction has no correlation; count it as 0 rather than NaN.
        constant = np.ptp(pred) == 0
        out["pearson"] = 0.0 if constant else float(pearsonr(pred, labels)[0])
        out["spearman"] = 0.0 if constant else float(spearmanr(pred, labels)[0])
    else:
        out["accuracy"] = float((pred == labels).mean())
        if task.metric == "f1":
            out["f1"] = float(f1_score(labels, pred, zero_division=0))
        elif task.metric == "mcc":
            out["mcc"] = float(matthews_corrcoef(labels, pred))
    out["score"] = out[task.metric]
    return out
