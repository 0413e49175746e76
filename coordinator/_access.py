"""Who is calling: operator API keys (hashed, with a role) and signed site requests.

A site signs its request as ``fedge.core`` defines (``sign_request``) with its composite
(ML-DSA-65 + Ed25519) key. The coordinator parses the headers with the same module,
verifies the signature against the site's enrolled key, and accepts a timestamp within the
replay window and each (site, nonce) once: nonces are stored in the database until the
request they came with falls out of the window, so a replay is refused across restarts too.
A request stamped ahead of the coordinator's clock stays valid until ``sent_at + window``,
so its nonce is kept until then, not merely until ``now + window``.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Engine, delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from fedge.coordinator._errors import ForbiddenError, UnauthenticatedError
from fedge.coordinator._schema import ApiKey, RequestNonce, Role
from fedge.core import REQUEST_CONTEXT, SiteRequestError, parse_site_request
from fedge.security import KeyDirectory, SecurityError

API_KEY_PREFIX: Final = "fedge-op."
#: The size of every column that names who did something (``created_by``, ``promoted_by``,
#: the audit log's ``actor``).
ACTOR_CHARS: Final = 64


def fit_actor(actor: str, size: int = ACTOR_CHARS) -> str:
    """``actor`` as a ``size``-character column holds it: unchanged when it fits, else its
    first characters, "…" and 8 hex digits of its SHA-256, so the same name always reads
    the same and two long names that share their start stay apart."""
    if len(actor) <= size:
        return actor
    digest = hashlib.sha256(actor.encode()).hexdigest()[:8]
    return f"{actor[: size - 9]}…{digest}"


def new_api_key() -> str:
    """A fresh operator key; only its hash is stored."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    """SHA-256 is enough: keys carry 256 random bits, nothing to brute-force."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Operator:
    name: str
    role: Role

    @property
    def actor(self) -> str:
        """Who the records name: fits the 64-character columns whatever the key's name."""
        return fit_actor(f"operator:{self.name}")


def authenticate_operator(engine: Engine, key: str | None) -> Operator:
    """The operator owning ``key``; missing, unknown or revoked keys raise."""
    if not key:
        raise UnauthenticatedError("an operator API key is required (X-API-Key header)")
    with Session(engine) as session:
        row = session.exec(select(ApiKey).where(ApiKey.key_hash == key_hash(key))).first()
    if row is None or row.revoked:
        raise UnauthenticatedError("unknown or revoked API key")
    return Operator(row.name, row.role)


class OperatorCache:
    """Valid keys seen in the last ``ttl`` seconds, by hash: the database lookup cost
    0.7 ms of every operator request. A revocation through this process clears the cache at
    once; one made by another worker process takes effect within ``ttl``."""

    def __init__(self, engine: Engine, ttl: float = 2.0) -> None:
        self.engine, self.ttl = engine, ttl
        self._known: dict[str, tuple[Operator, float]] = {}

    def cached(self, key: str | None) -> Operator | None:
        if not key:
            return None
        hit = self._known.get(key_hash(key))
        return hit[0] if hit is not None and hit[1] > time.monotonic() else None

    def authenticate(self, key: str | None) -> Operator:
        hit = self.cached(key)
        if hit is not None:
            return hit
        operator = authenticate_operator(self.engine, key)
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[key_hash(key or "")] = (operator, time.monotonic() + self.ttl)
        return operator

    def clear(self) -> None:
        self._known.clear()


def require_role(operator: Operator, role: Role) -> None:
    if operator.role.rank < role.rank:
        raise ForbiddenError(
            f"this call needs the {role.value} role, key has {operator.role.value}"
        )


def verify_site_request(
    engine: Engine,
    directory: KeyDirectory,
    *,
    method: str,
    target: str,
    body: bytes,
    headers: dict[str, str | None],
    window: float,
    now: float | None = None,
) -> bytes:
    """The site id of a correctly signed, fresh, first-seen request; anything else raises."""
    now = time.time() if now is None else now
    try:
        request = parse_site_request(
            method=method, target=target, body=body, headers=headers, window=window, now=now
        )
    except SiteRequestError as exc:
        raise UnauthenticatedError(str(exc)) from exc
    try:
        keys = directory.keys(request.site_id)
        keys.verify_key().verify(request.signature, request.message, REQUEST_CONTEXT)
    except SecurityError as exc:
        raise UnauthenticatedError(f"site request refused: {exc}") from exc
    # Valid until sent_at + window, which is later than now + window for a fast site clock.
    until = max(now, request.sent_at) + window
    _remember_nonce(engine, request.site_hex, request.nonce, until, now)
    return request.site_id


def _remember_nonce(engine: Engine, site_hex: str, nonce: str, until: float, now: float) -> None:
    with Session(engine) as session:
        session.connection().execute(delete(RequestNonce).where(col(RequestNonce.expires_at) < now))
        session.add(RequestNonce(site_id=site_hex, nonce=nonce, expires_at=until))
        try:
            session.commit()
        except IntegrityError as exc:
            raise UnauthenticatedError("replayed request (nonce already used)") from exc
