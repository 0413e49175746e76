"""Who is enrolled (and who is enrolling): a storage interface, an in-memory store, and
the rules on top.

Storage is a small Protocol so the coordinator can back it with its database; the rules
(revocation, rotation grace, token expiry) live in ``KeyDirectory`` and stay the same.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Final, Protocol

from fedge.security._composite import SIGNATURE_SIZE
from fedge.security._errors import InvalidEnvelope, RevokedSender, UnknownSender
from fedge.security._identity import PUBLIC_KEYS_SIZE, ROTATION_CONTEXT, SitePublicKeys
from fedge.security._provider import Provider

DEFAULT_GRACE_SECONDS: Final = 7 * 24 * 3600.0


class SiteStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


@dataclass(frozen=True)
class SiteRecord:
    """One enrolled site: its current keys, status, and the previous keys during grace."""

    keys: SitePublicKeys
    status: SiteStatus
    enrolled_at: float
    previous: SitePublicKeys | None = None
    previous_until: float = 0.0

    @property
    def site_id(self) -> bytes:
        return self.keys.site_id


@dataclass(frozen=True)
class PendingEnrollment:
    """A begun enrollment, kept in the registry so that any worker, or the next process,
    can complete it. Only SHA-256 of the expected proof is kept, never the proof."""

    keys: SitePublicKeys
    token_hash: bytes
    challenge: bytes
    proof_hash: bytes
    expires_at: float
    failures: int = 0

    @property
    def site_id(self) -> bytes:
        return self.keys.site_id

    def same_request(self, other: PendingEnrollment) -> bool:
        """Same keys, same token: a repeated (or replayed) request, not a new one."""
        return self.keys.to_bytes() == other.keys.to_bytes() and self.token_hash == other.token_hash


class EnrollmentOutcome(StrEnum):
    """What ``Registry.finish_enrollment`` did."""

    ENROLLED = "enrolled"
    #: The pending enrollment is no longer stored: completed, ended or replaced meanwhile.
    ENDED = "ended"
    TOKEN_USED = "token used"
    ALREADY_ENROLLED = "already enrolled"


class Registry(Protocol):
    """Storage only; every method must be atomic with respect to the others.

    A pending enrollment is named by its site id and ``proof_hash``: an update aimed at
    one that has since been replaced changes nothing."""

    def get_site(self, site_id: bytes) -> SiteRecord | None: ...

    def put_site(self, record: SiteRecord) -> None: ...

    def put_token(self, token_hash: bytes, expires_at: float) -> None: ...

    def token_expiry(self, token_hash: bytes) -> float | None:
        """The expiry of an unused token, or None when unknown or used; spends nothing."""
        ...

    def get_pending(self, site_id: bytes) -> PendingEnrollment | None: ...

    def put_pending(
        self, pending: PendingEnrollment, now: float, per_token: int
    ) -> PendingEnrollment | None:
        """Store ``pending`` in place of the site's previous one and return it; but when a
        live one from the same request is stored, keep and return that one (so a repeated
        request gets the same challenge and keeps its failure count). None, storing
        nothing, when ``per_token`` live ones of other sites hold the same token. Forgets
        expired pending enrollments of every site."""
        ...

    def fail_pending(self, pending: PendingEnrollment, limit: int) -> int | None:
        """Count one wrong proof; remove the enrollment once ``limit`` are counted. The
        count, or None when ``pending`` is no longer stored."""
        ...

    def drop_pending(self, pending: PendingEnrollment) -> None: ...

    def finish_enrollment(
        self, pending: PendingEnrollment, record: SiteRecord
    ) -> EnrollmentOutcome:
        """In one step: remove ``pending``, spend its token and store ``record``.

        Returns ENROLLED only when all three happened. Otherwise no token is spent and no
        site stored: ENDED (``pending`` was not stored; nothing changes), ALREADY_ENROLLED
        or TOKEN_USED (``pending`` is removed, as it can never succeed)."""
        ...


class MemoryRegistry:
    """A dict-backed ``Registry`` for tests, the simulator and single-process use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sites: dict[bytes, SiteRecord] = {}
        self._tokens: dict[bytes, float] = {}
        self._used: set[bytes] = set()
        self._pending: dict[bytes, PendingEnrollment] = {}

    def get_site(self, site_id: bytes) -> SiteRecord | None:
        with self._lock:
            return self._sites.get(site_id)

    def put_site(self, record: SiteRecord) -> None:
        with self._lock:
            self._sites[record.site_id] = record

    def put_token(self, token_hash: bytes, expires_at: float) -> None:
        with self._lock:
            self._tokens[token_hash] = expires_at

    def token_expiry(self, token_hash: bytes) -> float | None:
        with self._lock:
            return None if token_hash in self._used else self._tokens.get(token_hash)

    def get_pending(self, site_id: bytes) -> PendingEnrollment | None:
        with self._lock:
            return self._pending.get(site_id)

    def put_pending(
        self, pending: PendingEnrollment, now: float, per_token: int
    ) -> PendingEnrollment | None:
        with self._lock:
            for site_id in [s for s, p in self._pending.items() if p.expires_at <= now]:
                del self._pending[site_id]
            stored = self._pending.get(pending.site_id)
            if stored is not None and stored.same_request(pending):
                return stored
            others = sum(
                p.token_hash == pending.token_hash and s != pending.site_id
                for s, p in self._pending.items()
            )
            if others >= per_token:
                return None
            self._pending[pending.site_id] = pending
            return pending

    def _stored(self, pending: PendingEnrollment) -> PendingEnrollment | None:
        stored = self._pending.get(pending.site_id)
        return stored if stored is not None and stored.proof_hash == pending.proof_hash else None

    def fail_pending(self, pending: PendingEnrollment, limit: int) -> int | None:
        with self._lock:
            stored = self._stored(pending)
            if stored is None:
                return None
            failures = stored.failures + 1
            if failures >= limit:
                del self._pending[pending.site_id]
            else:
                self._pending[pending.site_id] = replace(stored, failures=failures)
            return failures

    def drop_pending(self, pending: PendingEnrollment) -> None:
        with self._lock:
            if self._stored(pending) is not None:
                del self._pending[pending.site_id]

    def finish_enrollment(
        self, pending: PendingEnrollment, record: SiteRecord
    ) -> EnrollmentOutcome:
        with self._lock:
            if self._stored(pending) is None:
                return EnrollmentOutcome.ENDED
            del self._pending[pending.site_id]
            if record.site_id in self._sites:
                return EnrollmentOutcome.ALREADY_ENROLLED
            if pending.token_hash in self._used or pending.token_hash not in self._tokens:
                return EnrollmentOutcome.TOKEN_USED
            self._used.add(pending.token_hash)
            self._sites[record.site_id] = record
            return EnrollmentOutcome.ENROLLED


