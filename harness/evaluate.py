"""Inference over a split and the task metrics (accuracy beside the task's GLUE metric)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from harness.batching import Encoded, collate, eval_batches
from harness.models import cls_vector
from harness.tasks import TaskSpec

EVAL_BATCH_SIZE = 256  # inference on a GPU: large, length-sorted batches
EVAL_BATCH_SIZE_CPU = 32  # on a CPU larger batches are slower (cache), measured on 2 cores


def eval_batch_size(device) -> int:
    return EVAL_BATCH_SIZE if torch.device(device).type == "cuda" else EVAL_BATCH_SIZE_CPU


@torch.inference_mode()
def predict(model, enc: Encoded, device, autocast=contextlib.nullcontext,
            batch_size: int | None = None, with_embeddings: bool = False):
    """Logits [n, num_labels] (float32) and, optionally, [CLS] vectors [n, D] (float16), in the
    order of `enc` (batches run longest-first and are put back in place)."""
    was_training = model.training
    model.eval()
    logits_out, cls_out = [], []
    order = []
    for positions in eval_batches(enc.lengths, batch_size or eval_batch_size(device)):
        with autocast():
            out = model(**collate(enc, positions, device), output_hidden_states=with_embeddings)
        logits_out.append(out.logits.float().cpu())
        if with_embeddings:
            cls_out.append(cls_vector(out).to(torch.float16).cpu())
        order.append(positions)
    model.train(was_training)
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
