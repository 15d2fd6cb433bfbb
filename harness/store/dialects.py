"""The SQL that differs between SQLite and PostgreSQL, as SQLAlchemy constructs: the database clock
and insert-or-ignore. Everything else the harness runs is the same Core statement on both.

(Row locks need nothing here: `Select.with_for_update` renders FOR UPDATE [SKIP LOCKED] on
PostgreSQL, and SQLite, which serialises writers by BEGIN IMMEDIATE (harness.store.db), leaves it out.)
"""

from __future__ import annotations

from functools import cache

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement


class db_now(FunctionElement):
    """The database server's clock, in seconds since the epoch (float).

    Leases are compared on this clock only, so workers whose own clocks disagree still agree on
    which lease has expired. PostgreSQL: clock_timestamp(), which advances within a transaction
    (now() would stand still at the transaction's start)."""

    type = sa.Float()
    name = "db_now"
    inherit_cache = True


@compiles(db_now, "sqlite")
def _sqlite_now(element, compiler, **kw) -> str:
    return "((julianday('now') - 2440587.5) * 86400.0)"


@compiles(db_now, "postgresql")
def _postgresql_now(element, compiler, **kw) -> str:
    return "extract(epoch from clock_timestamp())"


@cache
def insert_ignore(dialect: str, table: sa.Table, key: str):
    """INSERT into `table` that skips rows whose `key` is already there (ON CONFLICT DO NOTHING),
    built once per (dialect, table)."""
    insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
    return insert(table).on_conflict_do_nothing(index_elements=[key])
