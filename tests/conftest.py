"""Shared fixtures: the real data and models in ../shared, and real databases (SQLite files and
the PostgreSQL server on 127.0.0.1:5432)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA_DIR = SHARED / "data"
MODEL_DIR = SHARED / "models"
SMALL_MODEL_PATH = MODEL_DIR / "paraphrase-MiniLM-L3-v2"
PG_ADMIN_URL = os.environ.get("HARNESS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(autouse=True, scope="session")
def _offline_mirrors():
    """Every test reads data and models from ../shared, as the README's commands do."""
    os.environ.setdefault("HARNESS_DATA_DIR", str(DATA_DIR))
    os.environ.setdefault("HARNESS_MODEL_DIR", str(MODEL_DIR))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    yield


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'results.db'}"


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database on the local server, dropped afterwards. The server must run:
    CI starts it, and a missing server fails the test loudly rather than skipping it."""
    name = f"harness_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """Both backends through the same test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'results.db'}"
    else:
        yield request.getfixturevalue("pg_url")
