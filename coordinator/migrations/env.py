"""Alembic environment: always runs on the connection the coordinator hands over."""

from alembic import context
from sqlmodel import SQLModel

import fedge.coordinator._actions
import fedge.coordinator._health
import fedge.coordinator._retraining
import fedge.coordinator._rollout
import fedge.coordinator._schema  # noqa: F401

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through coordinator._db.upgrade")
context.configure(connection=connection, target_metadata=SQLModel.metadata)
with context.begin_transaction():
    context.run_migrations()
