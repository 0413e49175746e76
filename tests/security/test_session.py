"""Session envelopes: round trips, tampering, replay, reordering, rekeying, revocation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.security import (
    SESSION_OVERHEAD,
    ContentType,
    DecryptionFailed,
    InvalidEnvelope,
    KeyDirectory,
    ReplayDetected,
    RevokedSender,
    SessionPolicy,
    SiteIdentity,
    UnsupportedSuite,
)
from fedge.security._session import Session
from fedge.security._wire import Suite
from tests.security.helpers import flip, handshake


def test_overhead_is_40_bytes(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    mine, _ = handshake(site, coordinator, directory)
    for size in (0, 1, 16384):
        assert len(mine.seal(b"x" * size, ContentType.MODEL_UPDATE)) - size == SESSION_OVERHEAD
    assert SESSION_OVERHEAD == 40


def test_header_fields_round_trip(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    mine, theirs = handshake(site, coordinator, directory)
    for seq in range(3):
        opened = theirs.open(mine.seal(b"w", ContentType.METRICS, round_id=2**32 - 1))
        assert (opened.sender, opened.content_type, opened.round_id, opened.sequence) == (
            site.site_id,
            ContentType.METRICS,
            2**32 - 1,
            seq,
        )


def test_every_single_byte_flip_is_rejected(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    mine, theirs = handshake(site, coordinator, directory)
    envelope = mine.seal(b"federated update " * 8, ContentType.MODEL_UPDATE, round_id=7)
    for position in range(len(envelope)):
        for mask in (0x01, 0x80):
            with pytest.raises(
                (InvalidEnvelope, UnsupportedSuite, DecryptionFailed, ReplayDetected)
            ):
                theirs.open(flip(envelope, position, mask))
    assert theirs.open(envelope).plaintext == b"federated update " * 8  # state untouched


def test_truncation_and_unknown_content_type(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    mine, theirs = handshake(site, coordinator, directory)
    envelope = mine.seal(b"", ContentType.CONTROL)
    with pytest.raises(InvalidEnvelope, match="too short"):
        theirs.open(envelope[:-1])
    with pytest.raises(InvalidEnvelope, match="content type"):
        theirs.open(envelope[:3] + b"\xee" + envelope[4:])
    with pytest.raises(InvalidEnvelope, match="round id"):
        mine.seal(b"", ContentType.CONTROL, round_id=2**32)
    with pytest.raises(InvalidEnvelope, match="content type"):
        mine.seal(b"", 99)  # type: ignore[arg-type]


def test_replay_and_reorder(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    mine, theirs = handshake(site, coordinator, directory, SessionPolicy(window=8))
    envelopes = [mine.seal(bytes([i]), ContentType.MODEL_UPDATE) for i in range(20)]
    theirs.open(envelopes[0])
    with pytest.raises(ReplayDetected, match="already accepted"):
        theirs.open(envelopes[0])
    theirs.open(envelopes[10])
    theirs.open(envelopes[5])  # reordered, but inside the window of 8
    with pytest.raises(ReplayDetected, match="behind the replay window"):
        theirs.open(envelopes[2])  # reordered beyond the window
    with pytest.raises(ReplayDetected):
        theirs.open(envelopes[5])


def test_envelope_of_another_session(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    mine, _ = handshake(site, coordinator, directory)
    _, other = handshake(site, coordinator, directory)
    with pytest.raises(InvalidEnvelope, match="session"):
        other.open(mine.seal(b"x", ContentType.CONTROL))


def test_suite_mismatch_and_unknown_suite(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    mine, theirs = handshake(site, coordinator, directory)
    envelope = mine.seal(b"x", ContentType.CONTROL)
    with pytest.raises(InvalidEnvelope, match="suite"):
        theirs.open(envelope[:2] + bytes([Suite.XWING_CHACHA20POLY1305]) + envelope[3:])
    with pytest.raises(UnsupportedSuite):
        theirs.open(envelope[:2] + b"\x09" + envelope[3:])
    with pytest.raises(UnsupportedSuite, match="version"):
        theirs.open(b"\x02" + envelope[1:])


def test_chacha_suite_sessions(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    from fedge.security import Initiator, Responder

    initiator = Initiator(site, coordinator.public_keys(), suite=Suite.XWING_CHACHA20POLY1305)
    response, theirs = Responder(coordinator, directory).respond(initiator.start())
    mine = initiator.finish(response)
    assert theirs.suite is Suite.XWING_CHACHA20POLY1305
    assert theirs.open(mine.seal(b"chacha", ContentType.CONTROL)).plaintext == b"chacha"


def test_rekey_after_message_count(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    mine, theirs = handshake(site, coordinator, directory, SessionPolicy(rekey_messages=4))
    envelopes = [mine.seal(bytes([i]), ContentType.MODEL_UPDATE) for i in range(13)]
    assert mine.send_epoch == 3
    for i in (0, 1, 5, 4, 9):  # across epochs, slightly out of order
        assert theirs.open(envelopes[i]).plaintext == bytes([i])
    assert theirs.receive_epoch == 2
    assert theirs.open(envelopes[7]).plaintext == bytes([7])  # previous epoch still open
    with pytest.raises(ReplayDetected, match="erased"):
        theirs.open(envelopes[3])  # two epochs back: keys erased (forward secrecy)


def test_rekey_after_age_jumps_to_next_epoch(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    mine, theirs = handshake(site, coordinator, directory, SessionPolicy(rekey_messages=1000))
    clock = [0.0]
    mine._clock = lambda: clock[0]
    mine._send_started = 0.0
    first = mine.seal(b"a", ContentType.CONTROL)
    clock[0] = 4000.0  # older than the default 3600 s
    second = mine.seal(b"b", ContentType.CONTROL)
    assert mine.send_epoch == 1
    assert theirs.open(first).sequence == 0
    assert theirs.open(second).sequence == 1000
    assert theirs.receive_epoch == 1


def test_epoch_too_far_ahead(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    mine, theirs = handshake(site, coordinator, directory, SessionPolicy(rekey_messages=1))
    envelopes = [mine.seal(b"x", ContentType.CONTROL) for _ in range(18)]
    with pytest.raises(InvalidEnvelope, match="too far ahead"):
        theirs.open(envelopes[17])
    assert theirs.open(envelopes[16]).sequence == 16


def test_revocation_stops_a_live_session(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    mine, theirs = handshake(site, coordinator, directory)
    theirs.open(mine.seal(b"before", ContentType.MODEL_UPDATE))
    directory.revoke(site.site_id)
    with pytest.raises(RevokedSender):
        theirs.open(mine.seal(b"after", ContentType.MODEL_UPDATE))


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        SessionPolicy(window=0)
    with pytest.raises(ValueError):
        SessionPolicy(rekey_seconds=0)


def test_sequence_exhaustion_is_typed(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    from fedge.security import SecurityError

    mine, _ = handshake(site, coordinator, directory, SessionPolicy(rekey_messages=2**70))
    mine._seq = 2**64
    with pytest.raises(SecurityError, match="exhausted"):
        mine.seal(b"x", ContentType.CONTROL)


@pytest.fixture(scope="module")
def pair(site: SiteIdentity, coordinator: SiteIdentity) -> tuple[Session, Session]:
    directory = KeyDirectory()
    directory.register(site.public_keys())
    return handshake(site, coordinator, directory)


@settings(max_examples=50, deadline=None)
@given(
    payload=st.binary(max_size=4096),
    content_type=st.sampled_from(list(ContentType)),
    round_id=st.integers(0, 2**32 - 1),
)
def test_round_trip_property(
    pair: tuple[Session, Session], payload: bytes, content_type: ContentType, round_id: int
) -> None:
    mine, theirs = pair
    opened = theirs.open(mine.seal(payload, content_type, round_id))
    assert (opened.plaintext, opened.content_type, opened.round_id) == (
        payload,
        content_type,
        round_id,
    )
