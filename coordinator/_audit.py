"""Audit entries: one per state change, written in the transaction that makes the change."""

from __future__ import annotations

import time

from fedge.coordinator._access import fit_actor
from fedge.coordinator._schema import AuditEntry

__all__ = ["audit_entry"]


def audit_entry(actor: str, action: str, target: str, outcome: str, detail: str) -> AuditEntry:
    """An entry with its fields cut to the column sizes (a long detail never fails a write)."""
    return AuditEntry(
        at=time.time(),
        actor=fit_actor(actor),
        action=action[:64],
        target=target[:128],
        outcome=outcome,
        detail=detail[:500],
    )
