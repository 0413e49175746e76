"""Forecasts reported by sites.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "forecasts",
        sa.Column("cell", AutoString(length=64), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("made_step", sa.BigInteger(), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", AutoString(length=32), nullable=False),
        sa.Column("model_version", AutoString(length=64), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site_id", "cell", "step", "made_step"),
    )
    op.create_index(op.f("ix_forecasts_site_id"), "forecasts", ["site_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_forecasts_site_id"), table_name="forecasts")
    op.drop_table("forecasts")
