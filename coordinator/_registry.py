"""``security.Registry`` backed by the coordinator's database.

Each method is one transaction; ``take_token`` spends a token with a single conditional
UPDATE, so two concurrent enrollments with the same token cannot both win.
"""

from __future__ import annotations

import time

from sqlalchemy import Engine, update
from sqlmodel import Session

from fedge.coordinator._schema import EnrollmentToken, Site, SiteState
from fedge.security import SitePublicKeys, SiteRecord, SiteStatus


class DatabaseRegistry:
    """Sites and enrollment tokens in the ``sites`` and ``enrollment_tokens`` tables."""

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

    def take_token(self, token_hash: bytes) -> float | None:
        table = EnrollmentToken.__table__  # type: ignore[attr-defined]
        with self._engine.begin() as connection:
            spent = connection.execute(
                update(table)
                .where(table.c.token_hash == token_hash.hex(), table.c.used_at.is_(None))
                .values(used_at=time.time())
                .returning(table.c.expires_at)
            ).first()
        return None if spent is None else float(spent[0])


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
