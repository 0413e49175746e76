"""Decisions indexed by time, not by site.

The decisions table is an append-only log written in group commits of thousands of rows.
An index on the 64-character site id put each commit's rows on as many leaf pages as
there are sites (64 random page writes per commit, growing with the table) and was what
capped the decisions endpoint. An index on the answer time appends at its right edge;
a site's history is read as a time range filtered by site.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index(op.f("ix_decisions_site_id"), table_name="decisions")
    op.create_index(op.f("ix_decisions_at"), "decisions", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_decisions_at"), table_name="decisions")
    op.create_index(op.f("ix_decisions_site_id"), "decisions", ["site_id"], unique=False)
