"""Inference that computes the last encoder layer for the first token only.

Evaluation needs two things from the last layer: the logits (the classification head reads the
first token, [CLS] / <s>) and that same token's vector (the stored embedding). Every other
position of the last layer is computed and thrown away: its query, attention output and
feed-forward rows. For a 3-layer MiniLM that is about a quarter of an evaluation pass. Here the
last layer computes keys and values for every position (the first token attends to all of them)
and everything else for the first token only; the layers below run unchanged.

It applies to BERT-style encoder layers (BERT, RoBERTa, MiniLM: `attention.self.query/key/value`,
`attention.output`, `intermediate`, `output`) under the `sdpa` or `eager` attention
implementations; `supported()` says whether a model qualifies, and other models take the full
forward pass. The arithmetic per row is the same as the full layer's (same weights, same
operations); only the shapes of the matrix products change, so results can differ in the last
bits, never in a prediction (tests/e2e/test_eval_identity.py checks the argmax on the smoke grid).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

LAYER_PARTS = ("attention", "intermediate", "output")
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")


def _encoder_layers(model):
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    return layers if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0 else None


def supported(model) -> bool:
    layers = _encoder_layers(model)
    if layers is None or getattr(model.config, "_attn_implementation", None) not in ATTENTION_IMPLEMENTATIONS:
        return False
    last = layers[-1]
    attn = getattr(last, "attention", None)
    return (all(hasattr(last, p) for p in LAYER_PARTS) and not getattr(last, "is_decoder", False)
            and all(hasattr(getattr(attn, "self", None), p) for p in ("query", "key", "value", "scaling"))
            and hasattr(attn, "output"))


class _FirstTokenLayer(torch.nn.Module):
    """Stands in for the last encoder layer: returns its output at position 0 only, [B, 1, D]."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        layer = self.layer
        sa = layer.attention.self
        b, n, _ = hidden_states.shape
        heads, size = sa.num_attention_heads, sa.attention_head_size
        first = hidden_states[:, :1]
        q = sa.query(first).view(b, 1, heads, size).transpose(1, 2)
        k = sa.key(hidden_states).view(b, n, heads, size).transpose(1, 2)
        v = sa.value(hidden_states).view(b, n, heads, size).transpose(1, 2)
        mask = attention_mask
        if mask is not None and mask.dim() == 4 and mask.shape[-2] != 1:
            mask = mask[:, :, :1, :]  # the first query's row of a [B, 1, L, L] mask
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=sa.scaling)
        ctx = ctx.transpose(1, 2).reshape(b, 1, heads * size)
        attended = layer.attention.output(ctx, first)
        return layer.output(layer.intermediate(attended), attended)


@contextlib.contextmanager
def first_token_last_layer(model):
    """Within the block, `model(...)` computes its last layer for the first token only: the
    encoder's last hidden state is [B, 1, D], which is all the head and Φ(x) read."""
    layers = _encoder_layers(model)
    original = layers[-1]
    layers[-1] = _FirstTokenLayer(original)
    try:
        yield
    finally:
        layers[-1] = original
