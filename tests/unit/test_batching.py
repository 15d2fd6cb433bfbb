"""Training batch composition (JobSpec.batching): which examples share a batch, epoch to epoch;
and the token-budget batches of evaluation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from harness.training.batching import token_budget_batches, train_batches

N, B, SEED = 100, 16, 7
LENGTHS = np.random.default_rng(0).integers(5, 60, N)


def batch_sets(mode: str, epoch: int, seed: int = SEED, lengths=LENGTHS) -> list[frozenset]:
    return [frozenset(b.tolist()) for b in train_batches(lengths, B, mode, seed, epoch)]


def pairs(batches: list[frozenset]) -> set[tuple[int, int]]:
    return {p for b in batches for p in itertools.combinations(sorted(b), 2)}


def shared_pair_share(mode: str) -> float:
    """Share of the pairs that share a batch in epoch 1 and still share one in epoch 2."""
    a, b = pairs(batch_sets(mode, 1)), pairs(batch_sets(mode, 2))
    return len(a & b) / len(a)


@pytest.mark.parametrize("mode", ["fixed", "reshuffle", "length"])
def test_every_epoch_covers_every_example_once(mode):
    for epoch in (1, 2, 3):
        flat = np.concatenate(train_batches(LENGTHS, B, mode, SEED, epoch))
        assert sorted(flat.tolist()) == list(range(N))
        assert all(len(b) <= B for b in train_batches(LENGTHS, B, mode, SEED, epoch))


def test_fixed_gives_the_same_batch_sets_every_epoch_in_a_new_order():
    epochs = [batch_sets("fixed", e) for e in range(1, 6)]
    assert all(set(e) == set(epochs[0]) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1  # the order of the batches changes
    assert shared_pair_share("fixed") == 1.0


def test_fixed_batches_are_not_grouped_by_length():
    """fairseq cuts one random permutation: a batch's members do not correlate with length."""
    spread = [np.ptp(LENGTHS[list(b)]) for b in batch_sets("fixed", 1)]
    grouped = [np.ptp(LENGTHS[list(b)]) for b in batch_sets("length", 1)]
    assert np.mean(spread) > 3 * np.mean(grouped)


def test_reshuffle_forms_new_batches_every_epoch():
    assert set(batch_sets("reshuffle", 1)) != set(batch_sets("reshuffle", 2))
    assert shared_pair_share("reshuffle") < 0.35  # chance level is about (B - 1) / (N - 1)


def test_length_groups_similar_lengths():
    grouped = np.mean([np.ptp(LENGTHS[list(b)]) for b in batch_sets("length", 1)])
    shuffled = np.mean([np.ptp(LENGTHS[list(b)]) for b in batch_sets("reshuffle", 1)])
    assert grouped < shuffled / 3


@pytest.mark.parametrize("mode", ["fixed", "reshuffle", "length"])
def test_batches_depend_on_seed_and_epoch_only(mode):
    """The CE and the CE+SCL job of one seed call this with the same arguments: same batches."""
    assert batch_sets(mode, 2) == batch_sets(mode, 2)
    assert batch_sets(mode, 2, seed=SEED + 1) != batch_sets(mode, 2)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError):
        train_batches(LENGTHS, B, "sorted", SEED, 1)


def test_token_budget_batches():
    lengths = np.array([5, 50, 20, 50, 7, 128, 3])
    batches = token_budget_batches(lengths, max_tokens=100, max_rows=3)
    assert sorted(np.concatenate(batches).tolist()) == list(range(7))  # every row once
    flat = np.concatenate(batches)
    assert list(lengths[flat]) == sorted(lengths, reverse=True)  # longest first
    for b in batches:
        assert len(b) <= 3 and (len(b) == 1 or len(b) * lengths[b].max() <= 100)
    assert [len(b) for b in batches] == [1, 2, 3, 1]  # 128 alone (over budget), 50+50, 20/7/5, 3


def test_an_unknown_mode_is_named():
    with pytest.raises(ValueError, match="unknown batching 'sorted'"):
        train_batches(LENGTHS, B, "sorted", SEED, 1)


@pytest.mark.parametrize("n", [1000, 1001])
def test_length_grouping_is_the_documented_procedure(n):
    """Shuffle; cut the shuffled order into ceil(n / window) near-equal windows, window = batch
    size × MEGA_BATCHES; sort each by length, longest first, ties in shuffled order; cut the whole
    into batches; shuffle the batches. All from the one generator, so a seed's batches are the
    same on every run (they decide the results). Batches of 4: windows of 200."""
    from harness.training.batching import MEGA_BATCHES, length_grouped_batches

    lengths = np.random.default_rng(1).integers(5, 12, n)  # many ties
    got = length_grouped_batches(lengths, 4, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    shuffled = list(rng.permutation(n))
    windows = -(-n // (4 * MEGA_BATCHES))
    sizes = [n // windows + (1 if i < n % windows else 0) for i in range(windows)]
    ordered, start = [], 0
    for size in sizes:
        members = shuffled[start:start + size]
        ordered += sorted(members, key=lambda p: (-lengths[p], members.index(p)))
        start += size
    cut = [ordered[i:i + 4] for i in range(0, n, 4)]
    expected = [cut[i] for i in rng.permutation(len(cut))]
    assert [b.tolist() for b in got] == expected
    ungrouped = length_grouped_batches(lengths, 4, np.random.default_rng(3), group=False)
    assert [b.tolist() for b in ungrouped[:3]] != expected[:3]


def test_eval_batches_are_length_sorted_slices():
    from harness.training.batching import eval_batches

    lengths = np.array([5, 50, 20, 50, 7, 128, 3])
    assert [b.tolist() for b in eval_batches(lengths, 3)] == [[5, 1, 3], [2, 4, 0], [6]]
    assert [b.tolist() for b in eval_batches(lengths, 10)] == [[5, 1, 3, 2, 4, 0, 6]]


def test_token_budget_batches_that_end_exactly_at_the_last_row():
    lengths = np.array([10, 10, 10, 10])
    assert [b.tolist() for b in token_budget_batches(lengths, max_tokens=20, max_rows=8)] == [[0, 1], [2, 3]]
    ones = np.array([1, 1, 1])  # one token each: the budget of 2 holds two rows
    assert [len(b) for b in token_budget_batches(ones, max_tokens=2, max_rows=8)] == [2, 1]
