"""Signed actions for sites, the long poll that hands them out, and their acknowledgements.

An action is what one decision tells one site to do. Its body is the JSON of
docs/live-loop.md, signed by the coordinator's composite key over the body bytes with
``fedge.core.ACTION_CONTEXT``; the agent trusts nothing in it that the signature does not
cover. Actions are stored with their body and signature bytes, so every worker process
answers a poll with exactly what was signed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import BigInteger, Column, Engine, Index, LargeBinary, func
from sqlmodel import Field as SQLField
from sqlmodel import Session, SQLModel, col, select

from fedge.coordinator._errors import ConflictError, NotFoundError
from fedge.core import ACTION_CONTEXT
from fedge.decisions import MODES, SHARE_NAMES
from fedge.security import SiteIdentity

log = logging.getLogger("fedge.coordinator.actions")

#: This process's notifiers (one per Coordinator), for stop_waiting_polls.
_NOTIFIERS: weakref.WeakSet[ActionNotifier] = weakref.WeakSet()

__all__ = [
    "MAX_ACKS",
    "MAX_POLL_ACTIONS",
    "MAX_WAIT_SECONDS",
    "AckBatch",
    "ActionAck",
    "ActionBook",
    "ActionKind",
    "ActionNotifier",
    "ActionPublic",
    "ActionRecord",
    "ActionSource",
    "DecisionTick",
    "SignedAction",
    "SiteActions",
    "action_body",
]

MAX_WAIT_SECONDS = 30.0  # a poll's longest wait: below every proxy's idle timeout
MAX_POLL_ACTIONS = 100  # per answer, oldest first; the agent asks again with the last id
MAX_ACKS = 256
MAX_REASON = 500

ActionKind = Literal["strategic", "tactical"]
ActionSource = Literal["federated_forecast", "safe_default"]


class ActionRecord(SQLModel, table=True):
    """One signed action; the ack columns are the site's answer, once it came."""

    __tablename__ = "actions"
    __table_args__ = (Index("ix_actions_site_id_id", "site_id", "id"),)

    id: int | None = SQLField(default=None, primary_key=True)
    site_id: str = SQLField(max_length=32)
    kind: str = SQLField(max_length=16)
    body: bytes = SQLField(sa_column=Column(LargeBinary, nullable=False))
    signature: bytes = SQLField(sa_column=Column(LargeBinary, nullable=False))
    decided_at: float
    valid_until: float
    policy_version: str = SQLField(max_length=64)
    source: str = SQLField(max_length=32)
    decision_id: int | None = SQLField(default=None, foreign_key="decisions.id")
    acked_at: float | None = None
    ack_status: str | None = SQLField(default=None, max_length=16)
    ack_reason: str | None = SQLField(default=None, max_length=MAX_REASON)


class DecisionTick(SQLModel, table=True):
    """A decision slot taken: with several worker processes, the first to insert it
    decides that slot, and the others see the row and skip it."""

    __tablename__ = "decision_ticks"

    kind: str = SQLField(primary_key=True, max_length=16)
    slot: int = SQLField(primary_key=True, sa_type=BigInteger)
    claimed_at: float


