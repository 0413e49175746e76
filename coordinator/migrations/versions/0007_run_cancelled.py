"""Runs an operator cancelled: ``cancelled``, a run status of its own.

SQLite keeps the status as text (no constraint), so only PostgreSQL's enum type changes.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_OLD = ("STARTING", "RUNNING", "COMPLETED", "FAILED", "INTERRUPTED")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TYPE runstatus ADD VALUE IF NOT EXISTS 'CANCELLED'")


def downgrade() -> None:
    """A cancelled run becomes interrupted: it ended early, and no value is left for it."""
    op.execute("UPDATE runs SET status = 'INTERRUPTED' WHERE status = 'CANCELLED'")
    if op.get_bind().dialect.name == "postgresql":
        values = ", ".join(f"'{v}'" for v in _OLD)
        op.execute("ALTER TYPE runstatus RENAME TO runstatus_old")
        op.execute(f"CREATE TYPE runstatus AS ENUM ({values})")
        op.execute(
            "ALTER TABLE runs ALTER COLUMN status TYPE runstatus USING status::text::runstatus"
        )
        op.execute("DROP TYPE runstatus_old")
