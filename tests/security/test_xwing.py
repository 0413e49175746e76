"""X-Wing against draft-connolly-cfrg-xwing-kem-10's own vectors, plus properties."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.security import DecryptionFailed, InvalidKey, XWingPrivateKey, XWingPublicKey
from tests.security.conftest import shared_vector


def _vectors() -> list[dict[str, str]]:
    data: list[dict[str, str]] = json.loads(
        shared_vector("xwing-draft-connolly-cfrg-xwing-kem-10.json").read_text()
    )
    return data


def test_xwing_draft10_vectors() -> None:
    vectors = _vectors()
    assert len(vectors) == 3
    for v in vectors:
        seed = bytes.fromhex(v["seed"])
        key = XWingPrivateKey(seed)
        assert key.seed_bytes().hex() == v["sk"]  # draft -10: sk is the 32-byte seed
        assert key.public_bytes().hex() == v["pk"]  # pk_M || pk_X from SHAKE256(seed, 96)
        assert key.decapsulate(bytes.fromhex(v["ct"])).hex() == v["ss"]


def test_xwing_encapsulation_from_eseed_where_the_provider_allows() -> None:
    """Only the X25519 half of encapsulation can be pinned: no provider exposes
    deterministic ML-KEM encapsulation, so ct_X is compared and the whole round trips."""
    for v in _vectors():
        public = XWingPublicKey(bytes.fromhex(v["pk"]))
        secret, ciphertext = public.encapsulate(bytes.fromhex(v["eseed"]))
        assert ciphertext[1088:].hex() == v["ct"][2 * 1088 :]
        assert XWingPrivateKey(bytes.fromhex(v["seed"])).decapsulate(ciphertext) == secret


@settings(max_examples=25, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32))
def test_round_trip_any_seed(seed: bytes) -> None:
    key = XWingPrivateKey(seed)
    secret, ciphertext = key.public_key().encapsulate()
    assert len(ciphertext) == 1120 and len(secret) == 32
    assert key.decapsulate(ciphertext) == secret


def test_tampered_ciphertext_gives_another_secret() -> None:
    key = XWingPrivateKey.generate()
    secret, ciphertext = key.public_key().encapsulate()
    for position in (0, 1087, 1088, 1119):  # ML-KEM part and X25519 part
        bad = bytearray(ciphertext)
        bad[position] ^= 1
        assert key.decapsulate(bytes(bad)) != secret


@pytest.mark.parametrize("size", [0, 31, 33])
def test_bad_seed_size(size: int) -> None:
    with pytest.raises(InvalidKey):
        XWingPrivateKey(b"\x00" * size)


def test_bad_public_key_and_ciphertext_sizes() -> None:
    with pytest.raises(InvalidKey):
        XWingPublicKey(b"\x00" * 1215)
    with pytest.raises(DecryptionFailed):
        XWingPrivateKey.generate().decapsulate(b"\x00" * 1119)
    with pytest.raises(InvalidKey):
        XWingPrivateKey.generate().public_key().encapsulate(b"\x00" * 40)


def test_low_order_x25519_points_are_refused() -> None:
    key = XWingPrivateKey.generate()
    zero_point = key.public_bytes()[:1184] + b"\x00" * 32
    with pytest.raises(InvalidKey):
        XWingPublicKey(zero_point).encapsulate()
    _, ciphertext = key.public_key().encapsulate()
    with pytest.raises(DecryptionFailed):
        key.decapsulate(ciphertext[:1088] + b"\x00" * 32)
