"""Initial schema: sites, tokens, rounds, model versions, decisions, API keys, audit log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("name", AutoString(length=64), nullable=False),
        sa.Column("role", sa.Enum("VIEWER", "OPERATOR", "ADMIN", name="role"), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key_hash", AutoString(length=64), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key_hash"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("actor", AutoString(length=64), nullable=False),
        sa.Column("action", AutoString(length=64), nullable=False),
        sa.Column("target", AutoString(length=128), nullable=False),
        sa.Column("outcome", AutoString(length=16), nullable=False),
        sa.Column("detail", AutoString(length=500), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", AutoString(length=64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("policy_version", AutoString(length=64), nullable=False),
        sa.Column("kind", AutoString(length=16), nullable=False),
        sa.Column("action", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_decisions_site_id"), "decisions", ["site_id"], unique=False)
    op.create_table(
        "enrollment_tokens",
        sa.Column("token_hash", AutoString(length=64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", AutoString(length=64), nullable=False),
        sa.Column("used_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_table(
        "model_versions",
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("note", AutoString(length=200), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", AutoString(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("CANDIDATE", "PRODUCTION", "RETIRED", name="modelstatus"),
            nullable=False,
        ),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", AutoString(length=64), nullable=False),
        sa.Column("promoted_by", AutoString(length=64), nullable=True),
        sa.Column("promoted_at", sa.Float(), nullable=True),
        sa.Column("replaced_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["model_versions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sha256"),
    )
    op.create_table(
        "request_nonces",
        sa.Column("site_id", AutoString(length=32), nullable=False),
        sa.Column("nonce", AutoString(length=64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("site_id", "nonce"),
    )
    op.create_index(
        op.f("ix_request_nonces_expires_at"), "request_nonces", ["expires_at"], unique=False
    )
    op.create_table(
        "rounds",
        sa.Column("run_id", AutoString(length=64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("strategy", AutoString(length=32), nullable=False),
        sa.Column("codec", AutoString(length=32), nullable=False),
        sa.Column("participants", sa.Integer(), nullable=False),
        sa.Column("bytes_up", sa.Integer(), nullable=False),
        sa.Column("bytes_down", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("RUNNING", "COMPLETED", "INTERRUPTED", name="roundstatus"),
            nullable=False,
        ),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "number"),
    )
    op.create_index(op.f("ix_rounds_run_id"), "rounds", ["run_id"], unique=False)
    op.create_table(
        "sites",
        sa.Column("archetype", AutoString(length=64), nullable=True),
        sa.Column("region", AutoString(length=64), nullable=True),
        sa.Column("id", AutoString(length=32), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("public_keys", sa.LargeBinary(), nullable=False),
        sa.Column("previous_keys", sa.LargeBinary(), nullable=True),
        sa.Column("previous_until", sa.Float(), nullable=False),
        sa.Column("status", sa.Enum("ACTIVE", "REVOKED", name="sitestate"), nullable=False),
        sa.Column("enrolled_at", sa.Float(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )

    _append_only("audit_log")


def _append_only(table: str) -> None:
    """Refuse UPDATE and DELETE on ``table`` inside the database itself."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION fedge_append_only() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END; $$ LANGUAGE plpgsql"
        )
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION fedge_append_only()"
        )
        return
    for verb in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION fedge_append_only()")
    op.drop_table("sites")
    op.drop_index(op.f("ix_rounds_run_id"), table_name="rounds")
    op.drop_table("rounds")
    op.drop_index(op.f("ix_request_nonces_expires_at"), table_name="request_nonces")
    op.drop_table("request_nonces")
    op.drop_table("model_versions")
    op.drop_table("enrollment_tokens")
    op.drop_index(op.f("ix_decisions_site_id"), table_name="decisions")
    op.drop_table("decisions")
    op.drop_table("audit_log")
    op.drop_table("api_keys")
    for name in ("role", "modelstatus", "roundstatus", "sitestate"):
        sa.Enum(name=name).drop(op.get_bind(), checkfirst=True)
