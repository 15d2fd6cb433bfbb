"""The few-shot protocol's draws (harness.protocol.data) on pools built in memory: the stratified
order behind every test / validation split, and the training sample of a seed. On the real
mirror: tests/integration/test_data.py."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.protocol.data import Examples, _stratified_order, sample_train
from harness.protocol.tasks import get_task


def pool(labels: list[int], split: str = "train") -> Examples:
    n = len(labels)
    return Examples(split, np.arange(n) + 1000, np.arange(n) * 7, np.asarray(labels, dtype=np.int64),
                    tuple((f"text {i}",) for i in range(n)))


def test_the_stratified_order_is_the_documented_draw():
    """Each row's key is (its rank in a shuffle of its class + a uniform offset) / the class's
    size, classes in label order, one generator: sorting by key interleaves the classes in
    proportion. The order fixes every task's test and validation rows, so it is pinned to the
    procedure, draw for draw."""
    strata = np.array([2, 0, 1, 0, 0, 2, 1, 0, 0, 1, 0, 2])
    got = _stratified_order(strata, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    keys = np.empty(len(strata))
    for value in (0, 1, 2):
        members = np.flatnonzero(strata == value)
        ranks = rng.permutation(len(members))
        keys[members] = (ranks + rng.random(len(members))) / len(members)
    assert got.tolist() == np.argsort(keys, kind="stable").tolist()


def test_every_prefix_of_the_stratified_order_keeps_the_label_shares():
    strata = np.repeat([0, 1, 2], [600, 300, 100])
    order = _stratified_order(strata, np.random.default_rng(0))
    for k in (10, 100, 437, 1000):
        c = Counter(strata[order[:k]].tolist())
        for label, share in ((0, 0.6), (1, 0.3), (2, 0.1)):
            assert abs(c[label] - share * k) <= 1


def test_take_keeps_rows_ids_labels_and_texts_together():
    p = pool([0, 1, 1, 0, 1], split="validation")
    t = p.take([3, 1])
    assert t.split == "validation"
    assert (t.rows.tolist(), t.idx.tolist(), t.labels.tolist()) == ([1003, 1001], [21, 7], [0, 1])
    assert t.texts == (("text 3",), ("text 1",)) and t.rows.dtype == np.int64
    assert len(p.take([])) == 0  # an empty selection of positions is still one of positions


def test_a_sample_as_large_as_the_pool_is_the_pool():
    p = pool([0, 1] * 10)
    assert sorted(sample_train(p, 20, seed=3).rows.tolist()) == p.rows.tolist()
    with pytest.raises(HarnessError, match=r"^N = 21 is larger than the training pool \(20 examples\)$"):
        sample_train(p, 21, seed=3)
    assert sample_train(p, None, seed=3) is p


def test_a_uniform_sample_is_the_seeds_permutation_cut_and_nests():
    p = pool([0, 1] * 50)
    small, big = sample_train(p, 20, seed=4), sample_train(p, 60, seed=4)
    assert set(small.rows) <= set(big.rows) and small.rows.tolist() == sorted(small.rows.tolist())
    assert sample_train(p, 20, seed=5).rows.tolist() != small.rows.tolist()


def test_per_class_samples_need_no_task_for_class_labels():
    p = pool([0] * 30 + [1] * 30 + [2] * 30)
    s = sample_train(p, None, seed=2, per_class=4)
    assert Counter(s.labels.tolist()) == {0: 4, 1: 4, 2: 4}
    assert Counter(sample_train(p, 7, seed=2, task=get_task("mnli"), sampling="stratified").labels.tolist()) \
        in ({0: 3, 1: 2, 2: 2}, {0: 2, 1: 3, 2: 2}, {0: 2, 1: 2, 2: 3})


def test_a_class_too_small_for_its_share_is_named():
    p = pool([0] * 30 + [1] * 3)
    with pytest.raises(HarnessError, match="^class 1 has 3 training examples, fewer than the 5 a stratified sample needs$"):
        sample_train(p, None, seed=0, per_class=5)
