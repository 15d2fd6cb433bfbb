"""Schema version 6: jobs with a budget in optimizer steps (protocol v2). `results.steps` (the
budget) and `results.best_step` (the step whose weights were selected); `metrics.step` (the step
after which a step-budget job validated). Null for every job of the epoch protocol.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from harness.store.migrations import record_version

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("results", sa.Column("steps", sa.Integer))
    op.add_column("results", sa.Column("best_step", sa.Integer))
    op.add_column("metrics", sa.Column("step", sa.Integer))
    record_version(6)
