"""Enrollment with one-time tokens and proof of possession of both keys."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

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
from fedge.security._enrollment import MAX_PENDING_PER_TOKEN, REQUEST_SIZE
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
    challenge = authority.begin(enrollment_request(first, token, coordinator.public_keys()), 1.0)
    authority.complete(first.site_id, prove_possession(first, challenge), now=1.0)
    with pytest.raises(InvalidToken, match="unknown or already used"):
        authority.begin(enrollment_request(second, token, coordinator.public_keys()), now=1.0)


def test_begin_does_not_spend_the_token(
    authority: EnrollmentAuthority, coordinator: SiteIdentity
) -> None:
    """Two sites may begin with one token; the first correct proof spends it, and the
    other enrollment, which can no longer succeed, ends."""
    token = authority.issue_token(now=0.0)
    first, second = SiteIdentity.generate(), SiteIdentity.generate()
    challenges = [
        authority.begin(enrollment_request(s, token, coordinator.public_keys()), now=1.0)
        for s in (first, second)
    ]
    authority.complete(second.site_id, prove_possession(second, challenges[1]), now=2.0)
    with pytest.raises(InvalidToken, match="already used"):
        authority.complete(first.site_id, prove_possession(first, challenges[0]), now=2.0)
    with pytest.raises(InvalidToken, match="no enrollment in progress"):
        authority.complete(first.site_id, prove_possession(first, challenges[0]), now=2.0)
    assert authority._directory.registry.get_site(first.site_id) is None


def test_concurrent_completions_with_one_token_admit_one_site(
    authority: EnrollmentAuthority, coordinator: SiteIdentity
) -> None:
    token = authority.issue_token()
    sites = [SiteIdentity.generate() for _ in range(6)]
    proofs = [
        prove_possession(
            s, authority.begin(enrollment_request(s, token, coordinator.public_keys()))
        )
        for s in sites
    ]

    def complete(index: int) -> str:
        try:
            authority.complete(sites[index].site_id, proofs[index])
        except InvalidToken as exc:
            return str(exc)
        return "enrolled"

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(complete, range(6)))
    assert outcomes.count("enrolled") == 1
    assert sum("already used" in o for o in outcomes) == 5
    registry = authority._directory.registry
    assert sum(registry.get_site(s.site_id) is not None for s in sites) == 1


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


def test_a_wrong_proof_leaves_the_enrollment_pending(
    authority: EnrollmentAuthority, coordinator: SiteIdentity
) -> None:
    """The site id is public: a stranger's bogus proof must not cancel the enrollment."""
    newcomer = SiteIdentity.generate()
    token = authority.issue_token()
    challenge = authority.begin(enrollment_request(newcomer, token, coordinator.public_keys()))
    impostor = _SiteIdentity(
        newcomer.site_id, 0, newcomer.signing_key, SiteIdentity.generate().kem_key
    )
    with pytest.raises(InvalidSignature, match=r"possession .* failed \(4 attempts left\)"):
        authority.complete(newcomer.site_id, prove_possession(impostor, challenge))
    with pytest.raises(InvalidSignature, match="3 attempts left"):
        authority.complete(newcomer.site_id, b"")
    authority.complete(newcomer.site_id, prove_possession(newcomer, challenge))
    assert authority._directory.record(newcomer.site_id).keys == newcomer.public_keys()


def test_too_many_wrong_proofs_end_the_enrollment_but_keep_the_token(
    authority: EnrollmentAuthority, coordinator: SiteIdentity
) -> None:
    newcomer = SiteIdentity.generate()
    token = authority.issue_token()
    request = enrollment_request(newcomer, token, coordinator.public_keys())
    challenge = authority.begin(request)
    for left in (4, 3, 2, 1):
        with pytest.raises(InvalidSignature, match=f"{left} attempts left"):
            authority.complete(newcomer.site_id, b"\x00" * 32)
    with pytest.raises(InvalidSignature, match="enrollment has ended"):
        authority.complete(newcomer.site_id, b"\x00" * 32)
    with pytest.raises(InvalidToken, match="no enrollment in progress"):
        authority.complete(newcomer.site_id, prove_possession(newcomer, challenge))
    # the token was not spent: the site begins again and completes
    again = authority.begin(request)
    assert again != challenge
    authority.complete(newcomer.site_id, prove_possession(newcomer, again))


def test_a_repeated_request_gets_the_same_challenge_and_keeps_its_count(
    authority: EnrollmentAuthority, coordinator: SiteIdentity
) -> None:
    """A site that lost the challenge (or an eavesdropper replaying its request) gets the
    same one again, so neither resets the count of wrong proofs nor voids the first."""
    newcomer = SiteIdentity.generate()
    request = enrollment_request(newcomer, authority.issue_token(), coordinator.public_keys())
    challenge = authority.begin(request)
    for _ in range(4):
        with pytest.raises(InvalidSignature):
            authority.complete(newcomer.site_id, b"")
    assert authority.begin(request) == challenge
    with pytest.raises(InvalidSignature, match="enrollment has ended"):
        authority.complete(newcomer.site_id, b"")


