"""The KEMTLS-style handshake: mutual implicit authentication, single use, typed failures."""

from __future__ import annotations

import pytest

from fedge.security import (
    AlreadyUsed,
    ContentType,
    DecryptionFailed,
    Initiator,
    InvalidEnvelope,
    KeyDirectory,
    Responder,
    RevokedSender,
    SecurityError,
    SiteIdentity,
    UnknownSender,
    UnsupportedSuite,
)
from fedge.security._handshake import INIT_SIZE, RESPONSE_SIZE
from tests.security.helpers import flip, handshake


def test_handshake_gives_matching_directional_keys(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    mine, theirs = handshake(site, coordinator, directory)
    assert mine.session_id == theirs.session_id
    assert mine.peer == coordinator.site_id and theirs.peer == site.site_id
    assert theirs.open(mine.seal(b"up", ContentType.MODEL_UPDATE)).plaintext == b"up"
    assert mine.open(theirs.seal(b"down", ContentType.GLOBAL_MODEL)).plaintext == b"down"
    # the directions use different keys: an envelope cannot be reflected to its sender
    with pytest.raises(DecryptionFailed):
        mine.open(mine.seal(b"reflected", ContentType.CONTROL))


def test_message_sizes(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    initiator = Initiator(site, coordinator.public_keys())
    init = initiator.start()
    response, _ = Responder(coordinator, directory).respond(init)
    assert (len(init), len(response)) == (INIT_SIZE, RESPONSE_SIZE) == (2379, 2267)


def test_objects_are_single_use(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    initiator = Initiator(site, coordinator.public_keys())
    with pytest.raises(AlreadyUsed):
        initiator.finish(b"\x00" * RESPONSE_SIZE)
    init = initiator.start()
    with pytest.raises(AlreadyUsed):
        initiator.start()
    responder = Responder(coordinator, directory)
    response, _ = responder.respond(init)
    with pytest.raises(AlreadyUsed):
        responder.respond(init)
    initiator.finish(response)
    with pytest.raises(AlreadyUsed):
        initiator.finish(response)


def test_impostor_initiator_cannot_derive_keys(
    site: SiteIdentity, other_site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    """other_site claims to be site: the responder encapsulates to site's real key."""
    impostor_identity = SiteIdentity(
        site.site_id, site.generation, other_site.signing_key, other_site.kem_key
    )
    initiator = Initiator(impostor_identity, coordinator.public_keys())
    response, _ = Responder(coordinator, directory).respond(initiator.start())
    with pytest.raises(DecryptionFailed):
        initiator.finish(response)


def test_impostor_responder_is_detected(
    site: SiteIdentity, other_site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    """A responder without the coordinator's KEM key cannot produce the finished tag."""
    fake = SiteIdentity(
        coordinator.site_id, coordinator.generation, other_site.signing_key, other_site.kem_key
    )
    initiator = Initiator(site, coordinator.public_keys())
    response, _ = Responder(fake, directory).respond(initiator.start())
    with pytest.raises(DecryptionFailed, match="key confirmation"):
        initiator.finish(response)


def test_unknown_and_revoked_initiators(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    stranger = SiteIdentity.generate()
    with pytest.raises(UnknownSender):
        Responder(coordinator, directory).respond(
            Initiator(stranger, coordinator.public_keys()).start()
        )
    directory.revoke(site.site_id)
    with pytest.raises(RevokedSender):
        Responder(coordinator, directory).respond(
            Initiator(site, coordinator.public_keys()).start()
        )


def test_initiator_refuses_revoked_responder(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    directory.revoke(coordinator.site_id)
    with pytest.raises(RevokedSender):
        Initiator(site, coordinator.public_keys(), directory=directory).start()


def test_misaddressed_handshake(
    site: SiteIdentity, other_site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    init = Initiator(site, other_site.public_keys()).start()
    with pytest.raises(InvalidEnvelope, match="addressed"):
        Responder(coordinator, directory).respond(init)


def test_every_init_header_byte_and_samples_of_the_rest_are_checked(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    """A tampered init is refused by the responder or yields keys the initiator rejects."""
    positions = [*range(43), 43, 500, 1162, 1163, 2000, INIT_SIZE - 1]
    for position in positions:
        initiator = Initiator(site, coordinator.public_keys())
        bad = flip(initiator.start(), position)
        try:
            response, _ = Responder(coordinator, directory).respond(bad, now=0.0)
        except SecurityError:
            continue
        with pytest.raises(SecurityError):
            initiator.finish(response)


def test_every_response_byte_flip_is_rejected(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    for position in range(RESPONSE_SIZE):
        initiator = Initiator(site, coordinator.public_keys())
        response, _ = Responder(coordinator, directory).respond(initiator.start())
        with pytest.raises((InvalidEnvelope, UnsupportedSuite, DecryptionFailed)):
            initiator.finish(flip(response, position))


def test_bad_lengths(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    with pytest.raises(InvalidEnvelope):
        Responder(coordinator, directory).respond(b"\x01\x10\x01")
    initiator = Initiator(site, coordinator.public_keys())
    initiator.start()
    with pytest.raises(InvalidEnvelope):
        initiator.finish(b"\x01" * 10)


def test_rotation_grace_for_handshakes(coordinator: SiteIdentity, directory: KeyDirectory) -> None:
    """After a site rotates, a handshake with its old generation works only during grace."""
    old = SiteIdentity.generate()
    directory.register(old.public_keys(), now=0.0)
    new, statement = old.rotate()
    directory.rotate(statement, now=0.0)
    handshake(new, coordinator, directory)
    init = Initiator(old, coordinator.public_keys()).start()
    Responder(coordinator, directory).respond(init, now=50.0)
    with pytest.raises(RevokedSender, match="generation 0"):
        Responder(coordinator, directory).respond(init, now=101.0)


def test_responder_rotation_keeps_old_generation_reachable(
    site: SiteIdentity, directory: KeyDirectory
) -> None:
    old = SiteIdentity.generate()
    directory.register(old.public_keys(), now=0.0)
    new, _ = old.rotate()
    initiator = Initiator(site, old.public_keys())  # a site that has not heard yet
    response, _ = Responder(new, directory).respond(initiator.start(), now=1.0)
    initiator.finish(response)
    stale = Initiator(site, old.public_keys()).start()
    with pytest.raises(InvalidEnvelope, match="generation"):
        Responder(new.forget_previous(), directory).respond(stale)


def test_response_may_not_change_the_suite(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    initiator = Initiator(site, coordinator.public_keys())
    response, _ = Responder(coordinator, directory).respond(initiator.start())
    with pytest.raises(InvalidEnvelope, match="changed the suite"):
        initiator.finish(response[:2] + b"\x02" + response[3:])


def test_unparsable_ephemeral_key(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    init = Initiator(site, coordinator.public_keys()).start()
    bad = init[: INIT_SIZE - 1216] + b"\xff" * 1216
    with pytest.raises(InvalidEnvelope, match="ephemeral"):
        Responder(coordinator, directory).respond(bad)


def test_low_order_ephemeral_x25519_key_is_an_invalid_envelope(
    site: SiteIdentity, coordinator: SiteIdentity, directory: KeyDirectory
) -> None:
    """The ephemeral key parses but cannot be encapsulated to: the same refusal as an
    unparsable one, not an error about our own keys."""
    init = Initiator(site, coordinator.public_keys()).start()
    bad = init[: INIT_SIZE - 32] + bytes(32)
    with pytest.raises(InvalidEnvelope, match="ephemeral"):
        Responder(coordinator, directory).respond(bad)


def test_unknown_suite_is_refused_up_front(site: SiteIdentity, coordinator: SiteIdentity) -> None:
    with pytest.raises(UnsupportedSuite):
        Initiator(site, coordinator.public_keys(), suite=7)  # type: ignore[arg-type]
