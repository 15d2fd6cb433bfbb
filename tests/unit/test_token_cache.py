"""The token cache of harness.training.batching with a tokenizer written here: an entry is keyed by
every text column of its example (sentence pairs too), tables live in memory and in .npz files,
and a file another worker wrote is merged, not overwritten. The real tokenizer on the real
sentence-pair mirrors is tests/e2e/test_caches.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.protocol.data import Examples
from harness.training import batching
from harness.training.batching import KEY_BYTES, collate, encode, text_key


class PairTokenizer:
    """Ids from the characters of one or two texts: [1] + first + [2] + second + [2], truncated to
    max_length; segment ids 0 for the first text and 1 for the second (a BERT-style pair)."""

    pad_token_id = 0

    def __init__(self, with_types: bool = True):
        self.model_input_names = ["input_ids", "attention_mask"] + (["token_type_ids"] if with_types else [])
        self.returns_types = with_types
        self.calls: list[list[tuple[str, ...]]] = []

    def ids(self, texts: tuple[str, ...], max_length: int) -> tuple[list[int], list[int]]:
        ids, types = [1], [0]
        for segment, text in enumerate(texts):
            ids += [3 + ord(c) % 50 for c in text] + [2]
            types += [segment] * (len(text) + 1)
        return ids[:max_length], types[:max_length]

    def __call__(self, *columns, truncation: bool, max_length: int | None = None, verbose: bool = True):
        rows = list(zip(*columns))
        if not truncation:  # batching.count_truncated: whole ids of the rows that fill max_length
            return {"input_ids": [self.ids(r, 10**9)[0] for r in rows]}
        self.calls.append(rows)
        out = [self.ids(r, max_length) for r in rows]
        enc = {"input_ids": [i for i, _ in out], "attention_mask": [[1] * len(i) for i, _ in out]}
        if self.returns_types:
            enc["token_type_ids"] = [t for _, t in out]
        return enc


def examples(texts: list[tuple[str, ...]], split: str = "validation_matched") -> Examples:
    n = len(texts)
    return Examples(split, np.arange(n), np.arange(100, 100 + n), np.zeros(n, dtype=np.int64), tuple(texts))


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch):
    """Each test starts with an empty in-process cache (the real one is process-wide)."""
    monkeypatch.setattr(batching, "_CACHE", {})


PAIRS = [("a man plays", "someone plays"), ("a man plays", "nobody plays"),
         ("a man plays", "someone plays"), ("two dogs run", "someone plays")]


def test_text_key_reads_every_column_and_its_boundaries():
    keys = {text_key(t) for t in [("a man plays", "someone plays"), ("a man plays", "nobody plays"),
                                   ("a man plays",), ("a man plays", ""), ("a man", " plays"),
                                   ("a man plays", "someone", "plays"), ("a man playssomeone plays",)]}
    assert len(keys) == 7
    assert text_key(("a", "b")) == text_key(("a", "b")) and len(text_key(("a", "b"))) == KEY_BYTES


def test_sentence_pairs_that_share_a_first_sentence_keep_their_own_tokens():
    tok = PairTokenizer()
    enc = encode(tok, "pair-tok", "mnli", examples(PAIRS), max_length=64)
    for i, pair in enumerate(PAIRS):
        ids, types = tok.ids(pair, 64)
        assert enc.input_ids[i].tolist() == ids and enc.token_type_ids[i].tolist() == types
        assert enc.input_ids[i].dtype == np.int32 and enc.token_type_ids[i].dtype == np.int8
    assert enc.lengths.tolist() == [len(tok.ids(p, 64)[0]) for p in PAIRS] and enc.lengths.dtype == np.int64
    assert enc.pad_id == 0
    assert len(tok.calls) == 1 and sorted(tok.calls[0]) == sorted(set(PAIRS))  # the repeated pair once


def test_a_second_call_tokenises_only_texts_it_has_not_seen():
    tok = PairTokenizer()
    encode(tok, "pair-tok", "mnli", examples(PAIRS[:2]), max_length=64)
    later = [PAIRS[1], ("a man plays", "a cat sleeps"), PAIRS[0]]
    enc = encode(tok, "pair-tok", "mnli", examples(later), max_length=64)
    assert tok.calls[1:] == [[later[1]]]
    assert [x.tolist() for x in enc.input_ids] == [tok.ids(p, 64)[0] for p in later]


def test_tables_are_per_tokenizer_max_length_task_and_split():
    tok = PairTokenizer()
    ex = examples(PAIRS[:1])
    encode(tok, "pair-tok", "mnli", ex, max_length=64)
    short = encode(tok, "pair-tok", "mnli", ex, max_length=5)
    assert short.input_ids[0].tolist() == tok.ids(PAIRS[0], 5)[0]
    encode(tok, "other-tok", "mnli", ex, max_length=64)
    encode(tok, "pair-tok", "qnli", ex, max_length=64)
    encode(tok, "pair-tok", "mnli", examples(PAIRS[:1], split="train"), max_length=64)
    assert len(tok.calls) == 5 and len(batching._CACHE) == 5


def test_a_tokenizer_without_segments_stores_none():
    tok = PairTokenizer(with_types=False)
    enc = encode(tok, "plain", "sst2", examples([("a fine film",), ("dull",)], split="validation"), 64)
    assert enc.token_type_ids is None
    batch = collate(enc, np.array([1, 0]), "cpu")
    assert set(batch) == {"input_ids", "attention_mask"}


def test_the_file_cache_serves_a_new_process_and_keeps_other_workers_entries(tmp_path, monkeypatch):
    tok = PairTokenizer()
    first = encode(tok, "pair-tok", "mnli", examples(PAIRS[:2]), 64, cache_dir=tmp_path)
    files = list((tmp_path / "tokens").glob("v2-mnli-64-*.npz"))
    assert len(files) == 1

    monkeypatch.setattr(batching, "_CACHE", {})  # a new process: memory empty, the file is read
    other = PairTokenizer()
    again = encode(other, "pair-tok", "mnli", examples(PAIRS[:2]), 64, cache_dir=tmp_path)
    assert other.calls == []
    for a, b in zip(first.input_ids + first.token_type_ids, again.input_ids + again.token_type_ids):
        assert a.tolist() == b.tolist()

    # worker B adds a pair to the file while worker A still holds the old table in memory
    table_a = dict(batching._CACHE)
    monkeypatch.setattr(batching, "_CACHE", {})
    encode(PairTokenizer(), "pair-tok", "mnli", examples([PAIRS[3]]), 64, cache_dir=tmp_path)
    monkeypatch.setattr(batching, "_CACHE", table_a)
    encode(PairTokenizer(), "pair-tok", "mnli", examples([("new", "pair")]), 64, cache_dir=tmp_path)
    monkeypatch.setattr(batching, "_CACHE", {})
    last = PairTokenizer()
    enc = encode(last, "pair-tok", "mnli", examples([PAIRS[0], PAIRS[3], ("new", "pair")]), 64, cache_dir=tmp_path)
    assert last.calls == []  # all three from the file: A's write kept B's entry
    assert [x.tolist() for x in enc.token_type_ids] == [tok.ids(p, 64)[1] for p in (PAIRS[0], PAIRS[3], ("new", "pair"))]
    assert not list((tmp_path / "tokens").glob("*.tmp*"))


def test_an_unreadable_cache_file_is_tokenised_again_and_rewritten(tmp_path, monkeypatch):
    tok = PairTokenizer()
    encode(tok, "pair-tok", "mnli", examples(PAIRS[:1]), 64, cache_dir=tmp_path)
    (file,) = (tmp_path / "tokens").glob("*.npz")
    file.write_bytes(b"not a zip file")
    monkeypatch.setattr(batching, "_CACHE", {})
    again = PairTokenizer()
    enc = encode(again, "pair-tok", "mnli", examples(PAIRS[:1]), 64, cache_dir=tmp_path)
    assert again.calls == [PAIRS[:1]] and enc.input_ids[0].tolist() == tok.ids(PAIRS[0], 64)[0]
    monkeypatch.setattr(batching, "_CACHE", {})
    third = PairTokenizer()
    encode(third, "pair-tok", "mnli", examples(PAIRS[:1]), 64, cache_dir=tmp_path)
    assert third.calls == []  # the rewritten file is whole again


def test_a_lone_surrogate_still_has_a_key_of_its_own():
    """Text read from files can hold unpaired surrogates: they are keyed as they are, not refused."""
    assert text_key(("a\ud800b",)) != text_key(("a\udbffb",)) != text_key(("ab",))


def test_each_tokenizer_and_split_has_a_file_of_its_own(tmp_path):
    tok = PairTokenizer()
    for tokenizer_id, split in (("pair-tok", "train"), ("other-tok", "train"), ("pair-tok", "test")):
        encode(tok, tokenizer_id, "mnli", examples(PAIRS[:1], split=split), 64, cache_dir=tmp_path)
    files = list((tmp_path / "tokens").glob("v2-mnli-64-*.npz"))
    assert len(files) == 3 and len({len(f.stem) for f in files}) == 1


def test_the_cache_folder_is_made_when_missing(tmp_path):
    folder = tmp_path / "runs" / ".cache"
    encode(PairTokenizer(), "pair-tok", "mnli", examples(PAIRS[:1]), 64, cache_dir=folder)
    assert len(list((folder / "tokens").glob("*.npz"))) == 1


def test_a_file_without_segment_ids_is_read_back_without_them(tmp_path, monkeypatch):
    texts = [("a fine film",), ("dull",)]
    first = encode(PairTokenizer(with_types=False), "plain", "sst2", examples(texts), 64, cache_dir=tmp_path)
    monkeypatch.setattr(batching, "_CACHE", {})
    again = PairTokenizer(with_types=False)
    enc = encode(again, "plain", "sst2", examples(texts), 64, cache_dir=tmp_path)
    assert again.calls == [] and enc.token_type_ids is None
    assert [x.tolist() for x in enc.input_ids] == [x.tolist() for x in first.input_ids]


def test_segment_ids_the_model_does_not_take_are_dropped():
    """A tokenizer may return token_type_ids that its model has no input for (RoBERTa's do not
    list them): only those in model_input_names are kept."""
    tok = PairTokenizer()  # returns segment ids ...
    tok.model_input_names = ["input_ids", "attention_mask"]  # ... that its model has no input for
    enc = encode(tok, "no-types", "mnli", examples(PAIRS[:2]), 64)
    assert enc.token_type_ids is None


def test_collate_pads_each_batch_to_its_longest_row():
    tok = PairTokenizer()
    pairs = [("ab", "c"), ("abcd", "e"), ("a", "b")]
    enc = encode(tok, "pair-tok", "mnli", examples(pairs), 64)
    batch = collate(enc, np.array([2, 0]), "cpu")  # rows of 5 and 6 tokens: width 6
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(v.dtype == torch.int64 and v.device.type == "cpu" for v in batch.values())
    ids_a, types_a = tok.ids(pairs[0], 64)
    ids_c, types_c = tok.ids(pairs[2], 64)
    assert batch["input_ids"].tolist() == [ids_c + [0], ids_a]
    assert batch["attention_mask"].tolist() == [[1] * 5 + [0], [1] * 6]
    assert batch["token_type_ids"].tolist() == [types_c + [0], types_a]


def test_collate_moves_the_batch_to_the_device():
    """The meta device (shapes only) stands for a GPU: every tensor arrives there."""
    enc = encode(PairTokenizer(), "pair-tok", "mnli", examples(PAIRS[:2]), 64)
    batch = collate(enc, np.array([0, 1]), torch.device("meta"))
    width = max(len(PairTokenizer().ids(p, 64)[0]) for p in PAIRS[:2])
    assert {v.device.type for v in batch.values()} == {"meta"} and batch["input_ids"].shape == (2, width)


def test_collate_copies_to_a_gpu_from_pinned_memory_without_waiting(monkeypatch):
    """On CUDA the host tensors are pinned and copied with non_blocking=True; on the CPU neither.
    CUDA's functions are recorded, not called (no GPU here)."""
    calls = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, device, non_blocking=False:
                        calls.append((str(device), non_blocking)) or self)
    enc = encode(PairTokenizer(), "pair-tok", "mnli", examples(PAIRS[:2]), 64)
    batch = collate(enc, np.array([0, 1]), "cuda:0")
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    assert calls == ["pin"] * 3 + [("cuda:0", True)] * 3
    calls.clear()
    collate(enc, np.array([0, 1]), "cpu")
    assert calls == [("cpu", False)] * 3
