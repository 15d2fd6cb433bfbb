"""Schema version 4: tuning_choices (the hyper-parameters chosen on validation) and
test_predictions (each job's test predictions packed in one row).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from harness.store.migrations import record_version

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tuning_choices",
        sa.Column("task", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(256), primary_key=True),
        sa.Column("lr", sa.Float, nullable=False),
        sa.Column("lam", sa.Float, nullable=False),
        sa.Column("tau", sa.Float, nullable=False),
        sa.Column("warmup_ratio", sa.Float, nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("ce_val_score", sa.Float, nullable=False),
        sa.Column("scl_val_score", sa.Float, nullable=False),
        sa.Column("n", sa.Integer),
        sa.Column("seeds", sa.Text, nullable=False),
        sa.Column("rule", sa.Text, nullable=False),
        sa.Column("candidates", sa.Text, nullable=False),
        sa.Column("base", sa.Text, nullable=False),
        sa.Column("chosen_at", sa.DateTime, server_default=sa.func.current_timestamp()),
    )
    op.create_table(
        "test_predictions",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("encoding", sa.String(32), nullable=False),
        sa.Column("examples", sa.LargeBinary, nullable=False),
        sa.Column("labels", sa.LargeBinary, nullable=False),
        sa.Column("predictions", sa.LargeBinary, nullable=False),
    )
    record_version(4)


def downgrade() -> None:
    raise NotImplementedError("the harness does not downgrade a database: restore a copy instead")
