"""Fuzzing every parser of untrusted bytes: anything but what was sealed is refused, and
only with the typed security errors."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedge.security import (
    ContentType,
    EnrollmentAuthority,
    Initiator,
    KeyDirectory,
    OneShotOpener,
    OneShotSealer,
    Responder,
    SecurityError,
    Session,
    SiteIdentity,
)
from fedge.security._handshake import INIT_SIZE, RESPONSE_SIZE
from fedge.security._keystore import decode_identity
from tests.security.helpers import handshake

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class _World:
    def __init__(self) -> None:
        self.site, self.coordinator = SiteIdentity.generate(), SiteIdentity.generate()
        self.directory = KeyDirectory()
        self.directory.register(self.site.public_keys())
        self.mine, self.theirs = handshake(self.site, self.coordinator, self.directory)
        self.session_envelope = self.mine.seal(b"payload" * 4, ContentType.MODEL_UPDATE)
        self.oneshot = OneShotSealer(self.site).seal(
            self.coordinator.public_keys(), b"payload", ContentType.CONTROL
        )
        self.opener = OneShotOpener(self.coordinator, self.directory)


@pytest.fixture(scope="module")
def world() -> _World:
    return _World()


def _refused(call: Callable[[bytes], object], data: bytes) -> None:
    """Authenticated input that is not what was sealed must raise, and only typed errors."""
    with pytest.raises(SecurityError):
        call(data)


def _mutate(base: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(base)
    for position, value in edits:
        out[position % len(out)] = value
    return bytes(out[:cut] if cut is not None else out)


edits = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8)
cuts = st.none() | st.integers(0, 5000)


@FUZZ
@given(
    data=st.binary(max_size=256)
    | st.binary(min_size=24, max_size=64).map(lambda b: b"\x01\x01\x01\x01" + b)
)
def test_session_open_random_bytes(world: _World, data: bytes) -> None:
    _refused(world.theirs.open, data)


@FUZZ
@given(edits=edits, cut=cuts)
def test_session_open_mutations(
    world: _World, edits: list[tuple[int, int]], cut: int | None
) -> None:
    data = _mutate(world.session_envelope, edits, cut)
    if data == world.session_envelope:
        return
    _refused(world.theirs.open, data)


@FUZZ
@given(data=st.binary(max_size=5000))
def test_oneshot_open_random_bytes(world: _World, data: bytes) -> None:
    _refused(world.opener.open, data)


@FUZZ
@given(edits=edits, cut=cuts)
def test_oneshot_open_mutations(
    world: _World, edits: list[tuple[int, int]], cut: int | None
) -> None:
    data = _mutate(world.oneshot, edits, cut)
    if data == world.oneshot:
        return
    _refused(world.opener.open, data)


@FUZZ
@given(edits=edits, cut=st.none() | st.integers(0, INIT_SIZE))
def test_handshake_init_mutations(
    world: _World, edits: list[tuple[int, int]], cut: int | None
) -> None:
    """The responder cannot tell every tampered init (ML-KEM decapsulates anything), but
    then the keys differ and the initiator refuses the response: no session results."""
    initiator = Initiator(world.site, world.coordinator.public_keys())
    init = initiator.start()
    data = _mutate(init, edits, cut)
    if data == init:
        return
    try:
        response, _ = Responder(world.coordinator, world.directory).respond(data)
    except SecurityError:
        return
    _refused(initiator.finish, response)


@FUZZ
@given(data=st.binary(min_size=RESPONSE_SIZE, max_size=RESPONSE_SIZE) | st.binary(max_size=64))
def test_handshake_response_random_bytes(world: _World, data: bytes) -> None:
    initiator = Initiator(world.site, world.coordinator.public_keys())
    initiator.start()
    _refused(initiator.finish, b"\x01\x11\x01" + data[3:] if len(data) > 3 else data)


@FUZZ
@given(data=st.binary(max_size=7000))
def test_enrollment_begin_random_bytes(world: _World, data: bytes) -> None:
    authority = EnrollmentAuthority(world.coordinator, world.directory)
    _refused(authority.begin, data)


@FUZZ
@given(data=st.binary(max_size=300))
def test_key_file_payload_random_bytes(data: bytes) -> None:
    """The decrypted payload is not authenticated by itself (the key file's AEAD is), so
    random bytes of the right shape may decode; anything else must be a typed error."""
    with contextlib.suppress(SecurityError):
        decode_identity(data)


def test_fuzz_world_is_live(world: _World) -> None:
    """Guards the fuzzers: the genuine inputs they mutate are accepted."""
    fresh: Session = world.theirs
    assert fresh.open(world.session_envelope).plaintext == b"payload" * 4
    assert world.opener.open(world.oneshot).plaintext == b"payload"
    initiator = Initiator(world.site, world.coordinator.public_keys())
    response, _ = Responder(world.coordinator, world.directory).respond(initiator.start())
    initiator.finish(response)
