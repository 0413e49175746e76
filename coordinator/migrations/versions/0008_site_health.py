"""What sites report about themselves: health and forecast error, and the actuals their
forecasts are scored on.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _health_columns() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("site_id", AutoString(length=32), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.Column("sent_at", sa.Float(), nullable=False),
        sa.Column("model_version", AutoString(length=64), nullable=True),
        sa.Column("store_bytes", sa.BigInteger(), nullable=False),
        sa.Column("alerts_warning", sa.BigInteger(), nullable=False),
        sa.Column("alerts_critical", sa.BigInteger(), nullable=False),
        sa.Column("last_kpi_at", sa.Float(), nullable=True),
        sa.Column("supernode", AutoString(length=16), nullable=False),
        sa.Column("backlog", sa.BigInteger(), nullable=False),
        sa.Column("rmse", sa.Float(), nullable=True),
        sa.Column("errors", sa.JSON(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "actuals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", AutoString(length=32), nullable=False),
        sa.Column("cell", AutoString(length=64), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site_id", "cell", "step"),
    )
    op.create_index("ix_actuals_site_received", "actuals", ["site_id", "received_at"], unique=False)
    op.create_table("site_health", *_health_columns(), sa.PrimaryKeyConstraint("site_id"))
    op.create_table(
        "site_health_history",
        sa.Column("id", sa.Integer(), nullable=False),
        *_health_columns(),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_site_health_history_site_received",
        "site_health_history",
        ["site_id", "received_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_site_health_history_site_received", table_name="site_health_history")
    op.drop_table("site_health_history")
    op.drop_table("site_health")
    op.drop_index("ix_actuals_site_received", table_name="actuals")
    op.drop_table("actuals")
