"""At most one production model version, enforced by a partial unique index.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    where = sa.text("status = 'PRODUCTION'")
    op.create_index(
        "one_production_model",
        "model_versions",
        ["status"],
        unique=True,
        sqlite_where=where,
        postgresql_where=where,
    )


def downgrade() -> None:
    op.drop_index("one_production_model", table_name="model_versions")
