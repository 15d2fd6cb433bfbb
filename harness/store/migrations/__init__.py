"""Schema migrations with Alembic: the revisions in versions/, and how a database's revision is
read, recognised when the database predates Alembic, and brought up to a revision.

Alembic is configured here, in code (no alembic.ini): env.py runs the revisions on the connection
handed to it, inside the caller's transaction, so an upgrade is all or nothing on both databases.

Revision ids are the old schema versions, zero-padded ("0004" is version 4), and every revision
also records its number in harness_meta.schema_version: a harness from before Alembic, which
reads only that row, then still refuses a database newer than itself. A database it made has
harness_meta but no alembic_version table; it counts as the revision of its schema version.

To change the schema: add versions/NNNN_what.py with down_revision the current head, change the
tables in harness/store/db.py to match (tests/integration/test_migrations.py compares the two), and call
record_version(NNNN) at the end of its upgrade().
"""

from __future__ import annotations

import functools
from pathlib import Path

import sqlalchemy as sa
from alembic import command, op
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

HERE = Path(__file__).resolve().parent
META_TABLE = "harness_meta"  # key "schema_version": the number of the revision (see above)


@functools.cache
def scripts() -> ScriptDirectory:
    return ScriptDirectory(str(HERE))


def head() -> str:
    return scripts().get_current_head()


def known(revision: str | None) -> bool:
    """Whether this code has the revision (a newer harness's revision is unknown here)."""
    return revision is not None and any(s.revision == revision for s in scripts().walk_revisions())


def schema_version(conn) -> int | None:
    """harness_meta's schema_version; None where there is none (an empty or foreign database)."""
    if not sa.inspect(conn).has_table(META_TABLE):
        return None
    value = conn.execute(sa.text(f"SELECT value FROM {META_TABLE} WHERE key = 'schema_version'")).scalar()
    return None if value is None else int(value)


def revision(conn) -> str | None:
    """The database's revision: alembic_version's, else the one of its schema version (a database
    made before Alembic), else None (empty, or not the harness's)."""
    current = MigrationContext.configure(conn).get_current_revision()
    if current is not None:
        return current
    version = schema_version(conn)
    return None if version is None else _revision_id(version)


def upgrade(conn, target: str = "head") -> None:
    """Run the revisions up to `target` on `conn`, in its open transaction. A database made before
    Alembic is first stamped with the revision of its schema version."""
    config = _config(conn)
    legacy = MigrationContext.configure(conn).get_current_revision() is None
    if legacy and schema_version(conn) is not None:
        command.stamp(config, revision(conn))
    command.upgrade(config, target)


def record_version(number: int) -> None:
    """For a revision's upgrade(): keep harness_meta.schema_version in step with it."""
    op.execute(sa.text(f"UPDATE {META_TABLE} SET value = '{number}' WHERE key = 'schema_version'"))


def _revision_id(version: int) -> str:
    return f"{version:04d}"


def _config(conn) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE).replace("%", "%%"))  # ini interpolation
    config.attributes["connection"] = conn
    return config
