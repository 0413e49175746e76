"""Forecasts keep one index: the natural key's.

``ix_forecasts_site_id`` repeated the first column of the unique ``(site_id, cell, step,
made_step)`` index, which already serves every lookup by site. Each ingested forecast
row updated both, and the second cost about a quarter of a batch's write.

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_forecasts_site_id", table_name="forecasts")


def downgrade() -> None:
    op.create_index("ix_forecasts_site_id", "forecasts", ["site_id"], unique=False)