class KeyDirectory:
    """The registry's rules: who may talk, with which key generation, until when."""

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        provider: Provider | None = None,
    ) -> None:
        self.registry: Registry = registry if registry is not None else MemoryRegistry()
        self.grace_seconds = grace_seconds
        self._provider = provider
        self._parsed: dict[bytes, SitePublicKeys] = {}

    def _cached(self, keys: SitePublicKeys) -> SitePublicKeys:
        """Reuse parsed key objects across lookups (parsing ML-KEM keys costs ~20 µs)."""
        raw = keys.to_bytes()
        hit = self._parsed.get(raw)
        if hit is None:
            if len(self._parsed) > 4096:
                self._parsed.clear()
            hit = self._parsed[raw] = SitePublicKeys.from_bytes(raw, self._provider)
        return hit

    def record(self, site_id: bytes) -> SiteRecord:
        """The active record of ``site_id``; unknown and revoked sites raise."""
        record = self.registry.get_site(site_id)
        if record is None:
            raise UnknownSender(f"site {site_id.hex()} is not enrolled")
        if record.status is not SiteStatus.ACTIVE:
            raise RevokedSender(f"site {site_id.hex()} is revoked")
        return record

    def keys(
        self, site_id: bytes, generation: int | None = None, now: float | None = None
    ) -> SitePublicKeys:
        """Keys of ``site_id`` for ``generation`` (None: current), honouring the grace."""
        record = self.record(site_id)
        if generation is None or generation == record.keys.generation:
            return self._cached(record.keys)
        now = time.time() if now is None else now
        previous = record.previous
        if (
            previous is not None
            and generation == previous.generation
            and now < record.previous_until
        ):
            return self._cached(previous)
        raise RevokedSender(f"key generation {generation} of site {site_id.hex()} is not accepted")

    def register(self, keys: SitePublicKeys, now: float | None = None) -> SiteRecord:
        """Record a newly enrolled site (enrollment checks possession first)."""
        if self.registry.get_site(keys.site_id) is not None:
            raise InvalidEnvelope(f"site {keys.site_id.hex()} is already enrolled")
        record = SiteRecord(keys, SiteStatus.ACTIVE, time.time() if now is None else now)
        self.registry.put_site(record)
        return record

    def revoke(self, site_id: bytes) -> None:
        """New sessions and envelopes from the site are refused from now on."""
        record = self.registry.get_site(site_id)
        if record is None:
            raise UnknownSender(f"site {site_id.hex()} is not enrolled")
        self.registry.put_site(replace(record, status=SiteStatus.REVOKED))

    def rotate(self, statement: bytes, now: float | None = None) -> SiteRecord:
        """Accept a rotation statement; the old keys stay valid for the grace period."""
        if len(statement) != PUBLIC_KEYS_SIZE + 2 * SIGNATURE_SIZE:
            raise InvalidEnvelope("rotation statement has the wrong size")
        body = statement[:PUBLIC_KEYS_SIZE]
        new = SitePublicKeys.from_bytes(body, self._provider)  # size checked above
        record = self.record(new.site_id)
        if new.generation != record.keys.generation + 1:
            raise InvalidEnvelope(
                f"rotation to generation {new.generation}, expected {record.keys.generation + 1}"
            )
        old_sig = statement[PUBLIC_KEYS_SIZE : PUBLIC_KEYS_SIZE + SIGNATURE_SIZE]
        new_sig = statement[PUBLIC_KEYS_SIZE + SIGNATURE_SIZE :]
        self._cached(record.keys).verify_key().verify(old_sig, body, ROTATION_CONTEXT)
        new.verify_key().verify(new_sig, body, ROTATION_CONTEXT)
        now = time.time() if now is None else now
        updated = replace(
            record, keys=new, previous=record.keys, previous_until=now + self.grace_seconds
        )
        self.registry.put_site(updated)
        return updated
