"""A training forward pass without padding, and with the last layer for the first token only.

A training batch is padded to its longest example, and the encoder computes every layer at every
position, pads included; the loss reads one vector per example, the last layer's first token
([CLS] / <s>). Few-shot batches are short and uneven (SST-2: 14 tokens on average, padded to about
twice that), so most of a training step's matrix products work on padding or on last-layer rows
nobody reads. Here, inside `packed_encoder(model, attention_mask)`:

- the position-wise parts of every layer (query/key/value, attention output, feed-forward, their
  LayerNorms) run on the real tokens only, packed into one [T, D] matrix;
- attention itself runs exactly as the model's own layer runs it (same implementation, same mask,
  same padded [B, H, L, L] shape), so its dropout draws the same random numbers;
- the last layer projects every real token (the first token attends to all of them, and its
  attention's dropout is drawn at the full shape) and computes its attention output and
  feed-forward rows for the first token only;
- every hidden-state dropout draws its mask at the padded [B, L, D] shape, as the full layer
  does, and keeps the rows it needs: the random number stream, and so every dropout mask, is the
  one the full forward pass draws.

The arithmetic per row is the full layer's (same weights, same operations); only the number of
rows in the matrix products changes, so values can differ in the last bits
(tests/e2e/test_packed.py compares logits, [CLS] vectors, gradients and the RNG state with
the full pass). It applies to BERT-style encoders (BERT, RoBERTa, MiniLM) under the `sdpa` or
`eager` attention implementations; `supported()` says whether a model qualifies, and other models
train with the full forward pass.
"""

from __future__ import annotations

import contextlib

import torch

from harness.training.first_token import _encoder_layers
from harness.training.first_token import supported as _last_layer_supported


def supported(model) -> bool:
    layers = _encoder_layers(model)
    if layers is None or not _last_layer_supported(model):
        return False
    config = model.config
    return (getattr(config, "chunk_size_feed_forward", 0) == 0
            and getattr(config, "position_embedding_type", "absolute") == "absolute"
            and not getattr(config, "add_cross_attention", False)
            and all(type(layer) is type(layers[-1]) for layer in layers))


@contextlib.contextmanager
def packed_encoder(model, token_mask: torch.Tensor):
    """Within the block, `model(...)` (whose `attention_mask` [B, L] is `token_mask`) runs its
    encoder packed; its last hidden state is [B, 1, D], the first token, which is all the head
    and Φ(x) read."""
    base = getattr(model, model.base_model_prefix)
    encoder = base.encoder
    layers = list(encoder.layer)
    own = vars(encoder).get("forward")  # normally absent: the class's forward

    def forward(hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                cache=None, use_cache=None, **kwargs):
        # attention_mask: the model's own [B, 1, L, L] form of token_mask, as its layers get it
        from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions as Output

        return Output(last_hidden_state=_packed_layers(
            layers, hidden_states, token_mask, attention_mask, kwargs))

    encoder.forward = forward
    try:
        yield
    finally:
        if own is None:
            del encoder.forward
        else:
            encoder.forward = own


class _Packing:
    """Where the real tokens of a [B, L] batch are: `keep`, their flat positions in B·L order."""

    def __init__(self, token_mask: torch.Tensor):
        self.b, self.n = token_mask.shape
        if not bool(token_mask[:, 0].all()):
            raise ValueError("packed_encoder needs the first token of every row to be a real token")
        self.keep = token_mask.reshape(-1).nonzero().squeeze(1)
        self.firsts = torch.arange(self.b, device=token_mask.device) * self.n  # flat positions
        self.firsts_packed = torch.searchsorted(self.keep, self.firsts)  # their rows in [T, D]

    def unpack(self, packed: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """[T, D] → [B, L, D], zeros at the positions not in `rows` (default: the real tokens)."""
        rows = self.keep if rows is None else rows
        full = packed.new_zeros(self.b * self.n, packed.shape[-1])
        return full.index_copy(0, rows, packed).view(self.b, self.n, -1)

    def pack(self, full: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        rows = self.keep if rows is None else rows
        return full.reshape(self.b * self.n, -1).index_select(0, rows)

    def dropout(self, module: torch.nn.Dropout, x: torch.Tensor, rows: torch.Tensor | None = None):
        """`module` applied to the rows `rows` of a [B, L, D] tensor: the mask is drawn at [B, L, D],
        as the full layer draws it, so the random stream and the kept rows' masks are the same."""
        if not module.training or module.p == 0:
            return x
        return self.pack(module(self.unpack(x, rows)), rows)


def _attention(layer, packing: _Packing, h: torch.Tensor, attention_mask_4d, kwargs) -> torch.Tensor:
    """The layer's self-attention context [B, L, D], from packed hidden states [T, D]; queries,
    keys and values are projected for the real tokens only, attention runs at the padded shape."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    sa = layer.attention.self
    shape = (packing.b, packing.n, -1, sa.attention_head_size)
    q, k, v = (packing.unpack(proj(h)).view(*shape).transpose(1, 2) for proj in (sa.query, sa.key, sa.value))
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(sa.config._attn_implementation, eager_attention_forward)
    context, _ = interface(sa, q, k, v, attention_mask_4d, dropout=sa.dropout.p if sa.training else 0.0,
                           scaling=sa.scaling, **kwargs)
    return context.reshape(packing.b, packing.n, -1)


def _rest_of_layer(layer, packing: _Packing, context: torch.Tensor, h: torch.Tensor,
                   rows: torch.Tensor | None = None) -> torch.Tensor:
    """Attention output, LayerNorm and feed-forward for the given packed rows."""
    out = layer.attention.output
    attended = out.LayerNorm(packing.dropout(out.dropout, out.dense(context), rows) + h)
    ffn = layer.output
    hidden = ffn.dense(layer.intermediate(attended))
    return ffn.LayerNorm(packing.dropout(ffn.dropout, hidden, rows) + attended)


def _packed_layers(layers, hidden_states, token_mask, attention_mask_4d, kwargs) -> torch.Tensor:
    packing = _Packing(token_mask.to(hidden_states.device).bool())
    h = packing.pack(hidden_states)
    for layer in layers[:-1]:
        h = _rest_of_layer(layer, packing, packing.pack(_attention(layer, packing, h, attention_mask_4d, kwargs)), h)
    last = layers[-1]
    context = _attention(last, packing, h, attention_mask_4d, kwargs)[:, 0]
    first = h.index_select(0, packing.firsts_packed)  # [B, D]: each row's first token
    return _rest_of_layer(last, packing, context, first, packing.firsts).unsqueeze(1)
