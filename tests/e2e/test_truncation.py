"""Texts longer than max_length tokens are cut to it, and counted: per split, in the job's metrics
(split, None, "truncated", k) and its resolved config, never silently."""

from __future__ import annotations

import json
import shutil

import numpy as np

from harness.protocol.data import Examples, protocol_splits, sample_train
from harness.protocol.spec import SMALL_MODEL, JobSpec
from harness.training.batching import encode
from harness.training.finetune import fine_tune
from harness.training.models import load_pretrained
from harness.training.runner import RunContext

from paths import DATA_DIR

MAX_LENGTH = 32
LONG = "an endless review , " * 1000  # 20,000 characters


def examples(*texts) -> Examples:
    n = len(texts)
    return Examples("train", np.arange(n), np.arange(n), np.zeros(n, np.int64),
                    tuple(t if isinstance(t, tuple) else (t,) for t in texts))


def reference(tokenizer, ex: Examples, max_length: int) -> int:
    """Examples with more than max_length tokens, counted the slow way: every one tokenised whole."""
    return sum(len(tokenizer(*t)["input_ids"]) > max_length for t in ex.texts)


def test_encode_counts_the_examples_longer_than_max_length(tmp_path):
    tok = load_pretrained(SMALL_MODEL).tokenizer
    exact = "a " * (MAX_LENGTH - 2)  # [CLS] + 30 tokens + [SEP]: fills max_length, is not cut
    assert len(tok(exact)["input_ids"]) == MAX_LENGTH
    ex = examples("a short one", LONG, exact, exact + "a")
    enc = encode(tok, "tok", "sst2", ex, MAX_LENGTH, tmp_path)
    assert enc.truncated == reference(tok, ex, MAX_LENGTH) == 2
    assert max(enc.lengths) == MAX_LENGTH
    # served from the token cache the second time: still counted
    again = encode(tok, "tok", "sst2", ex, MAX_LENGTH, tmp_path)
    assert again.truncated == 2 and again.lengths.tolist() == enc.lengths.tolist()
    pairs = examples(("a question ?", LONG), ("a question ?", "a short answer"))
    assert encode(tok, "tok", "qnli", pairs, MAX_LENGTH).truncated == reference(tok, pairs, MAX_LENGTH) == 1


def test_a_job_records_its_truncated_examples_per_split(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(DATA_DIR / "sst2", data / "sst2")
    spec = JobSpec.make(task="sst2", n=8, seed=0, model=SMALL_MODEL, epochs=1, max_length=MAX_LENGTH,
                        lr=1e-4, val_size=16, batch_size=8)
    splits = protocol_splits("sst2", spec.val_size, data)
    target = int(sample_train(splits.pool, spec.n, spec.seed).rows[0])  # a row the job trains on
    train_file = data / "sst2" / "train.jsonl"
    lines = train_file.read_text().splitlines()
    lines[target] = json.dumps({**json.loads(lines[target]), "sentence": LONG})
    train_file.write_text("\n".join(lines) + "\n")

    r = fine_tune(spec, RunContext(run_dir=tmp_path / "run"), data_dir=data)
    tok = load_pretrained(SMALL_MODEL).tokenizer
    now = protocol_splits("sst2", spec.val_size, data)
    expected = {"train": reference(tok, sample_train(now.pool, spec.n, spec.seed), MAX_LENGTH),
                "validation": reference(tok, now.validation, MAX_LENGTH),
                "test": reference(tok, now.test, MAX_LENGTH)}
    assert expected["train"] >= 1 and expected["test"] > 0  # the long text, and real long reviews
    assert r.config["truncated"] == expected
    assert {s: v for s, e, name, v in r.metrics if name == "truncated" and e is None} == expected
