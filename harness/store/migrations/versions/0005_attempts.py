"""Schema version 5: one attempt of a job is an attempt. The `runs` table becomes `attempts`, and
every `run_id` column (jobs, metrics, results, predictions, test_predictions, embeddings,
artifacts) becomes `attempt_id`; indexes and constraints named after the old names follow.

Renames only: no row is copied or changed. On SQLite, ALTER TABLE … RENAME (3.25 and later) also
rewrites the foreign keys and indexes that name the table or column, so no table is rebuilt (a
batch copy of `jobs`, which every table references, would fail its foreign keys). SQLite cannot
rename an index: those are made again under the new name.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from harness.store.migrations import record_version

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# The tables of schema version 4 that have a run_id column.
RUN_ID_TABLES = ("jobs", "metrics", "results", "predictions", "test_predictions", "embeddings",
                 "artifacts")
# Indexes: old name -> (new name, table, columns), as schema version 5 has them.
INDEXES = {
    "ix_runs_job_id": ("ix_attempts_job_id", "attempts", ["job_id"]),
    "ix_metrics_run_id": ("ix_metrics_attempt_id", "metrics", ["attempt_id"]),
}
# PostgreSQL names constraints and the id sequence after the table and column that made them:
# table -> {old name: new name}, as a new database at version 5 names them.
PG_CONSTRAINTS = {
    "attempts": {"runs_pkey": "attempts_pkey", "runs_job_id_fkey": "attempts_job_id_fkey"},
    "metrics": {"metrics_run_id_fkey": "metrics_attempt_id_fkey"},
    "results": {"results_run_id_fkey": "results_attempt_id_fkey"},
    "artifacts": {"artifacts_run_id_fkey": "artifacts_attempt_id_fkey"},
}
PG_SEQUENCE = ("runs_id_seq", "attempts_id_seq")


def upgrade() -> None:
    op.rename_table("runs", "attempts")
    for table in RUN_ID_TABLES:
        op.alter_column(table, "run_id", new_column_name="attempt_id")
    postgresql = op.get_bind().dialect.name == "postgresql"
    for old, (new, table, columns) in INDEXES.items():
        if postgresql:
            op.execute(sa.text(f"ALTER INDEX {old} RENAME TO {new}"))
        else:
            op.drop_index(old, table_name=table)
            op.create_index(new, table, columns)
    if postgresql:
        _rename_postgresql_constraints()
    record_version(5)


def _rename_postgresql_constraints() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, names in PG_CONSTRAINTS.items():
        present = {fk["name"] for fk in inspector.get_foreign_keys(table)}
        present.add(inspector.get_pk_constraint(table)["name"])
        for old, new in names.items():
            if old in present:  # a database whose constraints were named otherwise keeps its names
                op.execute(sa.text(f"ALTER TABLE {table} RENAME CONSTRAINT {old} TO {new}"))
    op.execute(sa.text(f"ALTER SEQUENCE IF EXISTS {PG_SEQUENCE[0]} RENAME TO {PG_SEQUENCE[1]}"))


def downgrade() -> None:
    raise NotImplementedError("the harness does not downgrade a database: restore a copy instead")
