"""Composite MLDSA65-Ed25519-SHA512 against draft-ietf-lamps-pq-composite-sigs vectors."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.security import CompositeSigningKey, CompositeVerifyKey, InvalidKey, InvalidSignature
from tests.security.conftest import shared_vector


def _suite() -> tuple[dict[str, Any], bytes, bytes]:
    data = json.loads(
        shared_vector("composite-mldsa-draft-ietf-lamps-pq-composite-sigs.json").read_text()
    )
    (test,) = [t for t in data["tests"] if t["tcId"] == "id-MLDSA65-Ed25519-SHA512"]
    return test, base64.b64decode(data["m"]), base64.b64decode(data["ctx"])


@pytest.fixture(scope="module")
def key() -> CompositeSigningKey:
    return CompositeSigningKey.generate()


def test_draft_vectors_verify() -> None:
    test, message, context = _suite()
    public = CompositeVerifyKey(base64.b64decode(test["pk"]))
    public.verify(base64.b64decode(test["s"]), message)
    public.verify(base64.b64decode(test["sWithContext"]), message, context)
    with pytest.raises(InvalidSignature):
        public.verify(base64.b64decode(test["s"]), message, context)  # context is bound


def test_draft_private_key_derives_the_public_key_and_signs() -> None:
    test, message, context = _suite()
    key = CompositeSigningKey(base64.b64decode(test["sk"]))
    assert key.public_key().public_bytes() == base64.b64decode(test["pk"])
    key.public_key().verify(key.sign(message, context), message, context)


def test_each_half_must_verify(key: CompositeSigningKey) -> None:
    signature = key.sign(b"update", b"ctx")
    for position in (0, 3308, 3309, 3372):  # ML-DSA part, then Ed25519 part
        bad = bytearray(signature)
        bad[position] ^= 0x80
        with pytest.raises(InvalidSignature):
            key.public_key().verify(bytes(bad), b"update", b"ctx")


def test_mixing_halves_of_two_signatures_fails(key: CompositeSigningKey) -> None:
    """Stripping: a valid ML-DSA half with another message's Ed25519 half is refused."""
    one, two = key.sign(b"one"), key.sign(b"two")
    with pytest.raises(InvalidSignature):
        key.public_key().verify(one[:3309] + two[3309:], b"one")


def test_wrong_key_message_and_sizes(key: CompositeSigningKey) -> None:
    signature = key.sign(b"m")
    with pytest.raises(InvalidSignature):
        CompositeSigningKey.generate().public_key().verify(signature, b"m")
    with pytest.raises(InvalidSignature):
        key.public_key().verify(signature, b"n")
    with pytest.raises(InvalidSignature):
        key.public_key().verify(signature[:-1], b"m")
    with pytest.raises(InvalidSignature):
        key.sign(b"m", b"x" * 256)
    with pytest.raises(InvalidKey):
        CompositeVerifyKey(b"\x00" * 1983)
    with pytest.raises(InvalidKey):
        CompositeSigningKey(b"\x00" * 63)


@settings(max_examples=10, deadline=None)
@given(message=st.binary(max_size=512), context=st.binary(max_size=255))
def test_sign_verify_property(key: CompositeSigningKey, message: bytes, context: bytes) -> None:
    key.public_key().verify(key.sign(message, context), message, context)
