"""Schema version 3: how each job's batches and training sample were made
(results.batching, results.sampling, results.class_counts).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from harness.store.migrations import record_version

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("results", sa.Column("batching", sa.String(16)))
    op.add_column("results", sa.Column("sampling", sa.String(16)))
    op.add_column("results", sa.Column("class_counts", sa.Text))
    record_version(3)


def downgrade() -> None:
    raise NotImplementedError("the harness does not downgrade a database: restore a copy instead")
