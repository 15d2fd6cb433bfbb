"""Schema version 1: the queue (jobs, runs), results, metrics, per-example predictions,
embeddings and training examples.

Revision ID: 0001
Revises: (none)
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

NOW = sa.func.current_timestamp()


def upgrade() -> None:
    op.create_table(
        "harness_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("grid", sa.String(64), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("n", sa.Integer),
        sa.Column("noise", sa.Float, nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("loss", sa.String(16), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="queued"),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("depends_on", sa.String(32)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default="3"),
        sa.Column("seq", sa.Integer, nullable=False, server_default="0"),
        sa.Column("run_id", sa.Integer),
        sa.Column("worker", sa.String(128)),
        sa.Column("lease_expires", sa.Float),
        sa.Column("progress", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.DateTime, server_default=NOW),
        sa.Column("updated_at", sa.DateTime, server_default=NOW),
    )
    op.create_index("ix_jobs_claim", "jobs", ["status", "priority", "seq"])
    op.create_index("ix_jobs_grid", "jobs", ["grid", "status"])
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(128), nullable=False),
        sa.Column("host", sa.String(128)),
        sa.Column("pid", sa.Integer),
        sa.Column("device", sa.String(128)),
        sa.Column("versions", sa.Text),
        sa.Column("git_rev", sa.String(64)),
        sa.Column("config", sa.Text),
        sa.Column("started_at", sa.DateTime, server_default=NOW),
        sa.Column("ended_at", sa.DateTime),
        sa.Column("outcome", sa.String(16), nullable=False, server_default="running"),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_runs_job_id", "runs", ["job_id"])
    op.create_table(
        "metrics",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("split", sa.String(16), nullable=False),
        sa.Column("epoch", sa.Integer),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Float),
    )
    op.create_index("ix_metrics_job_id", "metrics", ["job_id"])
    op.create_index("ix_metrics_run_id", "metrics", ["run_id"])
    op.create_table(
        "results",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("grid", sa.String(64), nullable=False),
        sa.Column("task", sa.String(64), nullable=False),
        sa.Column("n", sa.Integer),
        sa.Column("noise", sa.Float, nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("loss", sa.String(16), nullable=False),
        sa.Column("lam", sa.Float, nullable=False),
        sa.Column("tau", sa.Float),
        sa.Column("scl_reduction", sa.String(8)),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("batch_size", sa.Integer, nullable=False),
        sa.Column("lr", sa.Float, nullable=False),
        sa.Column("epochs", sa.Integer, nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("val_score", sa.Float),
        sa.Column("test_score", sa.Float),
        sa.Column("val_accuracy", sa.Float),
        sa.Column("test_accuracy", sa.Float),
        sa.Column("best_epoch", sa.Integer),
        sa.Column("n_train", sa.Integer),
        sa.Column("n_test", sa.Integer),
        sa.Column("train_seconds", sa.Float),
        sa.Column("wall_seconds", sa.Float),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("finished_at", sa.DateTime, server_default=NOW),
    )
    op.create_table(
        "predictions",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("example", sa.Integer, nullable=False),
        sa.Column("label", sa.Float, nullable=False),
        sa.Column("prediction", sa.Float, nullable=False),
    )
    op.create_index("ix_predictions_job_id", "predictions", ["job_id"])
    op.create_table(
        "embeddings",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("split", sa.String(16), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("examples", sa.Text, nullable=False),
        sa.Column("labels", sa.Text, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "train_examples",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id"), primary_key=True),
        sa.Column("examples", sa.Text, nullable=False),
    )
    op.execute(sa.text("INSERT INTO harness_meta (key, value) VALUES ('schema_version', '1')"))


def downgrade() -> None:
    raise NotImplementedError("the harness does not downgrade a database: restore a copy instead")
