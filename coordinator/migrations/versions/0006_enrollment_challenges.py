"""Pending enrollments in the database.

The challenge between ``begin`` and ``complete`` was held in one process's memory: with
several workers the ``complete`` that reached another worker found nothing pending, and
a restart lost every enrollment under way. The row also counts wrong proofs for all
workers together. Tokens are spent at ``complete``, so no row is needed for that.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "enrollment_challenges",
        sa.Column("site_id", AutoString(length=32), nullable=False),
        sa.Column("public_keys", sa.LargeBinary(), nullable=False),
        sa.Column("token_hash", AutoString(length=64), nullable=False),
        sa.Column("challenge", sa.LargeBinary(), nullable=False),
        sa.Column("proof_hash", AutoString(length=64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["token_hash"], ["enrollment_tokens.token_hash"]),
        sa.PrimaryKeyConstraint("site_id"),
    )
    op.create_index(
        op.f("ix_enrollment_challenges_expires_at"),
        "enrollment_challenges",
        ["expires_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_enrollment_challenges_expires_at"), table_name="enrollment_challenges")
    op.drop_table("enrollment_challenges")
