"""Enrollment with one-time tokens and proof of possession of both keys."""

from __future__ import annotations

import hashlib

import pytest

from fedge.security import (
    DecryptionFailed,
    EnrollmentAuthority,
    InvalidEnvelope,
    InvalidSignature,
    InvalidToken,
    KeyDirectory,
    MemoryRegistry,
    SiteIdentity,
    SiteStatus,
    enrollment_request,
    prove_possession,
    token_hash,
)
from fedge.security._composite import CompositeSigningKey
from fedge.security._enrollment import REQUEST_SIZE
from fedge.security._identity import SiteIdentity as _SiteIdentity
from tests.security.helpers import flip


@pytest.fixture
def authority(coordinator: SiteIdentity) -> EnrollmentAuthority:
    return EnrollmentAuthority(coordinator, KeyDirectory(MemoryRegistry()), challenge_seconds=60)


def _enroll(
    authority: EnrollmentAuthority, coordinator: SiteIdentity, identity: SiteIdentity, now: float
) -> None:
    token = authority.issue_token(ttl_seconds=100, now=now)
    request = enrollment_request(identity, token, coordinator.public_keys())
    challenge = authority.begin(request, now=now)
    authority.complete(identity.site_id, prove_possession(identity, challenge), now=now)


def test_full_enrollment(authority: EnrollmentAuthority, coordinator: SiteIdentity) -> None:
    newcomer = SiteIdentity.generate()
    _enroll(authority, coordinator, newcomer, now=0.0)
    record = authority._directory.record(newcomer.site_id)
    assert record.status is SiteStatus.ACTIVE and record.keys == newcomer.public_keys()


def test_only_the_token_hash_is_stored(coordinator: SiteIdentity) -> None:
    registry = MemoryRegistry()
    token = EnrollmentAuthority(coordinator, KeyDirectory(registry)).issue_token(now=0.0)
    assert (
        token_hash(token)
        == hashlib.sha3_256(
            __import__("base64").urlsafe_b64decode(token.split(".", 1)[1] + "==")
        ).digest()
    )
    assert list(registry._tokens) == [token_hash(token)]
    assert token.encode() not in repr(registry._tokens).encode()


def test_expired_token(authority: EnrollmentAuthority, coordinator: SiteIdentity) -> None:
    newcomer = SiteIdentity.generate()
    token = authority.issue_token(ttl_seconds=10, now=0.0)
    request = enrollment_request(newcomer, token, coordinator.public_keys())
    with pytest.raises(InvalidToken, match="expired"):
        authority.begin(request, now=10.0)


def test_reused_token(authority: EnrollmentAuthority, coordinator: SiteIdentity) -> None:
    token = authority.issue_token(now=0.0)
    first, second = SiteIdentity.generate(), SiteIdentity.generate()
    authority.begin(enrollment_request(first, token, coordinator.public_keys()), now=1.0)
    with pytest.raises(InvalidToken, match="unknown or already used"):
        authority.begin(enrollment_request(second, token, coordinator.public_keys()), now=1.0)


def test_unknown_and_malformed_tokens(
    authority: EnrollmentAuthority, coordinator: SiteIdentity
) -> None:
    newcomer = SiteIdentity.generate()
    forged = "fedge-enroll-v1." + "A" * 43
    with pytest.raises(InvalidToken, match="unknown"):
        authority.begin(enrollment_request(newcomer, forged, coordinator.public_keys()))
    for bad, reason in (
        ("nonsense", "not a fedge"),
        ("fedge-enroll-v1.A", "base64url"),
        ("fedge-enroll-v1.AAAA", "wrong length"),
    ):
        with pytest.raises(InvalidToken, match=reason):
            enrollment_request(newcomer, bad, coordinator.public_keys())
    with pytest.raises(InvalidToken):
        authority.issue_token(ttl_seconds=0)


