"""Tokenisation (done once, cached) and batching (dynamic padding; fixed, reshuffled or
length-grouped training batches).

Token ids are cached by content: an entry's key is a hash of the example's texts, and each table
belongs to one tokenizer (a hash of its files and class, see harness.training.models.tokenizer_identity)
and one max_length. A changed sentence, a changed tokenizer or another max_length therefore never
meets an old entry. Tables live in a process-wide dict and, when a cache folder is given, in one
.npz file per (tokenizer, max_length, task, split) (the task and split only group entries, so
files stay small), so every job of a worker (and every worker sharing the folder) tokenises a text
once. Only the rows a job uses are tokenised: an N = 20 job does not pay for the 67k SST-2 rows.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.protocol.data import Examples

MEGA_BATCHES = 50  # length grouping sorts within windows of this many batches (as HF group_by_length)

_CACHE: dict[tuple, dict[bytes, tuple[np.ndarray, np.ndarray | None]]] = {}
KEY_BYTES = 16  # blake2b digest of an example's texts
_LOCK = threading.Lock()


@dataclass
class Encoded:
    """Token ids of a list of examples, ragged. Index i matches examples position i."""

    input_ids: list[np.ndarray]  # int32 [len_i] each
    token_type_ids: list[np.ndarray] | None  # BERT-style pair models only
    lengths: np.ndarray  # int64 [n]
    pad_id: int
    truncated: int = 0  # examples longer than max_length tokens, cut to it (recorded per split)


def text_key(texts: tuple[str, ...]) -> bytes:
    """The cache key of one example: a hash of its text columns (their count and boundaries too)."""
    h = hashlib.blake2b(digest_size=KEY_BYTES)
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.digest()


def encode(tokenizer, tokenizer_id: str, task: str, examples: Examples, max_length: int,
           cache_dir: Path | None = None) -> Encoded:
    """Token ids for `examples`, tokenising only texts not yet in the cache.

    tokenizer_id: what identifies the tokenizer's behaviour (harness.training.models.tokenizer_identity);
    the texts themselves key the entries, so the row positions play no part."""
    key = (tokenizer_id, max_length, task, examples.split)
    keys = [text_key(t) for t in examples.texts]
    with _LOCK:
        table = _CACHE.setdefault(key, {})
        file = _cache_file(cache_dir, key)
        if not table and file is not None and file.is_file():
            table.update(_read(file))
        missing = sorted({k: i for i, k in enumerate(keys) if k not in table}.values())
        if missing:
            columns = list(zip(*(examples.texts[i] for i in missing)))
            out = tokenizer(*columns, truncation=True, max_length=max_length)
            types = out.get("token_type_ids") if "token_type_ids" in tokenizer.model_input_names else None
            for j, i in enumerate(missing):
                table[keys[i]] = (np.asarray(out["input_ids"][j], dtype=np.int32),
                                  None if types is None else np.asarray(types[j], dtype=np.int8))
            if file is not None:
                if file.is_file():  # another worker may have added entries meanwhile: keep them
                    for k, entry in _read(file).items():
                        table.setdefault(k, entry)
                _write(file, table)
        entries = [table[k] for k in keys]
    ids = [e[0] for e in entries]
    types = None if not entries or entries[0][1] is None else [e[1] for e in entries]
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    return Encoded(ids, types, lengths, tokenizer.pad_token_id,
                   count_truncated(tokenizer, examples, lengths, max_length))


def count_truncated(tokenizer, examples: Examples, lengths: np.ndarray, max_length: int) -> int:
    """How many examples have more than max_length tokens. Only those whose (truncated) ids fill
    max_length can, so only they are tokenised again, whole: few or none in most splits."""
    full = np.flatnonzero(lengths >= max_length)
    if not len(full):
        return 0
    columns = list(zip(*(examples.texts[i] for i in full)))
    out = tokenizer(*columns, truncation=False, verbose=False)  # verbose: no length warning
    return sum(len(x) > max_length for x in out["input_ids"])


def _cache_file(cache_dir: Path | None, key: tuple) -> Path | None:
    if cache_dir is None:
        return None
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:16]
    # "v2": entries keyed by text hash (v1 files, keyed by row position, are never read)
    return Path(cache_dir) / "tokens" / f"v2-{key[2]}-{key[1]}-{digest}.npz"


def _read(file: Path) -> dict:
    try:
        with np.load(file) as z:
            keys, offsets, flat = z["keys"], z["offsets"], z["ids"]
            types = z["types"] if "types" in z else None
    except (OSError, ValueError, KeyError, EOFError):  # unreadable: tokenise again, rewrite it
        return {}
    return {k.tobytes(): (flat[offsets[i]:offsets[i + 1]],
                       None if types is None else types[offsets[i]:offsets[i + 1]])
            for i, k in enumerate(keys)}


def _write(file: Path, table: dict) -> None:
    """The table as one .npz file, replaced atomically; never empty (encode writes a table only
    after adding entries to it)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted(table)
    ids = [table[k][0] for k in keys]
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in ids])]).astype(np.int64)
    # raw uint8 rows, not an "S" array: numpy strips the trailing NUL bytes of those
    arrays = {"keys": np.frombuffer(b"".join(keys), np.uint8).reshape(-1, KEY_BYTES), "offsets": offsets,
              "ids": np.concatenate(ids)}
    if table[keys[0]][1] is not None:
        arrays["types"] = np.concatenate([table[k][1] for k in keys])
    tmp = file.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, file)  # atomic: concurrent workers never read half a file


