"""``security.Registry`` backed by the coordinator's database.

Each method is one transaction. A pending enrollment is a row of ``enrollment_challenges``,
so every worker sees it and it survives a restart. ``finish_enrollment`` removes that
row, spends the token with a conditional UPDATE and inserts the site in one transaction:
of two concurrent completions with one token (or one challenge) exactly one wins, and a
refused one spends nothing.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from fedge.coordinator._schema import EnrollmentChallenge, EnrollmentToken, Site, SiteState
from fedge.security import (
    EnrollmentOutcome,
    PendingEnrollment,
    SitePublicKeys,
    SiteRecord,
    SiteStatus,
)

_PENDING = EnrollmentChallenge.__table__  # type: ignore[attr-defined]
_TOKENS = EnrollmentToken.__table__  # type: ignore[attr-defined]
_SITES = Site.__table__  # type: ignore[attr-defined]


class DatabaseRegistry:
    """Sites, enrollment tokens and pending enrollments in the coordinator's tables."""

    def __init__(self, engine: Engine, *, issued_by: str = "coordinator") -> None:
        self._engine = engine
        self.issued_by = issued_by

    def get_site(self, site_id: bytes) -> SiteRecord | None:
        with Session(self._engine) as session:
            row = session.get(Site, site_id.hex())
            return None if row is None else to_record(row)

    def put_site(self, record: SiteRecord) -> None:
        with Session(self._engine) as session:
            row = session.get(Site, record.site_id.hex())
            if row is None:
                row = Site(
                    id=record.site_id.hex(),
                    public_keys=record.keys.to_bytes(),
                    enrolled_at=record.enrolled_at,
                )
            row.generation = record.keys.generation
            row.public_keys = record.keys.to_bytes()
            row.previous_keys = None if record.previous is None else record.previous.to_bytes()
            row.previous_until = record.previous_until
            row.status = SiteState(record.status.value)
            session.add(row)
            session.commit()

    def put_token(self, token_hash: bytes, expires_at: float) -> None:
        with Session(self._engine) as session:
            session.add(
                EnrollmentToken(
                    token_hash=token_hash.hex(),
                    expires_at=expires_at,
                    created_at=time.time(),
                    created_by=self.issued_by,
                )
            )
            session.commit()

    def token_expiry(self, token_hash: bytes) -> float | None:
        with Session(self._engine) as session:
            row = session.get(EnrollmentToken, token_hash.hex())
            return None if row is None or row.used_at is not None else row.expires_at

    # --- pending enrollments -------------------------------------------------------------

    def get_pending(self, site_id: bytes) -> PendingEnrollment | None:
        with Session(self._engine) as session:
            row = session.get(EnrollmentChallenge, site_id.hex())
            return None if row is None else _to_pending(row)

    def put_pending(
        self, pending: PendingEnrollment, now: float, per_token: int
    ) -> PendingEnrollment | None:
        for attempt in range(2):  # PostgreSQL: a concurrent first insert wins; then re-read
            try:
                return self._put_pending(pending, now, per_token)
            except IntegrityError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _put_pending(
        self, pending: PendingEnrollment, now: float, per_token: int
    ) -> PendingEnrollment | None:
        with self._engine.begin() as connection:  # forget expired ones, skipping any in use
            expired = (
                select(_PENDING.c.site_id)
                .where(_PENDING.c.expires_at <= now)
                .with_for_update(skip_locked=True)
            )
            connection.execute(delete(_PENDING).where(_PENDING.c.site_id.in_(expired)))
        site_hex, token_hex = pending.site_id.hex(), pending.token_hash.hex()
        with Session(self._engine) as session:
            # Locks in the order finish_enrollment takes them: the site's row, then the
            # token's, which serialises the pending enrollments that share the token.
            row = session.get(EnrollmentChallenge, site_hex, with_for_update=True)
            if row is not None and row.expires_at > now:
                stored = _to_pending(row)
                if stored.same_request(pending):
                    return stored
            session.get(EnrollmentToken, token_hex, with_for_update=True)
            others = session.execute(
                select(func.count())
                .select_from(_PENDING)
                .where(
                    _PENDING.c.token_hash == token_hex,
                    _PENDING.c.site_id != site_hex,
                    _PENDING.c.expires_at > now,
                )
            ).scalar_one()
            if others >= per_token:
                return None
            values: dict[str, Any] = {
                "public_keys": pending.keys.to_bytes(),
                "token_hash": token_hex,
                "challenge": pending.challenge,
                "proof_hash": pending.proof_hash.hex(),
                "expires_at": pending.expires_at,
                "failures": pending.failures,
                "created_at": now,
            }
            if row is None:
                row = EnrollmentChallenge(site_id=site_hex, **values)
            else:
                for name, value in values.items():
                    setattr(row, name, value)
            session.add(row)
            session.commit()
            return pending

    def fail_pending(self, pending: PendingEnrollment, limit: int) -> int | None:
        with self._engine.begin() as connection:
            counted = connection.execute(
                update(_PENDING)
                .where(*_naming(pending))
                .values(failures=_PENDING.c.failures + 1)
                .returning(_PENDING.c.failures)
            ).first()
            if counted is None:
                return None
            if counted[0] >= limit:
                connection.execute(delete(_PENDING).where(*_naming(pending)))
            return int(counted[0])

    def drop_pending(self, pending: PendingEnrollment) -> None:
        with self._engine.begin() as connection:
            connection.execute(delete(_PENDING).where(*_naming(pending)))

    def finish_enrollment(
        self, pending: PendingEnrollment, record: SiteRecord
    ) -> EnrollmentOutcome:
        try:
            with self._engine.begin() as connection:
                return _finish(connection, pending, record)
        except IntegrityError:  # the site was inserted meanwhile by another path
            self.drop_pending(pending)
            return EnrollmentOutcome.ALREADY_ENROLLED


