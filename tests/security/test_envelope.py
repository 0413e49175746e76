"""One-shot sealed envelopes: store-and-forward with a KEM to the recipient and a signature."""

from __future__ import annotations

import pytest

from fedge.security import (
    ONESHOT_OVERHEAD,
    ContentType,
    DecryptionFailed,
    InvalidEnvelope,
    InvalidSignature,
    KeyDirectory,
    OneShotOpener,
    OneShotSealer,
    ReplayDetected,
    RevokedSender,
    SiteIdentity,
    UnknownSender,
    UnsupportedSuite,
)
from fedge.security._composite import SIGNATURE_SIZE, CompositeSigningKey
from fedge.security._envelope import SIGNATURE_CONTEXT
from fedge.security._wire import ONESHOT_HEADER
from tests.security.helpers import flip


def test_round_trip_and_overhead(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    sealer = OneShotSealer(site, first_sequence=5)
    envelope = sealer.seal(coordinator.public_keys(), b"weights", ContentType.MODEL_UPDATE, 3)
    assert len(envelope) - len(b"weights") == ONESHOT_OVERHEAD == 4565
    opened = OneShotOpener(coordinator, directory).open(envelope)
    assert (opened.sender, opened.content_type, opened.round_id, opened.sequence) == (
        site.site_id,
        ContentType.MODEL_UPDATE,
        3,
        5,
    )
    assert opened.plaintext == b"weights"


def test_every_single_byte_flip_is_rejected(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    envelope = OneShotSealer(site).seal(coordinator.public_keys(), b"u" * 32, ContentType.CONTROL)
    opener = OneShotOpener(coordinator, directory)
    allowed = (
        InvalidEnvelope,
        UnsupportedSuite,
        UnknownSender,
        RevokedSender,
        InvalidSignature,
        DecryptionFailed,
    )
    for position in range(len(envelope)):
        with pytest.raises(allowed):
            opener.open(flip(envelope, position))
    assert opener.open(envelope).plaintext == b"u" * 32


def test_wrong_recipient(
    site: SiteIdentity, other_site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    envelope = OneShotSealer(site).seal(other_site.public_keys(), b"x", ContentType.CONTROL)
    with pytest.raises(InvalidEnvelope, match="addressed"):
        OneShotOpener(coordinator, directory).open(envelope)


def test_unknown_and_revoked_senders(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    stranger = SiteIdentity.generate()
    opener = OneShotOpener(coordinator, directory)
    with pytest.raises(UnknownSender):
        opener.open(
            OneShotSealer(stranger).seal(coordinator.public_keys(), b"x", ContentType.CONTROL)
        )
    envelope = OneShotSealer(site).seal(coordinator.public_keys(), b"x", ContentType.CONTROL)
    directory.revoke(site.site_id)
    with pytest.raises(RevokedSender):
        opener.open(envelope)


def test_replay_and_reorder_beyond_window(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    sealer = OneShotSealer(site, first_sequence=0)
    envelopes = [
        sealer.seal(coordinator.public_keys(), bytes([i]), ContentType.METRICS) for i in range(6)
    ]
    opener = OneShotOpener(coordinator, directory, window=4)
    opener.open(envelopes[0])
    with pytest.raises(ReplayDetected):
        opener.open(envelopes[0])
    opener.open(envelopes[5])
    opener.open(envelopes[3])
    with pytest.raises(ReplayDetected, match="behind"):
        opener.open(envelopes[1])


def test_forged_sender_with_own_signature_cannot_decrypt(
    site: SiteIdentity, other_site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    """An enrolled site that re-labels someone's envelope as its own and re-signs it gets
    nothing: the AEAD key is bound to the header, sender included."""
    envelope = OneShotSealer(site).seal(coordinator.public_keys(), b"secret", ContentType.CONTROL)
    body = bytearray(envelope[:-SIGNATURE_SIZE])
    body[8:24] = other_site.site_id
    forged = bytes(body) + other_site.signing_key.sign(bytes(body), SIGNATURE_CONTEXT)
    with pytest.raises(DecryptionFailed):
        OneShotOpener(coordinator, directory).open(forged)


def test_signature_by_unregistered_key(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    envelope = OneShotSealer(site).seal(coordinator.public_keys(), b"x", ContentType.CONTROL)
    body = envelope[:-SIGNATURE_SIZE]
    resigned = body + CompositeSigningKey.generate().sign(body, SIGNATURE_CONTEXT)
    with pytest.raises(InvalidSignature):
        OneShotOpener(coordinator, directory).open(resigned)


def test_sender_rotation_grace(coordinator: SiteIdentity, directory: KeyDirectory) -> None:
    old = SiteIdentity.generate()
    directory.register(old.public_keys(), now=0.0)
    stale = OneShotSealer(old).seal(coordinator.public_keys(), b"old", ContentType.CONTROL)
    new, statement = old.rotate()
    directory.rotate(statement, now=10.0)
    fresh = OneShotSealer(new).seal(coordinator.public_keys(), b"new", ContentType.CONTROL)
    assert OneShotOpener(coordinator, directory).open(fresh, now=20.0).plaintext == b"new"
    assert OneShotOpener(coordinator, directory).open(stale, now=20.0).plaintext == b"old"
    with pytest.raises(RevokedSender, match="not accepted"):
        OneShotOpener(coordinator, directory).open(stale, now=110.0)


def test_recipient_rotation_keeps_previous_key(site: SiteIdentity, directory: KeyDirectory) -> None:
    old = SiteIdentity.generate()
    envelope = OneShotSealer(site).seal(old.public_keys(), b"in flight", ContentType.CONTROL)
    new, _ = old.rotate()
    assert OneShotOpener(new, directory).open(envelope).plaintext == b"in flight"
    with pytest.raises(InvalidEnvelope, match="generation 0"):
        OneShotOpener(new.forget_previous(), directory).open(envelope)


def test_short_and_wrong_mode(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    opener = OneShotOpener(coordinator, directory)
    envelope = OneShotSealer(site).seal(coordinator.public_keys(), b"", ContentType.CONTROL)
    with pytest.raises(InvalidEnvelope, match="too short"):
        opener.open(envelope[: ONESHOT_HEADER.size])
    with pytest.raises(InvalidEnvelope, match="mode"):
        opener.open(envelope[:1] + b"\x01" + envelope[2:])
    with pytest.raises(InvalidEnvelope, match="round id"):
        OneShotSealer(site).seal(coordinator.public_keys(), b"", ContentType.CONTROL, -1)


def test_sealing_validates_caller_input(site: SiteIdentity, coordinator: SiteIdentity) -> None:
    with pytest.raises(UnsupportedSuite):
        OneShotSealer(site, suite=9)  # type: ignore[arg-type]
    with pytest.raises(InvalidEnvelope, match="content type"):
        OneShotSealer(site).seal(coordinator.public_keys(), b"", 0)  # type: ignore[arg-type]
