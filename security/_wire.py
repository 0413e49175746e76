"""Wire constants shared by both envelope modes and the handshake (see docs/security.md)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from fedge.security._errors import InvalidEnvelope, UnsupportedSuite

VERSION: Final = 1


class Mode(IntEnum):
    SESSION = 1
    ONESHOT = 2
    HANDSHAKE_INIT = 0x10
    HANDSHAKE_RESPONSE = 0x11
    ENROLLMENT = 0x20


class Suite(IntEnum):
    """X-Wing + MLDSA65-Ed25519 + HKDF-SHA-256, and one AEAD."""

    XWING_AES256GCM = 1
    XWING_CHACHA20POLY1305 = 2


AEAD_OF_SUITE: Final = {
    Suite.XWING_AES256GCM: "AES-256-GCM",
    Suite.XWING_CHACHA20POLY1305: "ChaCha20-Poly1305",
}


class ContentType(IntEnum):
    """What the payload is; bound into the AEAD so it cannot be relabelled."""

    MODEL_UPDATE = 1
    GLOBAL_MODEL = 2
    CONTROL = 3
    METRICS = 4
    ENROLLMENT = 5


#: version, mode, suite, content type, round id, session id, sequence.
SESSION_HEADER: Final = struct.Struct(">BBBBI8sQ")
#: version, mode, suite, content type, round id, sender, sender generation,
#: recipient, recipient generation, sequence.
ONESHOT_HEADER: Final = struct.Struct(">BBBBI16sI16sIQ")
TAG_SIZE: Final = 16


@dataclass(frozen=True)
class Opened:
    """A verified, decrypted envelope."""

    sender: bytes
    content_type: ContentType
    round_id: int
    sequence: int
    plaintext: bytes


def check_prefix(data: bytes, mode: Mode, minimum: int) -> Suite:
    """Validate length, version, mode and suite before anything else is read."""
    if len(data) < minimum:
        raise InvalidEnvelope(f"message too short: {len(data)} < {minimum} bytes")
    if data[0] != VERSION:
        raise UnsupportedSuite(f"unsupported version {data[0]}")
    if data[1] != mode:
        raise InvalidEnvelope(f"expected a {mode.name} message, got mode {data[1]}")
    try:
        return Suite(data[2])
    except ValueError:
        raise UnsupportedSuite(f"unsupported suite {data[2]}") from None


def content_type_of(data: bytes) -> ContentType:
    try:
        return ContentType(data[3])
    except ValueError:
        raise InvalidEnvelope(f"unknown content type {data[3]}") from None


def suite_of(value: int) -> Suite:
    """A caller-supplied suite, as a typed error when it is not one we speak."""
    try:
        return Suite(value)
    except ValueError:
        raise UnsupportedSuite(f"unsupported suite {value!r}") from None


def content_type_for_sealing(value: int) -> ContentType:
    try:
        return ContentType(value)
    except ValueError:
        raise InvalidEnvelope(f"unknown content type {value!r}") from None


def check_round(round_id: int) -> None:
    if not 0 <= round_id < 2**32:
        raise InvalidEnvelope("round id must fit in 32 bits")
