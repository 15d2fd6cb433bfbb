"""Inference over a split and the task metrics (accuracy beside the task's GLUE metric)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from harness.training import first_token
from harness.training.batching import Encoded, collate, eval_batches, token_budget_batches
from harness.runtime.device import OutOfMemory, free_memory, is_out_of_memory
from harness.training.models import forward
from harness.protocol.tasks import TaskSpec

EVAL_BATCH_SIZE = 256  # inference on a GPU: large, length-sorted batches
EVAL_BATCH_SIZE_CPU = 32  # on a CPU larger batches are slower (cache), measured on 2 cores
# Token budgets (rows × padded width) of the length-ordered evaluation batches. On a CPU a batch
# of ~1k tokens keeps the activations in cache (a 3-layer MiniLM, QNLI pairs: 16 rows of 50
# tokens beat 32 or 64 rows; short SST-2 sentences then get 40 rows instead of 32).
EVAL_TOKENS_CPU = 1024
EVAL_TOKENS_GPU = EVAL_BATCH_SIZE * 64
EVAL_MODES = ("fast", "legacy")  # legacy: the previous evaluation, kept for the campaign benchmark


def eval_batch_size(device) -> int:
    return EVAL_BATCH_SIZE if torch.device(device).type == "cuda" else EVAL_BATCH_SIZE_CPU


def eval_batch_tokens(device) -> int:
    return EVAL_TOKENS_GPU if torch.device(device).type == "cuda" else EVAL_TOKENS_CPU


def predict(model, enc: Encoded, device, autocast=contextlib.nullcontext,
            batch_size: int | None = None, with_embeddings: bool = False, phase: str = "evaluation",
            batch_tokens: int | None = None, mode: str = "fast"):
    """Logits [n, num_labels] (float32) and, optionally, [CLS] vectors [n, D] (float16), in the
    order of `enc` (batches run longest-first and are put back in place).

    fast: batches of at most `batch_tokens` padded tokens (and `batch_size` rows) in length
    order, and the last layer computed for the first token only where the model allows
    (harness.training.first_token): the same predictions at lower cost. legacy: batches of `batch_size`
    rows and the full forward pass.

    Out of memory at batch b: free the cache and run again at b/2 (a GPU shared with other
    workers may have less room than it had), down to 1; then OutOfMemory names `phase` and b."""
    if mode not in EVAL_MODES:
        raise ValueError(f"mode must be one of {EVAL_MODES}")
    fast = mode == "fast"
    size = batch_size or (EVAL_BATCH_SIZE if fast else eval_batch_size(device))
    tokens = batch_tokens or eval_batch_tokens(device)
    was_training = model.training
    model.eval()
    try:
        while True:
            batches = (token_budget_batches(enc.lengths, tokens, size) if fast
                       else eval_batches(enc.lengths, size))
            try:
                return _predict(model, enc, device, autocast, batches, with_embeddings,
                                fast and first_token.supported(model))
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                if max(len(b) for b in batches) == 1:
                    raise OutOfMemory(phase, 1, exc) from exc
            # outside the except clause: the error's frames (and their tensors) are gone now
            free_memory(device)
            size, tokens = max(1, size // 2), max(1, tokens // 2)  # whichever binds, halves
    finally:
        model.train(was_training)


@torch.inference_mode()
def _predict(model, enc: Encoded, device, autocast, batches, with_embeddings: bool, first: bool):
    logits_out, cls_out = [], []
    with first_token.first_token_last_layer(model) if first else contextlib.nullcontext():
        for positions in batches:
            with autocast():
                logits, cls = forward(model, collate(enc, positions, device), with_embeddings)
            logits_out.append(logits.float().cpu())
            if with_embeddings:
                cls_out.append(cls.to(torch.float16).cpu())
    inverse = np.argsort(np.concatenate(batches))
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
