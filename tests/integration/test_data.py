"""Loading and the few-shot protocol on the real local mirror (HARNESS_DATA_DIR, set by conftest)."""

import csv
from collections import Counter

import numpy as np
import pytest

from harness.protocol.data import check_spec_against_data, load_split, protocol_splits, train_pool_size
from harness.training.inputs import prepare_data
from harness.errors import HarnessError
from harness.protocol.spec import JobSpec
from harness.protocol.tasks import get_task

from paths import DATA_DIR


def counts():
    with open(DATA_DIR / "COUNTS.tsv") as f:
        return [(r["task"], r["split"], int(r["rows"])) for r in csv.DictReader(f, delimiter="\t")]


@pytest.mark.parametrize("task,split,rows", counts())
def test_local_files_have_the_documented_rows(task, split, rows):
    ds = load_split(task, split, DATA_DIR)
    assert len(ds) == rows
    assert "idx" in ds.column_names and "label" in ds.column_names


def test_sst2_split_sizes_and_stratification():
    s = protocol_splits("sst2", 500, DATA_DIR)
    assert (len(s.test), len(s.validation), len(s.pool)) == (436, 436, 67_349)
    assert not set(s.test.idx) & set(s.validation.idx)
    full = Counter(load_split("sst2", "validation", DATA_DIR)["label"])
    for part in (s.test, s.validation):
        c = Counter(part.labels.tolist())
        for label, total in full.items():
            assert abs(c[label] - total / 2) <= 1


def test_validation_is_stratified_when_subsampled():
    s = protocol_splits("mnli", 500, DATA_DIR)
    assert len(s.validation) == 500 and len(s.test) == 4908
    full = Counter(load_split("mnli", "validation_matched", DATA_DIR)["label"])
    share = {k: v / sum(full.values()) for k, v in full.items()}
    c = Counter(s.validation.labels.tolist())
    for label in full:
        assert abs(c[label] / 500 - share[label]) < 0.01


def test_test_and_validation_do_not_depend_on_the_job():
    a = prepare_data(JobSpec.make(task="sst2", n=20, seed=0), DATA_DIR)
    b = prepare_data(JobSpec.make(task="sst2", n=100, seed=5, loss="ce+scl", lam=0.9), DATA_DIR)
    assert np.array_equal(a.test.idx, b.test.idx)
    assert np.array_equal(a.validation.idx, b.validation.idx)


def test_same_seed_same_examples_across_losses():
    base = dict(task="qnli", n=20, seed=3)
    ce = prepare_data(JobSpec.make(loss="ce", **base), DATA_DIR)
    scl = prepare_data(JobSpec.make(loss="ce+scl", lam=0.9, tau=0.1, scl_reduction="sum", **base), DATA_DIR)
    assert np.array_equal(ce.train.idx, scl.train.idx) and len(ce.train) == 20
    other = prepare_data(JobSpec.make(loss="ce", task="qnli", n=20, seed=4), DATA_DIR)
    assert not np.array_equal(ce.train.idx, other.train.idx)
    bigger = prepare_data(JobSpec.make(loss="ce", task="qnli", n=100, seed=3), DATA_DIR)
    assert set(ce.train.idx) <= set(bigger.train.idx)  # N = 20 nests in N = 100


def test_per_class_sampling():
    d = prepare_data(JobSpec.make(task="yelp_polarity", n=40, per_class=20, seed=1), DATA_DIR)
    assert Counter(d.train.labels.tolist()) == {0: 20, 1: 20}
    assert not set(d.train.idx) & (set(d.test.idx) | set(d.validation.idx))


@pytest.mark.parametrize("n,counts", [(20, [7, 7, 6]), (21, [7, 7, 7]), (100, [34, 33, 33])])
def test_stratified_sampling_gives_each_class_an_equal_share(n, counts):
    for seed in range(5):
        spec = JobSpec.make(task="mnli", n=n, seed=seed, sampling="stratified")
        d = prepare_data(spec, DATA_DIR)
        assert len(d.train) == n and d.sampling == "stratified"
        assert sorted(d.class_counts(get_task("mnli")).values(), reverse=True) == counts
        again = prepare_data(JobSpec.make(task="mnli", n=n, seed=seed, sampling="stratified",
                                          loss="ce+scl"), DATA_DIR)
        assert np.array_equal(d.train.idx, again.train.idx)  # CE and CE+SCL: the same examples


