"""Log lines for the coordinator's state changes, written once their transaction commits.

Every state change already writes an audit entry in its own transaction (``_audit``), so
the entries are the events: a session remembers the entries it flushed, logs them after
its commit (event = the audit action: ``run.start``, ``round.completed``, ``run.failed``,
``run.cancel``, ``model.promote``, ``model.rollback``, ``site.enroll``, ``site.revoke``,
``rollout.*`` ...), and forgets them on a rollback, so nothing is logged that did not
happen. ``note`` adds fields to an entry's line (a round's participants)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, UOWTransaction

from fedge.coordinator._schema import AuditEntry

__all__ = ["note"]

_log = logging.getLogger("fedge.coordinator.events")
_PENDING = "fedge_audit_pending"
_NOTES = "fedge_audit_notes"

#: Actions an operator wants to see first: at WARNING.
_WARNINGS = frozenset(
    {"run.failed", "run.interrupted", "model.rollback", "rollout.rolled_back",
     "retraining.failed"}
)  # fmt: skip


def note(session: Session, entry: AuditEntry, **fields: Any) -> None:
    """Add ``fields`` to the log line of ``entry`` (added to ``session``)."""
    session.info.setdefault(_NOTES, {})[id(entry)] = fields


@event.listens_for(Session, "after_flush")
def _flushed(session: Session, _: UOWTransaction) -> None:
    """The entries' fields now: after the commit they are expired (a read to reload)."""
    entries = [
        (id(o), o.action, o.actor, o.target, o.outcome, o.detail)
        for o in session.new
        if isinstance(o, AuditEntry)
    ]
    if entries:
        session.info.setdefault(_PENDING, []).extend(entries)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    entries: list[tuple[int, str, str, str, str, str]] = session.info.pop(_PENDING, [])
    notes: dict[int, dict[str, Any]] = session.info.pop(_NOTES, {})
    for key, action, actor, target, outcome, detail in entries:
        level = logging.WARNING if outcome != "ok" or action in _WARNINGS else logging.INFO
        text = f"{action} {target}".strip() + f" by {actor}"
        if outcome != "ok":
            text += f": {outcome}"
        if detail:
            text += f" ({detail})"
        fields = {
            "event": action,
            "actor": actor,
            "target": target,
            "outcome": outcome,
            "detail": detail,
            **notes.get(key, {}),
        }
        _log.log(level, "%s", text, extra=fields)


@event.listens_for(Session, "after_soft_rollback")
def _rolled_back(session: Session, _: object) -> None:
    session.info.pop(_PENDING, None)
    session.info.pop(_NOTES, None)
