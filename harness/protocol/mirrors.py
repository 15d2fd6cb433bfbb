"""Where the local mirrors of data and models are: $HARNESS_DATA_DIR / $HARNESS_MODEL_DIR, else the
`shared/data` and `shared/models` folders beside the clone (`../shared`), else none (the Hub).

The fallback lets every command of the README work from a fresh shell in a clone that sits beside
`shared/`, without exporting anything. `HARNESS_DATA_DIR=hub` (or `HARNESS_MODEL_DIR=hub`) turns a
mirror off and reads from the Hugging Face Hub.
"""

from __future__ import annotations

import os
from pathlib import Path

HUB = "hub"
CLONE = Path(__file__).resolve().parents[2]  # the repository root (harness/protocol/ is two below)
BESIDE_CLONE = {"HARNESS_DATA_DIR": CLONE.parent / "shared" / "data",
                "HARNESS_MODEL_DIR": CLONE.parent / "shared" / "models"}


def mirror(env: str) -> str | None:
    """The folder named by `env`, else the one beside the clone if it exists; None: the Hub."""
    value = os.environ.get(env)
    if value:
        return None if value.lower() == HUB else value
    fallback = BESIDE_CLONE[env]
    return str(fallback) if fallback.is_dir() else None