def test_wrong_kem_proof_and_no_pending(
    authority: EnrollmentAuthority, coordinator: SiteIdentity
) -> None:
    newcomer = SiteIdentity.generate()
    token = authority.issue_token()
    challenge = authority.begin(enrollment_request(newcomer, token, coordinator.public_keys()))
    impostor = _SiteIdentity(
        newcomer.site_id, 0, newcomer.signing_key, SiteIdentity.generate().kem_key
    )
    with pytest.raises(InvalidSignature, match="possession"):
        authority.complete(newcomer.site_id, prove_possession(impostor, challenge))
    with pytest.raises(InvalidToken, match="no enrollment in progress"):
        authority.complete(newcomer.site_id, prove_possession(newcomer, challenge))


def test_challenge_expiry(authority: EnrollmentAuthority, coordinator: SiteIdentity) -> None:
    newcomer = SiteIdentity.generate()
    token = authority.issue_token(now=0.0)
    request = enrollment_request(newcomer, token, coordinator.public_keys())
    challenge = authority.begin(request, now=0.0)
    with pytest.raises(InvalidToken, match="challenge has expired"):
        authority.complete(newcomer.site_id, prove_possession(newcomer, challenge), now=61.0)


def test_site_id_must_be_key_fingerprint(
    authority: EnrollmentAuthority, coordinator: SiteIdentity
) -> None:
    real = SiteIdentity.generate()
    squatter = _SiteIdentity(b"\x00" * 16, 0, real.signing_key, real.kem_key)
    token = authority.issue_token()
    with pytest.raises(InvalidEnvelope, match="fingerprint"):
        authority.begin(enrollment_request(squatter, token, coordinator.public_keys()))


def test_signature_must_match_the_keys(
    authority: EnrollmentAuthority, coordinator: SiteIdentity
) -> None:
    """A request whose keys are not the signer's fails proof of possession."""
    real = SiteIdentity.generate()
    liar = _SiteIdentity(real.site_id, 0, CompositeSigningKey.generate(), real.kem_key)
    liar._public = real.public_keys()  # claims real's public keys, signs with another key
    token = authority.issue_token()
    with pytest.raises(InvalidSignature):
        authority.begin(enrollment_request(liar, token, coordinator.public_keys()))
    # the token survives a failed signature check: it is spent only by a valid request
    authority.begin(enrollment_request(real, token, coordinator.public_keys()))


def test_already_enrolled(authority: EnrollmentAuthority, coordinator: SiteIdentity) -> None:
    newcomer = SiteIdentity.generate()
    _enroll(authority, coordinator, newcomer, now=0.0)
    with pytest.raises(InvalidEnvelope, match="already enrolled"):
        _enroll(authority, coordinator, newcomer, now=0.0)


def test_tampered_request(authority: EnrollmentAuthority, coordinator: SiteIdentity) -> None:
    newcomer = SiteIdentity.generate()
    token = authority.issue_token()
    request = enrollment_request(newcomer, token, coordinator.public_keys())
    assert len(request) == REQUEST_SIZE
    for position in (3, 6, 7, 100, 2000, REQUEST_SIZE - 1):
        with pytest.raises((InvalidEnvelope, DecryptionFailed)):
            authority.begin(flip(request, position))
    with pytest.raises(InvalidEnvelope):
        authority.begin(request[:-1])
    authority.begin(request)  # the genuine request still works: nothing was spent


def test_request_sealed_to_unknown_authority_generation(
    authority: EnrollmentAuthority, coordinator: SiteIdentity
) -> None:
    rotated, _ = coordinator.rotate()
    token = authority.issue_token()
    request = enrollment_request(SiteIdentity.generate(), token, rotated.public_keys())
    with pytest.raises(InvalidEnvelope, match="generation 1"):
        authority.begin(request)


def test_enrollment_request_with_unknown_suite(coordinator: SiteIdentity) -> None:
    from fedge.security import UnsupportedSuite

    token = "fedge-enroll-v1." + "A" * 43
    with pytest.raises(UnsupportedSuite):
        enrollment_request(SiteIdentity.generate(), token, coordinator.public_keys(), suite=3)  # type: ignore[arg-type]
