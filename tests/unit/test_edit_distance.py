"""The edit distance that measures how much back-translation changed a noisy set's texts."""

from __future__ import annotations

from harness.noise import sets


def test_edit_distance_by_hand():
    assert sets.edit_distance("kitten", "sitting") == 3
    assert sets.edit_distance("", "abc") == 3
    assert sets.edit_distance("same", "same") == 0
