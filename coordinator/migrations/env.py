"""Alembic environment: always runs on the connection the coordinator hands over."""

from alembic import context
from sqlmodel import SQLModel

import fedge.coordinator._schema  # noqa: F401  (registers the tables)

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through coordinator._db.upgrade")
context.configure(connection=connection, target_metadata=SQLModel.metadata)
with context.begin_transaction():
    context.run_migrations()
