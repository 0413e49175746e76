"""Federation runs the coordinator starts on a SuperLink.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_STATUS = sa.Enum("STARTING", "RUNNING", "COMPLETED", "FAILED", "INTERRUPTED", name="runstatus")


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("num_rounds", sa.Integer(), nullable=False),
        sa.Column("strategy", AutoString(length=32), nullable=False),
        sa.Column("codec", AutoString(length=64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("id", AutoString(length=32), nullable=False),
        sa.Column("status", _STATUS, nullable=False),
        sa.Column("flwr_run_id", AutoString(length=32), nullable=True),
        sa.Column("token_hash", AutoString(length=64), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("rerun_of", AutoString(length=32), nullable=True),
        sa.Column("detail", AutoString(length=500), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", AutoString(length=64), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["model_version_id"], ["model_versions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("runs")
    _STATUS.drop(op.get_bind(), checkfirst=True)