def _finish(
    connection: Connection, pending: PendingEnrollment, record: SiteRecord
) -> EnrollmentOutcome:
    # The DELETE claims the challenge: a concurrent completion of it waits on the row
    # lock (PostgreSQL) or the write lock (SQLite), then finds it gone.
    if connection.execute(delete(_PENDING).where(*_naming(pending))).rowcount == 0:
        return EnrollmentOutcome.ENDED
    site_hex = record.site_id.hex()
    if connection.execute(select(_SITES.c.id).where(_SITES.c.id == site_hex)).first():
        return EnrollmentOutcome.ALREADY_ENROLLED
    spent = connection.execute(
        update(_TOKENS)
        .where(_TOKENS.c.token_hash == pending.token_hash.hex(), _TOKENS.c.used_at.is_(None))
        .values(used_at=time.time())
        .returning(_TOKENS.c.token_hash)
    ).first()
    if spent is None:
        return EnrollmentOutcome.TOKEN_USED
    connection.execute(insert(_SITES).values(**_site_values(record)))
    return EnrollmentOutcome.ENROLLED


def _naming(pending: PendingEnrollment) -> tuple[Any, Any]:
    """The WHERE clause that names exactly this pending enrollment, not a later one."""
    return (
        _PENDING.c.site_id == pending.site_id.hex(),
        _PENDING.c.proof_hash == pending.proof_hash.hex(),
    )


def _site_values(record: SiteRecord) -> dict[str, Any]:
    return {
        "id": record.site_id.hex(),
        "generation": record.keys.generation,
        "public_keys": record.keys.to_bytes(),
        "previous_keys": None if record.previous is None else record.previous.to_bytes(),
        "previous_until": record.previous_until,
        "status": SiteState(record.status.value),
        "enrolled_at": record.enrolled_at,
    }


def _to_pending(row: EnrollmentChallenge) -> PendingEnrollment:
    return PendingEnrollment(
        keys=SitePublicKeys.from_bytes(row.public_keys),
        token_hash=bytes.fromhex(row.token_hash),
        challenge=row.challenge,
        proof_hash=bytes.fromhex(row.proof_hash),
        expires_at=row.expires_at,
        failures=row.failures,
    )


def to_record(row: Site) -> SiteRecord:
    """The security layer's view of a site row."""
    return SiteRecord(
        keys=SitePublicKeys.from_bytes(row.public_keys),
        status=SiteStatus(row.status.value),
        enrolled_at=row.enrolled_at,
        previous=None
        if row.previous_keys is None
        else SitePublicKeys.from_bytes(row.previous_keys),
        previous_until=row.previous_until,
    )