# ---- batches ------------------------------------------------------------------------------
FIXED_SALT = 104729  # separates the fixed permutation's stream from the per-epoch streams


def train_batches(lengths: np.ndarray, batch_size: int, mode: str, seed: int,
                  epoch: int) -> list[np.ndarray]:
    """The training batches of one epoch (positions into the training set), a function of
    (lengths, batch_size, mode, seed, epoch) only: resumable, and the same for the CE and the
    CE+SCL job of one seed.

    fixed:     fairseq's sentence_prediction (the paper's code base): one permutation drawn once
               from the seed, cut into consecutive batches; every epoch has the same batches and
               only their order changes (SortDataset(sort_order=[shuffle]) + a shuffled epoch
               iterator).
    reshuffle: a new permutation every epoch, cut into batches (Hugging Face Trainer's sampler).
    length:    length-grouped batches, new every epoch (little padding: the fast path for
               full-data runs; members correlate with length, so never a few-shot default).
    """
    rng = np.random.default_rng([seed, epoch])
    if mode == "fixed":
        order = np.random.default_rng([FIXED_SALT, seed]).permutation(len(lengths))
        batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]
    if mode == "reshuffle":
        order = rng.permutation(len(lengths))
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if mode == "length":
        return length_grouped_batches(lengths, batch_size, rng)
    raise ValueError(f"unknown batching {mode!r}")


def length_grouped_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                           group: bool = True) -> list[np.ndarray]:
    """Shuffled batches of positions; with `group`, similar lengths share a batch.

    Shuffle, sort by length inside windows of MEGA_BATCHES batches (little padding), cut into
    batches, then shuffle the batch order (no long-to-short curriculum). All draws come from `rng`.
    """
    order = rng.permutation(len(lengths))
    if group:
        window = batch_size * MEGA_BATCHES
        order = np.concatenate([w[np.argsort(-lengths[w], kind="stable")]
                                for w in np.array_split(order, max(1, -(-len(order) // window)))])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Length-sorted batches for inference (padding is minimal; order is restored by the caller)."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def token_budget_batches(lengths: np.ndarray, max_tokens: int, max_rows: int) -> list[np.ndarray]:
    """Inference batches in length order (longest first), each as many rows as fit in
    `max_tokens` padded tokens (rows × its longest row), at least one row and at most `max_rows`."""
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        rows = max(1, min(max_rows, max_tokens // max(1, int(lengths[order[start]]))))
        batches.append(order[start:start + rows])
        start += rows
    return batches


def collate(enc: Encoded, positions: np.ndarray, device: torch.device | str) -> dict[str, torch.Tensor]:
    """Dynamic padding: pad to the longest sequence of this batch only."""
    width = int(enc.lengths[positions].max())
    ids = np.full((len(positions), width), enc.pad_id, dtype=np.int64)
    mask = np.zeros((len(positions), width), dtype=np.int64)
    types = None if enc.token_type_ids is None else np.zeros((len(positions), width), dtype=np.int64)
    for row, p in enumerate(positions):
        n = enc.lengths[p]
        ids[row, :n] = enc.input_ids[p]
        mask[row, :n] = 1
        if types is not None:
            types[row, :n] = enc.token_type_ids[p]
    non_blocking = torch.device(device).type == "cuda"
    batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    if types is not None:
        batch["token_type_ids"] = torch.from_numpy(types)
    if non_blocking:
        batch = {k: v.pin_memory() for k, v in batch.items()}
    return {k: v.to(device, non_blocking=non_blocking) for k, v in batch.items()}
