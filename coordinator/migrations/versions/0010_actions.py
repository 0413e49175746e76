"""Live decisions: the cluster topology and the signed actions sent to sites.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "actions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", AutoString(length=32), nullable=False),
        sa.Column("kind", AutoString(length=16), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("decided_at", sa.Float(), nullable=False),
        sa.Column("valid_until", sa.Float(), nullable=False),
        sa.Column("policy_version", AutoString(length=64), nullable=False),
        sa.Column("source", AutoString(length=32), nullable=False),
        sa.Column("decision_id", sa.Integer(), nullable=True),
        sa.Column("acked_at", sa.Float(), nullable=True),
        sa.Column("ack_status", AutoString(length=16), nullable=True),
        sa.Column("ack_reason", AutoString(length=500), nullable=True),
        sa.ForeignKeyConstraint(["decision_id"], ["decisions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    # A poll reads one site's actions after an id.
    op.create_index("ix_actions_site_id_id", "actions", ["site_id", "id"], unique=False)
    op.create_table(
        "decision_ticks",
        sa.Column("kind", AutoString(length=16), nullable=False),
        sa.Column("slot", sa.BigInteger(), nullable=False),
        sa.Column("claimed_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "slot"),
    )
    op.create_table(
        "topology",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("clusters", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("updated_by", AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("topology")
    op.drop_table("decision_ticks")
    op.drop_index("ix_actions_site_id_id", table_name="actions")
    op.drop_table("actions")