def action_body(
    action_id: int,
    site_id: str,
    kind: ActionKind,
    *,
    mode: str | None,
    shares: dict[str, float] | None,
    decided_at: float,
    valid_until: float,
    policy_version: str,
    source: ActionSource,
    decision_id: int,
) -> bytes:
    """The signed bytes (docs/live-loop.md): a strategic action has a mode, a tactical one
    shares over ``SHARE_NAMES`` summing to at most 1."""
    if kind == "strategic":
        if mode not in MODES or shares is not None:
            raise ValueError(f"a strategic action needs one of {MODES} and no shares")
    elif mode is not None or shares is None or tuple(shares) != SHARE_NAMES:
        raise ValueError(f"a tactical action needs shares over {SHARE_NAMES} and no mode")
    elif (
        not all(math.isfinite(v) and v >= 0 for v in shares.values())
        or sum(shares.values()) > 1.0 + 1e-9
    ):
        raise ValueError("a tactical action needs shares that are finite, >= 0, summing to <= 1")
    body = {
        "action_id": action_id,
        "site_id": site_id,
        "kind": kind,
        "mode": mode,
        "shares": shares,
        "decided_at": decided_at,
        "valid_until": valid_until,
        "policy_version": policy_version,
        "source": source,
        "decision_id": decision_id,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def sign_action(identity: SiteIdentity, body: bytes) -> bytes:
    return identity.signing_key.sign(body, ACTION_CONTEXT)


# --- bodies ------------------------------------------------------------------------------


class SignedAction(BaseModel):
    body_base64: str
    signature_base64: str


class SiteActions(BaseModel):
    """``GET /site/actions``: the caller's actions newer than ``after``, oldest first."""

    actions: list[SignedAction]


class ActionAck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action_id: int = Field(ge=1, le=2**62)
    status: Literal["applied", "rejected"]
    at: float = Field(ge=0, le=2**40, allow_inf_nan=False)
    reason: str | None = Field(default=None, max_length=MAX_REASON)


class AckBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    acks: list[ActionAck] = Field(min_length=1, max_length=MAX_ACKS)

    @model_validator(mode="after")
    def _one_ack_per_action(self) -> AckBatch:
        ids = [a.action_id for a in self.acks]
        if len(set(ids)) != len(ids):
            raise ValueError("each action_id may appear once per batch")
        return self


class ActionPublic(BaseModel):
    """An action as operators see it: the signed body's fields and the site's ack."""

    id: int
    site_id: str
    kind: str
    mode: str | None
    shares: dict[str, float] | None
    decided_at: float
    valid_until: float
    policy_version: str
    source: str
    decision_id: int | None
    acked_at: float | None
    ack_status: str | None
    ack_reason: str | None

    @classmethod
    def of(cls, row: ActionRecord) -> ActionPublic:
        body: dict[str, Any] = json.loads(row.body)
        assert row.id is not None
        return cls(
            id=row.id,
            site_id=row.site_id,
            kind=row.kind,
            mode=body.get("mode"),
            shares=body.get("shares"),
            decided_at=row.decided_at,
            valid_until=row.valid_until,
            policy_version=row.policy_version,
            source=row.source,
            decision_id=row.decision_id,
            acked_at=row.acked_at,
            ack_status=row.ack_status,
            ack_reason=row.ack_reason,
        )


# --- notification ------------------------------------------------------------------------


def stop_waiting_polls() -> None:
    """This process is stopping: every waiting poll answers now (see ActionNotifier.stop)."""
    for notifier in list(_NOTIFIERS):
        notifier.stop()


class ActionNotifier:
    """Wakes the waiting polls of this process when actions are stored, by this process
    (:meth:`notify`) or by any other worker or replica on the same database.

    For the others, one watcher thread per process reads the newest action id (``newest``,
    one indexed query) every ``watch_s`` while any poll waits, and wakes them all when it
    moves: the cost follows the processes, not the sites waiting, and stops when none
    waits. A poll passes the :attr:`generation` it saw before reading its actions, so a
    wake that lands between its read and its wait is not lost."""

    def __init__(self, newest: Callable[[], int] | None = None, watch_s: float = 0.1) -> None:
        self._lock = threading.Lock()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._generation = 0
        self._newest, self._watch_s = newest, watch_s
        self._watcher: threading.Thread | None = None
        self._stopping = False
        _NOTIFIERS.add(self)

    @property
    def stopping(self) -> bool:
        """Whether this process is stopping: a poll then answers with what it has."""
        with self._lock:
            return self._stopping

    def stop(self) -> None:
        """Wake every waiting poll for good: the server stops, and it waits for the
        requests in flight, which a poll would hold for up to its wait."""
        with self._lock:
            self._stopping = True
        self.notify()

    @property
    def generation(self) -> int:
        """How many wakes so far: read it before reading the actions, pass it to wait."""
        with self._lock:
            return self._generation

    async def wait(self, timeout: float, seen: int | None = None) -> None:
        """Return after ``timeout`` seconds, or sooner when actions are stored; at once if
        a wake came after ``seen`` (a :attr:`generation`)."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            if self._stopping or (seen is not None and self._generation != seen):
                return
            self._waiters.add(waiter)
            if self._newest is not None and self._watcher is None:
                self._watcher = threading.Thread(
                    target=self._watch, name="fedge-action-watch", daemon=True
                )
                self._watcher.start()
        try:
            await asyncio.wait_for(waiter[1].wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.discard(waiter)

    @property
    def waiting(self) -> int:
        """How many polls of this process are waiting now."""
        with self._lock:
            return len(self._waiters)

    @property
    def watching(self) -> bool:
        """Whether the watch of other processes' actions runs now (only while polls wait)."""
        with self._lock:
            return self._watcher is not None

    def notify(self) -> None:
        with self._lock:
            self._generation += 1
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop has closed: its poll is gone
                continue

    def _watch(self) -> None:
        assert self._newest is not None
        last: int | None = None
        while True:
            newest: int | None
            try:
                newest = self._newest()
            except Exception:  # the database away: the polls' own rechecks carry on
                log.debug("newest action id unreadable", exc_info=True)
                newest = None
            # the first read wakes once too: an action stored between a poll's read and
            # this baseline would otherwise wait for the poll's recheck
            if newest is not None and newest != last:
                last = newest
                self.notify()
            with self._lock:
                if not self._waiters:
                    self._watcher = None
                    return
            time.sleep(self._watch_s)


# --- queries and acks --------------------------------------------------------------------


class ActionBook:
    """Reads the actions table for polls and viewers, and applies the sites' acks."""

    def __init__(self, engine: Engine, reader: Engine) -> None:
        self.engine, self.reader = engine, reader

    def for_site(
        self, site_hex: str, after: int, limit: int = MAX_POLL_ACTIONS
    ) -> list[SignedAction]:
        with Session(self.reader) as session:
            rows = session.exec(
                select(ActionRecord.body, ActionRecord.signature)
                .where(ActionRecord.site_id == site_hex, col(ActionRecord.id) > after)
                .order_by(col(ActionRecord.id))
                .limit(limit)
            ).all()
        return [
            SignedAction(
                body_base64=base64.b64encode(body).decode(),
                signature_base64=base64.b64encode(signature).decode(),
            )
            for body, signature in rows
        ]

    def newest_id(self) -> int:
        """The highest action id stored, by any process (0 with none): the notifier's
        watch."""
        with Session(self.reader) as session:
            newest = session.exec(select(func.max(ActionRecord.id))).one()
        return int(newest or 0)

    def latest(self, site_hex: str | None, limit: int) -> Sequence[ActionRecord]:
        with Session(self.reader) as session:
            query = select(ActionRecord).order_by(col(ActionRecord.id).desc()).limit(limit)
            if site_hex is not None:
                query = query.where(ActionRecord.site_id == site_hex)
            return session.exec(query).all()

    def ack(self, site_hex: str, batch: AckBatch) -> int:
        """Record the site's acks in one transaction; returns how many were new. An id
        that is not one of the caller's actions (404), or an ack that contradicts an
        earlier one (409), refuses the whole batch. Repeating an ack changes nothing."""
        ids = [a.action_id for a in batch.acks]
        with Session(self.engine) as session:
            rows = {
                r.id: r
                for r in session.exec(
                    select(ActionRecord).where(col(ActionRecord.id).in_(ids)).with_for_update()
                ).all()
            }
            foreign = [i for i in ids if i not in rows or rows[i].site_id != site_hex]
            if foreign:
                raise NotFoundError(
                    f"no action(s) {', '.join(map(str, foreign[:10]))} for this site"
                )
            changed = 0
            for ack in batch.acks:
                row = rows[ack.action_id]
                if row.ack_status is not None:
                    if row.ack_status != ack.status:
                        raise ConflictError(
                            f"action {ack.action_id} was acknowledged {row.ack_status} already"
                        )
                    continue
                row.ack_status, row.acked_at, row.ack_reason = ack.status, ack.at, ack.reason
                session.add(row)
                changed += 1
            session.commit()
        return changed
