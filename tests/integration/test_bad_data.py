"""Bad rows in a data file: a clear error naming the file, the line and what is wrong, and a job
that fails once (the data will not change), never a silent cast or a score against a bad label."""

from __future__ import annotations

import json

import pytest

from harness.store import db, queue
from harness.training.inputs import prepare_data
from harness.errors import DataError
from harness.protocol.spec import SMALL_MODEL, JobSpec
from harness.worker import Worker, WorkerOptions

from paths import DATA_DIR

BAD_LINE = 5  # 1-based line of train.jsonl that each case spoils


def small_mirror(tmp_path, split="train", line=BAD_LINE, text=None) -> tuple:
    """An SST-2 mirror with a 60-row training file; `text` replaces line `line` of `split`."""
    root = tmp_path / "data"
    (root / "sst2").mkdir(parents=True)
    train = (DATA_DIR / "sst2" / "train.jsonl").read_text().splitlines()[:60]
    (root / "sst2" / "train.jsonl").write_text("\n".join(train) + "\n")
    (root / "sst2" / "validation.jsonl").write_text((DATA_DIR / "sst2" / "validation.jsonl").read_text())
    path = root / "sst2" / f"{split}.jsonl"
    if text is not None:
        lines = path.read_text().splitlines()
        lines[line - 1] = text
        path.write_text("\n".join(lines) + "\n")
    return root, path


ROW = {"sentence": "a fine film", "label": 1, "idx": 4}
BAD_ROWS = {
    "malformed JSON": ('{"sentence": "a fine film", "label": 1', "not valid JSON"),
    "not an object": ("[1, 2]", "expected a JSON object"),
    "missing label": (json.dumps({"sentence": "a fine film", "idx": 4}), "has no label"),
    "null label": (json.dumps({**ROW, "label": None}), "label is null"),
    "label outside the classes": (json.dumps({**ROW, "label": 2}), "outside the classes 0–1"),
    "negative label": (json.dumps({**ROW, "label": -1}), "outside the classes 0–1"),
    "string label": (json.dumps({**ROW, "label": "1"}), "is a str, not a number"),
    "fractional label": (json.dumps({**ROW, "label": 0.5}), "not a whole class number"),
    "boolean label": (json.dumps({**ROW, "label": True}), "is a bool"),
    "null text": (json.dumps({**ROW, "sentence": None}), "null 'sentence'"),
    "missing text column": (json.dumps({"text": "a fine film", "label": 1, "idx": 4}), "no 'sentence'"),
    "numeric text": (json.dumps({**ROW, "sentence": 42}), "non-text"),
    "missing idx among rows that have one": (json.dumps({"sentence": "a fine film", "label": 1}), "no idx"),
    "fractional idx": (json.dumps({**ROW, "idx": 4.5}), "idx 4.5 is not a whole number"),
    "empty text": (json.dumps({**ROW, "sentence": ""}), "the row's 'sentence' text is empty"),
    "all-whitespace text": (json.dumps({**ROW, "sentence": " \t "}), "'sentence' text is empty"),
    # line 3 of the real file holds idx 2
    "duplicated idx": (json.dumps({**ROW, "idx": 2}), "idx 2 is already the idx of line 3"),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_bad_training_row_names_file_line_and_problem(case, tmp_path):
    text, expected = BAD_ROWS[case]
    root, path = small_mirror(tmp_path, text=text)
    with pytest.raises(DataError) as err:
        prepare_data(JobSpec.make(task="sst2", n=10, seed=0), root)
    message = str(err.value)
    assert message.startswith(f"{path}:{BAD_LINE}: ") and expected in message, message
    assert "\n" not in message


def test_a_byte_that_is_not_utf8_is_reported_on_its_physical_line(tmp_path):
    """Blank lines count (an editor shows them), and the bad byte lies well past the first 8 KB,
    where a text-mode reader, decoding ahead, used to report an earlier line."""
    root, path = small_mirror(tmp_path)
    rows = (DATA_DIR / "sst2" / "train.jsonl").read_bytes().splitlines()[:400]
    lines = rows[:10] + [b"", b"  "] + rows[10:]  # two blank lines: lines 11 and 12
    bad = 330
    lines[bad - 1] = lines[bad - 1].replace(b'"label"', b'"lab\xe9l"')  # Latin-1 é, not UTF-8
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert len(b"\n".join(lines[:bad - 1])) > 3 * 8192
    with pytest.raises(DataError) as err:
        prepare_data(JobSpec.make(task="sst2", n=10, seed=0), root)
    assert str(err.value).startswith(f"{path}:{bad}: not UTF-8 text (byte 0xe9 at byte "), err.value


def test_a_repeated_idx_in_an_evaluation_split_is_refused(tmp_path):
    root, path = small_mirror(tmp_path, split="validation", line=700,
                              text=json.dumps({**ROW, "idx": 6}))
    with pytest.raises(DataError, match=rf"^{path}:700: idx 6 is already the idx of line 7$"):
        prepare_data(JobSpec.make(task="sst2", n=10, seed=0), root)


@pytest.mark.parametrize("split", ["validation"])
def test_out_of_range_labels_in_evaluation_splits_are_errors(split, tmp_path):
    root, path = small_mirror(tmp_path, split=split, line=100, text=json.dumps({**ROW, "label": 7}))
    with pytest.raises(DataError, match=rf"{path.name}:100: label 7 is outside"):
        prepare_data(JobSpec.make(task="sst2", n=10, seed=0), root)


def test_regression_labels_may_be_fractional(tmp_path):
    root = tmp_path / "data"
    (root / "stsb").mkdir(parents=True)
    for split in ("train", "validation"):
        lines = (DATA_DIR / "stsb" / f"{split}.jsonl").read_text().splitlines()[:80]
        (root / "stsb" / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    data = prepare_data(JobSpec.make(task="stsb", n=10, seed=0), root)
    assert data.train.labels.dtype.kind == "f" and (data.train.labels % 1 != 0).any()


def test_a_job_on_bad_data_fails_on_its_first_attempt(tmp_path, monkeypatch):
    root, path = small_mirror(tmp_path, text=json.dumps({**ROW, "label": 0.5}))
    monkeypatch.setenv("HARNESS_DATA_DIR", str(root))
    engine = db.open_db(f"sqlite:///{tmp_path / 'r.db'}", create=True)
    queue.enqueue(engine, "smoke", [JobSpec.make(task="sst2", n=10, seed=0, model=SMALL_MODEL,
                                                 epochs=1, max_length=32, val_size=16)])
    w = Worker(engine, WorkerOptions(until_empty=True, runs_dir=tmp_path / "runs", quiet=True))
    w.run()
    with engine.connect() as conn:
        status, attempts, error = conn.exec_driver_sql("select status, attempts, error from jobs").one()
        tries = conn.exec_driver_sql("select count(*) from attempts").scalar_one()
    assert (status, attempts, tries) == ("failed", 1, 1)
    assert f"{path}:{BAD_LINE}" in error and "0.5" in error
