"""How much the noise changed what the model sees: its token ids, not the characters.

`noise_sets.changed_share` counts an example as changed when any character of its text changed,
whitespace and case included; an uncased tokenizer sees neither, so a back-translation that only
re-spaced or re-cased a sentence gives the model the very same input. These measures compare each
noisy copy's token ids with its original's, for the tokenizer and max_length of the job that
trained on them, and are stored with the job's metrics (split "train"):

- NOISE_UNCHANGED: the share of examples whose token ids are identical to the original's;
- NOISE_EDIT_RATE: the mean, over examples, of the token edit distance (Levenshtein over ids,
  special tokens included) divided by the original's length in tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.noise.sets import edit_distance

NOISE_UNCHANGED = "noise_tokens_unchanged_share"
NOISE_EDIT_RATE = "noise_token_edit_rate"
TOKEN_MEASURES = (NOISE_UNCHANGED, NOISE_EDIT_RATE)


def token_change(clean: Sequence[np.ndarray], noisy: Sequence[np.ndarray]) -> dict[str, float]:
    """Compare each noisy copy's token ids with its original's (position i with position i)."""
    if len(clean) != len(noisy):
        raise ValueError(f"{len(clean)} originals but {len(noisy)} noisy copies")
    if not clean:
        return {NOISE_UNCHANGED: float("nan"), NOISE_EDIT_RATE: float("nan")}
    unchanged, rates = 0, []
    for a, b in zip(clean, noisy):
        a, b = np.asarray(a).tolist(), np.asarray(b).tolist()
        unchanged += a == b
        rates.append(0.0 if a == b else edit_distance(a, b) / max(len(a), 1))
    return {NOISE_UNCHANGED: unchanged / len(clean), NOISE_EDIT_RATE: float(np.mean(rates))}
