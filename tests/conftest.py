"""Fixtures shared by every layer (unit/, integration/, e2e/): the real data and models in ../shared,
and real databases (SQLite files and the PostgreSQL server on 127.0.0.1:5432). A test that uses
the server carries the `postgres` marker, so that `-m "not postgres"` runs without it."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from paths import DATA_DIR, MODEL_DIR, PG_ADMIN_URL


LAYERS = ("unit", "integration", "e2e")  # fastest first


def pytest_collection_modifyitems(items):
    """Under mutation testing (scripts/mutation.py: mutmut sets MUTANT_UNDER_TEST and stops at the
    first failure) a mutant's tests run fastest layer first, so a unit test that kills it ends
    the run before a model is loaded."""
    if os.environ.get("MUTANT_UNDER_TEST"):
        layer = {name: i for i, name in enumerate(LAYERS)}
        items.sort(key=lambda item: layer.get(item.path.parent.name, len(LAYERS)))


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
def pg_url(request):
    """A fresh PostgreSQL database on the local server, dropped afterwards. The server must run:
    CI starts it, and a missing server fails the test loudly rather than skipping it."""
    if request.node.get_closest_marker("postgres") is None:
        pytest.fail(f"{request.node.nodeid} uses PostgreSQL without the postgres marker: mark the test, "
                    "or its parameter (pytest.param(..., marks=pytest.mark.postgres))", pytrace=False)
    name = f"harness_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    """Both backends through the same test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'results.db'}"
    else:
        yield request.getfixturevalue("pg_url")
