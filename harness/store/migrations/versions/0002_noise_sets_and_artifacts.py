"""Schema version 2: noise_sets and artifacts tables, results.scl_batch_size, an index on
jobs.depends_on.

These were added to the tables while the schema was still numbered 1, so a version-1 database
may hold some of them already: each is made only where it is missing.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from harness.store.migrations import record_version

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NOW = sa.func.current_timestamp()


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    tables = set(inspector.get_table_names())
    if "noise_sets" not in tables:
        op.create_table(
            "noise_sets",
            sa.Column("key", sa.String(32), primary_key=True),
            sa.Column("task", sa.String(64), nullable=False),
            sa.Column("n", sa.Integer),
            sa.Column("seed", sa.Integer, nullable=False),
            sa.Column("temperature", sa.Float, nullable=False),
            sa.Column("backend", sa.String(64), nullable=False),
            sa.Column("examples", sa.Integer, nullable=False),
            sa.Column("changed_share", sa.Float, nullable=False),
            sa.Column("mean_edit_distance", sa.Float, nullable=False),
            sa.Column("seconds", sa.Float, nullable=False),
            sa.Column("made_by_job", sa.String(32), nullable=False),
            sa.Column("created_at", sa.DateTime, server_default=NOW),
        )
    if "artifacts" not in tables:
        op.create_table(
            "artifacts",
            sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), primary_key=True),
            sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("path", sa.Text, nullable=False),
            sa.Column("sha256", sa.String(64), nullable=False),
            sa.Column("bytes", sa.BigInteger, nullable=False),
            sa.Column("created_at", sa.DateTime, server_default=NOW),
        )
    if "scl_batch_size" not in {c["name"] for c in inspector.get_columns("results")}:
        op.add_column("results", sa.Column("scl_batch_size", sa.Integer))
    if "ix_jobs_depends_on" not in {i["name"] for i in inspector.get_indexes("jobs")}:
        op.create_index("ix_jobs_depends_on", "jobs", ["depends_on"])
    record_version(2)


def downgrade() -> None:
    raise NotImplementedError("the harness does not downgrade a database: restore a copy instead")
