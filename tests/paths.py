"""Where the tests find the repository, the real data and models in ../shared, and the PostgreSQL
server; a module of its own so that test files of every layer import these names from one place
(tests/ is on sys.path through `pythonpath` in pyproject.toml)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# HARNESS_TEST_SHARED: the mutation run (scripts/mutation.sh) tests a copy of the tree in mutants/,
# one folder further from ../shared.
SHARED = Path(os.environ.get("HARNESS_TEST_SHARED") or REPO.parent / "shared")
DATA_DIR = SHARED / "data"
MODEL_DIR = SHARED / "models"
SMALL_MODEL_PATH = MODEL_DIR / "paraphrase-MiniLM-L3-v2"
PG_ADMIN_URL = os.environ.get("HARNESS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
