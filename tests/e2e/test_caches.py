"""Caches are keyed by what they were made from: a changed sentence, tokenizer or max length is
never served an old entry, whatever the runs folder holds."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from harness.training import batching
from harness.training.batching import encode
from harness.protocol.data import protocol_splits, sample_train
from harness.training.finetune import fine_tune
from harness.training.models import load_pretrained
from harness.noise.sets import noisy_texts
from harness.training.runner import RunContext
from harness.protocol.spec import SMALL_MODEL, JobSpec

from paths import DATA_DIR

TINY = dict(task="sst2", n=8, seed=0, model=SMALL_MODEL, epochs=1, max_length=32, lr=1e-4,
            val_size=16, batch_size=8)


def mirror_with_sst2(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(DATA_DIR / "sst2", root / "sst2")
    return root


def test_one_changed_training_sentence_changes_tokens_and_results(tmp_path):
    data = mirror_with_sst2(tmp_path)
    cache = tmp_path / "runs" / ".cache"
    spec = JobSpec.make(**TINY)
    first = fine_tune(spec, RunContext(run_dir=tmp_path / "a", cache_dir=cache), data_dir=data)

    train = sample_train(protocol_splits("sst2", spec.val_size, data).pool, spec.n, spec.seed)
    target = int(train.rows[0])  # one sentence the job trains on
    train_file = data / "sst2" / "train.jsonl"
    lines = train_file.read_text().splitlines()
    row = json.loads(lines[target])
    row["sentence"] = "an entirely different sentence , with other words in it ."
    lines[target] = json.dumps(row)
    train_file.write_text("\n".join(lines) + "\n")

    pre = load_pretrained(SMALL_MODEL)
    changed = sample_train(protocol_splits("sst2", spec.val_size, data).pool, spec.n, spec.seed)
    assert changed.texts[0][0] == row["sentence"]  # the in-process data cache saw the edit
    enc = encode(pre.tokenizer, pre.tokenizer_id, "sst2", changed, spec.max_length, cache)
    expected = pre.tokenizer(row["sentence"], truncation=True, max_length=spec.max_length)["input_ids"]
    assert enc.input_ids[0].tolist() == expected

    second = fine_tune(spec, RunContext(run_dir=tmp_path / "b", cache_dir=cache), data_dir=data)
    train_loss = lambda r: [v for s, _, n, v in r.metrics if (s, n) == ("train", "loss")]
    assert train_loss(first) != train_loss(second)
    assert first.embeddings.tobytes() != second.embeddings.tobytes()


def test_token_cache_files_serve_only_identical_texts(tmp_path):
    pre = load_pretrained(SMALL_MODEL)
    pool = protocol_splits("sst2", 16, DATA_DIR).pool
    ex = sample_train(pool, 6, 1)
    cache = tmp_path / "cache"
    a = encode(pre.tokenizer, pre.tokenizer_id, "sst2", ex, 32, cache)
    blank = type(ex)(ex.split, ex.rows, ex.idx, ex.labels, tuple(("",) for _ in ex.texts))
    b = encode(pre.tokenizer, pre.tokenizer_id, "sst2", blank, 32, cache)  # same rows, other texts
    assert all(len(x) == 2 for x in b.input_ids)  # [CLS] [SEP] only
    assert any(not np.array_equal(x, y) for x, y in zip(a.input_ids, b.input_ids))
    c = encode(pre.tokenizer, pre.tokenizer_id, "sst2", ex, 8, cache)  # other max length
    assert max(c.lengths) <= 8 < max(a.lengths)
    other = encode(pre.tokenizer, "another-tokenizer", "sst2", ex, 32, cache)
    assert [x.tolist() for x in other.input_ids] == [x.tolist() for x in a.input_ids]
    files = sorted(p.name for p in (cache / "tokens").iterdir())
    assert len(files) == 3  # one table per (tokenizer, max length): nothing shared between them


class FakeTranslator:
    calls = 0

    def noise(self, texts, temperature, seed):
        FakeTranslator.calls += 1
        return [t[::-1] for t in texts]


def test_noisy_sets_are_keyed_by_their_texts(tmp_path, monkeypatch):
    import harness.noise.sets as sets

    monkeypatch.setattr(sets, "_translator", lambda backend: FakeTranslator())
    texts = [("a good film",), ("a bad film",)]
    out1, rec1 = noisy_texts(texts, temperature=0.5, backend="firefox-pt", seed=0, cache_dir=tmp_path)
    out2, rec2 = noisy_texts(texts, temperature=0.5, backend="firefox-pt", seed=0, cache_dir=tmp_path)
    assert rec2.cached and out2 == out1 and FakeTranslator.calls == 1
    changed = [("a good film",), ("an awful film",)]
    out3, rec3 = noisy_texts(changed, temperature=0.5, backend="firefox-pt", seed=0, cache_dir=tmp_path)
    assert not rec3.cached and rec3.key != rec1.key and out3[1] == ("mlif lufwa na",)


@pytest.mark.parametrize("task", ["mnli", "qnli"])
def test_sentence_pairs_are_served_their_own_tokens(task, tmp_path):
    """MNLI and QNLI test rows share first sentences (a premise has several hypotheses): the
    cache must key on both, or it serves one pair another pair's ids. Every row, through the
    in-memory table and then through the file, equals the tokenizer's own output for its pair."""
    pre = load_pretrained(SMALL_MODEL)
    ex = protocol_splits(task, 64, DATA_DIR).test
    assert len({t[0] for t in ex.texts}) < len(ex)  # the data repeat first sentences
    direct = pre.tokenizer(*zip(*ex.texts), truncation=True, max_length=128)
    for source in ("memory", "file"):
        if source == "file":
            batching._CACHE.clear()
        enc = encode(pre.tokenizer, pre.tokenizer_id, task, ex, 128, tmp_path)
        wrong = [i for i, (ids, types, want, want_types) in enumerate(zip(
            enc.input_ids, enc.token_type_ids, direct["input_ids"], direct["token_type_ids"]))
            if ids.tolist() != want or types.tolist() != want_types]
        assert not wrong, f"{source}: {len(wrong)} of {len(ex)} {task} test rows got another row's tokens"
