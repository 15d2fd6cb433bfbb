"""How much the noise changed the token ids: identical copies, substitutions, insertions and
deletions, rates per original token, and the inputs it refuses."""

import math

import numpy as np
import pytest

from harness.noise.tokens import NOISE_EDIT_RATE, NOISE_UNCHANGED, token_change


def ids(*xs):
    return np.asarray(xs, dtype=np.int32)


def test_identical_copies_are_unchanged():
    out = token_change([ids(101, 7, 8, 102), ids(101, 9, 102)], [ids(101, 7, 8, 102), ids(101, 9, 102)])
    assert out == {NOISE_UNCHANGED: 1.0, NOISE_EDIT_RATE: 0.0}


def test_edits_are_counted_per_original_token_and_averaged_over_examples():
    clean = [ids(101, 7, 8, 102),        # one substitution in 4 tokens: 0.25
             ids(101, 9, 102),           # one insertion over 3 tokens: 1/3
             ids(101, 5, 6, 7, 102),     # two deletions over 5 tokens: 0.4
             ids(101, 4, 102)]           # unchanged
    noisy = [ids(101, 7, 3, 102), ids(101, 9, 9, 102), ids(101, 5, 102), ids(101, 4, 102)]
    out = token_change(clean, noisy)
    assert out[NOISE_UNCHANGED] == 0.25
    assert out[NOISE_EDIT_RATE] == pytest.approx((0.25 + 1 / 3 + 0.4 + 0) / 4)


def test_a_reordering_costs_substitutions_not_nothing():
    out = token_change([ids(1, 2, 3, 4)], [ids(1, 3, 2, 4)])
    assert out == {NOISE_UNCHANGED: 0.0, NOISE_EDIT_RATE: 0.5}


def test_lists_of_different_lengths_are_refused_and_nothing_is_nan():
    with pytest.raises(ValueError, match="2 originals but 1 noisy copies"):
        token_change([ids(1), ids(2)], [ids(1)])
    out = token_change([], [])
    assert math.isnan(out[NOISE_UNCHANGED]) and math.isnan(out[NOISE_EDIT_RATE])
