"""Enrollment: an operator-issued one-time token admits one site, which proves it holds
both its keys (signs the request; decapsulates a challenge) before it is registered.

Only the SHA3-256 of each token is stored. The request travels sealed to the authority's
static X-Wing key, so an eavesdropper never sees the token.

The pending enrollment between ``begin`` and ``complete`` lives in the registry, not in
the authority: any coordinator worker, or the next process after a restart, completes
it. The token is spent only by a correct proof, in the same step that registers the
site, so neither a wrong proof nor a restart wastes it, and it admits one site however
many requests race with it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
import time
from typing import Final

from fedge.security._composite import SIGNATURE_SIZE
from fedge.security._errors import (
    InvalidEnvelope,
    InvalidSignature,
    InvalidToken,
)
from fedge.security._identity import PUBLIC_KEYS_SIZE, SiteIdentity, SitePublicKeys, fingerprint
from fedge.security._provider import Provider, get_provider
from fedge.security._registry import (
    EnrollmentOutcome,
    KeyDirectory,
    PendingEnrollment,
    SiteRecord,
    SiteStatus,
)
from fedge.security._wire import (
    AEAD_OF_SUITE,
    TAG_SIZE,
    VERSION,
    Mode,
    Suite,
    check_prefix,
    suite_of,
)
from fedge.security._xwing import CIPHERTEXT_SIZE

TOKEN_PREFIX: Final = "fedge-enroll-v1."
TOKEN_SIZE: Final = 32
REQUEST_CONTEXT: Final = b"fedge-enroll-v1"
#: version, mode, suite, authority key generation.
REQUEST_HEADER: Final = struct.Struct(">BBBI")
_INNER_SIZE: Final = TOKEN_SIZE + PUBLIC_KEYS_SIZE + SIGNATURE_SIZE
REQUEST_SIZE: Final = REQUEST_HEADER.size + CIPHERTEXT_SIZE + _INNER_SIZE + TAG_SIZE
_KEY_INFO: Final = b"fedge v1 enrollment key"
_PROOF_LABEL: Final = b"fedge v1 kem possession"
#: Wrong proofs that end a pending enrollment (the site then begins again).
MAX_FAILED_PROOFS: Final = 5
#: Sites that may be enrolling with one token at a time: beginning spends nothing, so this
#: bounds what one token (or a stolen one) can make the registry hold.
MAX_PENDING_PER_TOKEN: Final = 8


def _token_bytes(token: str) -> bytes:
    if not token.startswith(TOKEN_PREFIX):
        raise InvalidToken("not a fedge enrollment token")
    try:
        raw = base64.urlsafe_b64decode(token[len(TOKEN_PREFIX) :] + "==")
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("enrollment token is not base64url") from exc
    if len(raw) != TOKEN_SIZE:
        raise InvalidToken("enrollment token has the wrong length")
    return raw


def token_hash(token: str) -> bytes:
    """What the registry stores instead of the token."""
    return hashlib.sha3_256(_token_bytes(token)).digest()


def _signed_part(raw_token: bytes, keys: bytes) -> bytes:
    return hashlib.sha3_256(raw_token).digest() + keys


def _proof(secret: bytes, site_id: bytes, challenge: bytes) -> bytes:
    return hmac.digest(secret, _PROOF_LABEL + site_id + challenge, "sha256")


def _proof_hash(proof: bytes) -> bytes:
    """What the registry keeps of the expected proof (a stored proof would be an answer)."""
    return hashlib.sha256(proof).digest()


def enrollment_request(
    identity: SiteIdentity,
    token: str,
    authority: SitePublicKeys,
    *,
    suite: Suite = Suite.XWING_AES256GCM,
    provider: Provider | None = None,
) -> bytes:
    """The site's request: token and public keys, signed, sealed to the authority."""
    provider = provider or get_provider()
    raw = _token_bytes(token)
    keys = identity.public_keys().to_bytes()
    inner = raw + keys + identity.signing_key.sign(_signed_part(raw, keys), REQUEST_CONTEXT)
    suite = suite_of(suite)
    header = REQUEST_HEADER.pack(VERSION, Mode.ENROLLMENT, suite, authority.generation)
    secret, kem_ct = authority.kem_key(provider).encapsulate()
    okm = provider.hkdf(secret, b"", _KEY_INFO + header, 44)
    aad = header + kem_ct
    return aad + provider.aead(AEAD_OF_SUITE[suite], okm[:32]).encrypt(okm[32:], inner, aad)


def prove_possession(identity: SiteIdentity, challenge: bytes) -> bytes:
    """Answer the authority's KEM challenge: only the KEM key's holder can."""
    return _proof(identity.kem_key.decapsulate(challenge), identity.site_id, challenge)


