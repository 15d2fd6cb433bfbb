"""The supervised contrastive (SCL) term of Gunel et al. (2021), as a pure function.

    L_SCL = R_i [ −1/(N_{y_i} − 1) · Σ_{j≠i, y_j=y_i} log( exp(z_i·z_j/τ) / Σ_{k≠i} exp(z_i·z_k/τ) ) ]

where z = Φ(x) are the L2-normalised final-layer [CLS] vectors of one mini-batch and R_i is the
reduction over anchors: the paper prints a plain sum; SupContrast and most re-implementations take
the mean. The two differ by a factor of the batch size, i.e. they change the effective λ, so the
choice is recorded per job (`JobSpec.scl_reduction`).

Anchors with no positive (N_{y_i} = 1: the only example of its class in the batch) make the
paper's formula divide by zero. They are DROPPED from the reduction: they contribute nothing and do
not count in the mean's denominator (the known NaN bug of SupContrast comes from exactly this case).
They still serve as negatives for the other anchors. If no anchor has a positive the loss is an
exact 0 that is still attached to the graph (so `backward()` works and yields zero gradients).

Both functions compute in float32 even inside an autocast region: there `z @ z.T` would run in
bfloat16 whatever the input's dtype, rounding every similarity (steps of 0.0625 near 1/τ = 10) and
moving the loss by ~1e-3 and its gradient by ~0.5%.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from harness.protocol.paper import SCL_REDUCTIONS

# Fills the diagonal (k = i) before the softmax. Finite on purpose: exp() of it underflows to 0, and
# unlike -inf it never produces -inf − (-inf) or 0·(-inf) = NaN (e.g. in a batch of one).
DIAGONAL_FILL = -1e9
NO_POSITIVE_HANDLING = "drop"  # recorded in the resolved config


def supervised_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, tau: float,
                                reduction: str = "mean") -> torch.Tensor:
    """SCL over one batch.

    Args:
        embeddings: [B, D] L2-normalised vectors (normalise before calling; the function does not,
            so that callers and tests control it). Computed in float32 whatever the input's dtype
            or the autocast state.
        labels: [B] integer class ids.
        tau: temperature τ > 0.
        reduction: "mean" over anchors that have a positive, or "sum" over them (the paper).

    Returns:
        A scalar tensor; 0 (with a graph) when no anchor has a positive.
    """
    if reduction not in SCL_REDUCTIONS:
        raise ValueError(f"reduction must be one of {SCL_REDUCTIONS}, got {reduction!r}")
    with float32(embeddings.device):
        return _scl(_at_least_float32(embeddings), labels, tau, reduction)


def _scl(z: torch.Tensor, labels: torch.Tensor, tau: float, reduction: str) -> torch.Tensor:
    batch = z.shape[0]
    self_mask = torch.eye(batch, dtype=torch.bool, device=z.device)

    logits = (z @ z.T) / tau  # [B, B]
    logits = logits.masked_fill(self_mask, DIAGONAL_FILL)
    # Subtracting the row max changes nothing mathematically (it cancels in the log-softmax) but
    # keeps exp() in range for small τ; detached because its gradient would cancel anyway.
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # denominator over k ≠ i

    positives = (labels.view(-1, 1) == labels.view(1, -1)) & ~self_mask  # [B, B]
    n_positives = positives.sum(dim=1)  # N_{y_i} − 1
    has_positive = n_positives > 0
    # torch.where, not multiplication: masked entries contribute an exact 0 and a 0 gradient.
    per_anchor = -torch.where(positives, log_prob, 0.0).sum(dim=1) / n_positives.clamp(min=1)
    total = torch.where(has_positive, per_anchor, 0.0).sum()
    if reduction == "sum":
        return total
    return total / has_positive.sum().clamp(min=1)


def normalize(features: torch.Tensor) -> torch.Tensor:
    """Φ(x) as the loss expects it: [B, D] → unit L2 norm per row (computed in float32 at least)."""
    with float32(features.device):
        return F.normalize(_at_least_float32(features), dim=-1)


def float32(device: torch.device) -> contextlib.AbstractContextManager:
    """A region where autocast is off, so float32 inputs are computed in float32."""
    return torch.autocast(device_type=device.type, enabled=False)


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