def test_one_token_holds_a_bounded_number_of_enrollments(
    authority: EnrollmentAuthority, coordinator: SiteIdentity
) -> None:
    """Beginning spends nothing, so one token (a stolen one too) may open only
    ``MAX_PENDING_PER_TOKEN`` pending enrollments until their challenges expire."""
    token = authority.issue_token(ttl_seconds=1000, now=0.0)
    for _ in range(MAX_PENDING_PER_TOKEN):
        authority.begin(
            enrollment_request(SiteIdentity.generate(), token, coordinator.public_keys()), 0.0
        )
    late = enrollment_request(SiteIdentity.generate(), token, coordinator.public_keys())
    with pytest.raises(InvalidToken, match="other sites are enrolling with this token"):
        authority.begin(late, now=1.0)
    authority.begin(late, now=60.0)  # the others' challenges have expired


def test_a_request_with_another_token_replaces_the_challenge(
    authority: EnrollmentAuthority, coordinator: SiteIdentity
) -> None:
    newcomer = SiteIdentity.generate()
    first = authority.begin(
        enrollment_request(newcomer, authority.issue_token(), coordinator.public_keys())
    )
    second = authority.begin(
        enrollment_request(newcomer, authority.issue_token(), coordinator.public_keys())
    )
    assert second != first
    with pytest.raises(InvalidSignature):
        authority.complete(newcomer.site_id, prove_possession(newcomer, first))
    authority.complete(newcomer.site_id, prove_possession(newcomer, second))


def test_another_authority_on_the_registry_completes_the_enrollment(
    coordinator: SiteIdentity,
) -> None:
    """What a second worker or a restarted coordinator is: a new authority object."""
    directory = KeyDirectory(MemoryRegistry())
    newcomer = SiteIdentity.generate()
    first = EnrollmentAuthority(coordinator, directory)
    challenge = first.begin(
        enrollment_request(newcomer, first.issue_token(), coordinator.public_keys())
    )
    EnrollmentAuthority(coordinator, directory).complete(
        newcomer.site_id, prove_possession(newcomer, challenge)
    )
    assert directory.record(newcomer.site_id).status is SiteStatus.ACTIVE


def test_the_registry_keeps_a_hash_of_the_proof_only(
    coordinator: SiteIdentity,
) -> None:
    registry = MemoryRegistry()
    authority = EnrollmentAuthority(coordinator, KeyDirectory(registry))
    newcomer = SiteIdentity.generate()
    token = authority.issue_token()
    challenge = authority.begin(enrollment_request(newcomer, token, coordinator.public_keys()))
    proof = prove_possession(newcomer, challenge)
    pending = registry.get_pending(newcomer.site_id)
    assert pending is not None and pending.challenge == challenge
    assert pending.proof_hash == hashlib.sha256(proof).digest()
    assert proof not in repr(registry._pending).encode()
    assert token_hash(token) not in registry._used  # begun, not spent


def test_max_failed_proofs_must_be_positive(coordinator: SiteIdentity) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        EnrollmentAuthority(coordinator, KeyDirectory(), max_failed_proofs=0)


def test_challenge_expiry(authority: EnrollmentAuthority, coordinator: SiteIdentity) -> None:
    newcomer = SiteIdentity.generate()
    token = authority.issue_token(now=0.0)
    request = enrollment_request(newcomer, token, coordinator.public_keys())
    challenge = authority.begin(request, now=0.0)
    with pytest.raises(InvalidToken, match=r"challenge of site \w+ has expired"):
        authority.complete(newcomer.site_id, prove_possession(newcomer, challenge), now=61.0)
    with pytest.raises(InvalidToken, match="no enrollment in progress"):
        authority.complete(newcomer.site_id, prove_possession(newcomer, challenge), now=61.0)
    # the token survives an expired challenge: the same request begins afresh
    fresh = authority.begin(request, now=62.0)
    assert fresh != challenge
    authority.complete(newcomer.site_id, prove_possession(newcomer, fresh), now=62.0)


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


def test_an_enrolled_site_does_not_spend_a_token(
    authority: EnrollmentAuthority, coordinator: SiteIdentity
) -> None:
    """Checked before the token: a site that enrolls twice leaves its token usable."""
    enrolled = SiteIdentity.generate()
    _enroll(authority, coordinator, enrolled, now=0.0)
    token = authority.issue_token(now=0.0)
    with pytest.raises(InvalidEnvelope, match="already enrolled"):
        authority.begin(enrollment_request(enrolled, token, coordinator.public_keys()), now=1.0)
    newcomer = SiteIdentity.generate()
    challenge = authority.begin(
        enrollment_request(newcomer, token, coordinator.public_keys()), now=1.0
    )
    authority.complete(newcomer.site_id, prove_possession(newcomer, challenge), now=1.0)


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