class EnrollmentAuthority:
    """The operator/coordinator side of enrollment, on top of a ``KeyDirectory``."""

    def __init__(
        self,
        identity: SiteIdentity,
        directory: KeyDirectory,
        *,
        challenge_seconds: float = 300.0,
        max_failed_proofs: int = MAX_FAILED_PROOFS,
        provider: Provider | None = None,
    ) -> None:
        if max_failed_proofs < 1:
            raise ValueError("max_failed_proofs must be at least 1")
        self._identity = identity
        self._directory = directory
        self._challenge_seconds = challenge_seconds
        self._max_failed_proofs = max_failed_proofs
        self._provider = provider or get_provider()

    def issue_token(self, ttl_seconds: float = 86400.0, now: float | None = None) -> str:
        """A new one-time token; hand it to the site operator out of band."""
        if ttl_seconds <= 0:
            raise InvalidToken("token lifetime must be positive")
        raw = os.urandom(TOKEN_SIZE)
        now = time.time() if now is None else now
        self._directory.registry.put_token(hashlib.sha3_256(raw).digest(), now + ttl_seconds)
        return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def begin(self, request: bytes, now: float | None = None) -> bytes:
        """Check the request and its token; return a KEM challenge for the site."""
        return self.start(request, now)[0].challenge

    def start(self, request: bytes, now: float | None = None) -> tuple[PendingEnrollment, bool]:
        """Check the request, then that the site is new and the token valid (spending
        nothing); the pending enrollment, whose challenge the site must answer, and
        whether this call created it. A repeated request within the challenge's lifetime
        gets the same challenge (False)."""
        if len(request) != REQUEST_SIZE:
            raise InvalidEnvelope(f"enrollment request must be {REQUEST_SIZE} bytes")
        suite = check_prefix(request, Mode.ENROLLMENT, REQUEST_SIZE)
        _, _, _, generation = REQUEST_HEADER.unpack_from(request)
        kem_key = self._identity.kem_key_for(generation)
        if kem_key is None:
            raise InvalidEnvelope(f"request is sealed to key generation {generation}")
        aad_end = REQUEST_HEADER.size + CIPHERTEXT_SIZE
        secret = kem_key.decapsulate(request[REQUEST_HEADER.size : aad_end])
        okm = self._provider.hkdf(secret, b"", _KEY_INFO + request[: REQUEST_HEADER.size], 44)
        aead = self._provider.aead(AEAD_OF_SUITE[suite], okm[:32])
        inner = aead.decrypt(okm[32:], request[aad_end:], request[:aad_end])
        raw, keys_bytes = inner[:TOKEN_SIZE], inner[TOKEN_SIZE:-SIGNATURE_SIZE]
        keys = SitePublicKeys.from_bytes(keys_bytes, self._provider)  # sizes fixed above
        keys.verify_key(self._provider).verify(
            inner[-SIGNATURE_SIZE:], _signed_part(raw, keys_bytes), REQUEST_CONTEXT
        )
        if keys.generation != 0 or keys.site_id != fingerprint(keys.sig_public):
            raise InvalidEnvelope("a new site's id must be the fingerprint of its first key")
        registry = self._directory.registry
        if registry.get_site(keys.site_id) is not None:
            raise InvalidEnvelope(f"site {keys.site_id.hex()} is already enrolled")
        digest = hashlib.sha3_256(raw).digest()
        expires_at = registry.token_expiry(digest)
        now = time.time() if now is None else now
        site = keys.site_id.hex()
        if expires_at is None:
            raise InvalidToken(f"enrollment token is unknown or already used (site {site})")
        if now >= expires_at:
            raise InvalidToken(f"enrollment token has expired (site {site})")
        secret, challenge = keys.kem_key(self._provider).encapsulate()
        expected = _proof(secret, keys.site_id, challenge)
        pending = PendingEnrollment(
            keys, digest, challenge, _proof_hash(expected), now + self._challenge_seconds
        )
        stored = registry.put_pending(pending, now, MAX_PENDING_PER_TOKEN)
        if stored is None:
            raise InvalidToken(
                f"{MAX_PENDING_PER_TOKEN} other sites are enrolling with this token (site {site})"
            )
        return stored, stored.proof_hash == pending.proof_hash

    def complete(self, site_id: bytes, proof: bytes, now: float | None = None) -> SiteRecord:
        """Register the site once it has proved it holds its KEM key; spends the token.

        A wrong proof leaves the enrollment pending, so that a stranger who knows the
        (public) site id cannot cancel it; ``max_failed_proofs`` wrong ones end it."""
        registry, site = self._directory.registry, site_id.hex()
        pending = registry.get_pending(site_id)
        if pending is None:
            raise InvalidToken(f"no enrollment in progress for site {site}")
        now = time.time() if now is None else now
        if now >= pending.expires_at:
            registry.drop_pending(pending)
            raise InvalidToken(f"the enrollment challenge of site {site} has expired")
        if not hmac.compare_digest(_proof_hash(proof), pending.proof_hash):
            failures = registry.fail_pending(pending, self._max_failed_proofs)
            left = 0 if failures is None else self._max_failed_proofs - failures
            if left > 0:
                raise InvalidSignature(
                    f"KEM key possession proof of site {site} failed ({left} attempts left)"
                )
            raise InvalidSignature(
                f"KEM key possession proof of site {site} failed; its enrollment has ended"
            )
        record = SiteRecord(pending.keys, SiteStatus.ACTIVE, now)
        outcome = registry.finish_enrollment(pending, record)
        if outcome is EnrollmentOutcome.TOKEN_USED:
            raise InvalidToken(f"enrollment token is unknown or already used (site {site})")
        if outcome is EnrollmentOutcome.ALREADY_ENROLLED:
            raise InvalidEnvelope(f"site {site} is already enrolled")
        if outcome is not EnrollmentOutcome.ENROLLED:
            raise InvalidToken(f"no enrollment in progress for site {site}")
        return record
