"""Schema version 6: protocol v2. Jobs with a budget in optimizer steps: `results.steps` (the
budget) and `results.best_step` (the step whose weights were selected); `metrics.step` (the step
after which a step-budget job validated); null for every job of the epoch protocol. Tuning
choices per tuning grid: `tuning_choices.grid` joins the primary key, so protocol v2's choices
(grid `tune-v2`) stand beside v1's (grid `tune`, which every existing row is).

Revision ID: 0006
Revises: 0005
"""

import warnings

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
    grid = sa.Column("grid", sa.String(64), nullable=False, server_default="tune")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("tuning_choices_pkey", "tuning_choices", type_="primary")
        op.add_column("tuning_choices", grid)
        op.create_primary_key("tuning_choices_pkey", "tuning_choices", ["grid", "task", "model"])
    else:  # SQLite changes a primary key by copying the table
        # SQLAlchemy warns that the copy's key differs from the reflected one: that is the point
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Table '_alembic_tmp_tuning_choices' specifies columns")
            with op.batch_alter_table("tuning_choices", recreate="always") as batch:
                batch.add_column(grid)
                batch.create_primary_key("tuning_choices_pkey", ["grid", "task", "model"])
    record_version(6)
