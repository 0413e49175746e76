"""Small builders shared by the session, envelope and fuzz tests."""

from __future__ import annotations

from fedge.security import (
    Initiator,
    KeyDirectory,
    Responder,
    Session,
    SessionPolicy,
    SiteIdentity,
)

SESSION_ERRORS_NOTE = "every rejection must be one of the typed security errors"


def handshake(
    site: SiteIdentity,
    coordinator: SiteIdentity,
    directory: KeyDirectory,
    policy: SessionPolicy | None = None,
) -> tuple[Session, Session]:
    """(site's session, coordinator's session) after a full mutual handshake."""
    initiator = Initiator(site, coordinator.public_keys(), policy=policy)
    response, coordinator_session = Responder(coordinator, directory, policy=policy).respond(
        initiator.start(), now=0.0
    )
    return initiator.finish(response), coordinator_session


def flip(data: bytes, position: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[position] ^= mask
    return bytes(out)