def test_uniform_sampling_records_lopsided_class_counts():
    """A uniform N = 20 MNLI sample is often far from 7/7/6; its counts are recorded, not hidden."""
    counts = [prepare_data(JobSpec.make(task="mnli", n=20, seed=s), DATA_DIR).class_counts(get_task("mnli"))
              for s in range(30)]
    assert all(sum(c.values()) == 20 and set(c) == {"0", "1", "2"} for c in counts)
    assert min(min(c.values()) for c in counts) <= 3


def test_stratified_sampling_is_refused_for_regression():
    with pytest.raises(HarnessError, match="stratified"):
        check_spec_against_data(JobSpec.make(task="stsb", n=20, seed=0, sampling="stratified"), DATA_DIR)


@pytest.mark.parametrize("task,test,val,pool", [("mr", 5331, 500, 4831),
                                                 ("yelp_polarity", 500, 200, 300)])
def test_single_split_tasks_are_divided(task, test, val, pool):
    s = protocol_splits(task, 500, DATA_DIR)
    assert (len(s.test), len(s.validation), len(s.pool)) == (test, val, pool)
    assert train_pool_size(task, DATA_DIR) == pool
    ids = [set(x.idx.tolist()) for x in (s.test, s.validation, s.pool)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])


def test_too_large_n_is_refused():
    check_spec_against_data(JobSpec.make(task="rte", n=1000, seed=0), DATA_DIR)
    with pytest.raises(HarnessError, match="larger than"):
        check_spec_against_data(JobSpec.make(task="rte", n=5000, seed=0), DATA_DIR)
    with pytest.raises(HarnessError, match="per class"):
        check_spec_against_data(JobSpec.make(task="yelp_polarity", per_class=500, seed=0), DATA_DIR)
    with pytest.raises(HarnessError, match="regression"):
        check_spec_against_data(JobSpec.make(task="stsb", n=20, seed=0, loss="ce+scl", lam=0.5), DATA_DIR)
    for seed in range(3):  # how fast: python benchmarks/bench_spec_check.py
        check_spec_against_data(JobSpec.make(task="sst2", n=100, seed=seed), DATA_DIR)
    with pytest.raises(HarnessError, match="larger than"):
        prepare_data(JobSpec.make(task="rte", n=5000, seed=0), DATA_DIR)


def test_hub_sizes_are_used_without_a_mirror(monkeypatch):
    monkeypatch.delenv("HARNESS_DATA_DIR", raising=False)
    assert train_pool_size("sst2") == 67_349
    with pytest.raises(HarnessError, match="larger than"):
        check_spec_against_data(JobSpec.make(task="mrpc", n=4000, seed=0))


def test_a_regression_task_is_stratified_by_its_rounded_score():
    """STS-B's 1,500 validation scores take ~140 values: each stratum is a rounded score (0–5), so
    the test half holds half of each (a stratum per raw score would be a shuffle)."""
    s = protocol_splits("stsb", 500, DATA_DIR)
    full = Counter(np.rint(load_split("stsb", "validation", DATA_DIR)["label"]).astype(int).tolist())
    c = Counter(np.rint(s.test.labels).astype(int).tolist())
    assert len(full) == 6 and all(abs(c[k] - v / 2) <= 1 for k, v in full.items())
    assert s.source == str(DATA_DIR.resolve())


def test_the_division_is_the_same_in_every_process():
    """The split comes from the fixed PROTOCOL_SEED, never from fresh entropy: made again with the
    cache cleared (as a new process would), the rows are the same."""
    from harness.protocol import data

    first = protocol_splits("rte", 500, DATA_DIR)
    data._protocol_splits.cache_clear()
    again = protocol_splits("rte", 500, DATA_DIR)
    assert first is not again
    for a, b in ((first.test, again.test), (first.validation, again.validation), (first.pool, again.pool)):
        assert np.array_equal(a.idx, b.idx)


def test_the_pool_size_reads_the_folder_it_is_given(tmp_path):
    lines = (DATA_DIR / "mr" / "train.jsonl").read_text().splitlines()[:200]
    (tmp_path / "mr").mkdir()
    (tmp_path / "mr" / "train.jsonl").write_text("\n".join(lines) + "\n")
    assert train_pool_size("mr", tmp_path) == 200 - 100 - 40  # test half, then a fifth for validation
    assert train_pool_size("mr", DATA_DIR) == 4831
