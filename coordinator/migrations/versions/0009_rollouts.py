"""Staged model rollouts: one row per promotion, one per site it reaches.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_STATE = sa.Enum("CANARY", "FLEET", "COMPLETED", "ROLLED_BACK", "SUPERSEDED", name="rolloutstate")
_ROLE = sa.Enum("CANARY", "REST", name="rolloutrole")
_VERDICT = sa.Enum("ACCEPTED", "REJECTED", name="rolloutverdict")


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("previous_model_id", sa.Integer(), nullable=True),
        sa.Column("state", _STATE, nullable=False),
        sa.Column("canary_share", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("reason", AutoString(length=500), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["model_versions.id"]),
        sa.ForeignKeyConstraint(["previous_model_id"], ["model_versions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "rollout_sites",
        sa.Column("rollout_id", sa.Integer(), nullable=False),
        sa.Column("site_id", AutoString(length=32), nullable=False),
        sa.Column("role", _ROLE, nullable=False),
        sa.Column("assigned_at", sa.Float(), nullable=True),
        sa.Column("delivered_at", sa.Float(), nullable=True),
        sa.Column("verdict", _VERDICT, nullable=True),
        sa.Column("verdict_at", sa.Float(), nullable=True),
        sa.Column("reason", AutoString(length=500), nullable=True),
        sa.Column("candidate_score", sa.Float(), nullable=True),
        sa.Column("serving_score", sa.Float(), nullable=True),
        sa.Column("windows", sa.Integer(), nullable=True),
        sa.Column("error_before", sa.Float(), nullable=True),
        sa.Column("error_after", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["rollout_id"], ["rollouts.id"]),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"]),
        sa.PrimaryKeyConstraint("rollout_id", "site_id"),
    )


def downgrade() -> None:
    op.drop_table("rollout_sites")
    op.drop_table("rollouts")
    bind = op.get_bind()
    for enum in (_VERDICT, _ROLE, _STATE):
        enum.drop(bind, checkfirst=True)
