"""The retraining policy's state: when runs were started, and why.

``run_starts``: one row per run start (trigger, statistic, the version in production at
the start); ``drift_baselines``: each site's RMSE under a production version, which drift
is measured from; ``retraining_state``: one row, the policy's lease and its last check.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_starts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", AutoString(length=32), nullable=False),
        sa.Column("trigger", AutoString(length=16), nullable=False),
        sa.Column("statistic", sa.Float(), nullable=True),
        sa.Column("sites", sa.Integer(), nullable=True),
        sa.Column("baseline_model_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("actor", AutoString(length=64), nullable=False),
        sa.Column("detail", AutoString(length=500), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id"),
    )
    op.create_index("ix_run_starts_at", "run_starts", ["at"])
    op.create_table(
        "drift_baselines",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("site_id", AutoString(length=32), nullable=False),
        sa.Column("rmse", sa.Float(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["model_versions.id"]),
        sa.PrimaryKeyConstraint("model_id", "site_id"),
    )
    state = op.create_table(
        "retraining_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("holder", AutoString(length=64), nullable=False),
        sa.Column("lease_until", sa.Float(), nullable=False),
        sa.Column("checked_at", sa.Float(), nullable=True),
        sa.Column("statistic", sa.Float(), nullable=True),
        sa.Column("sites", sa.Integer(), nullable=True),
        sa.Column("detail", AutoString(length=500), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(state, [{"id": 1, "holder": "", "lease_until": 0.0, "detail": ""}])


def downgrade() -> None:
    op.drop_table("retraining_state")
    op.drop_table("drift_baselines")
    op.drop_index("ix_run_starts_at", table_name="run_starts")
    op.drop_table("run_starts")
