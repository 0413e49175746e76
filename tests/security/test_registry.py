"""Site public keys, the key directory's rules, and provider-level validation."""

from __future__ import annotations

import pytest

from fedge.security import (
    CryptographyProvider,
    InvalidEnvelope,
    InvalidKey,
    InvalidSignature,
    KeyDirectory,
    RevokedSender,
    SiteIdentity,
    SitePublicKeys,
    SiteStatus,
    UnknownSender,
    XWingPublicKey,
)
from fedge.security._composite import SIGNATURE_SIZE
from fedge.security._identity import PUBLIC_KEYS_SIZE
from tests.security.helpers import flip


def test_site_public_keys_validation(site: SiteIdentity) -> None:
    keys = site.public_keys()
    assert SitePublicKeys.from_bytes(keys.to_bytes()) == keys
    assert len(keys.to_bytes()) == PUBLIC_KEYS_SIZE == 3220
    with pytest.raises(InvalidKey):
        SitePublicKeys.from_bytes(keys.to_bytes()[:-1])
    with pytest.raises(InvalidKey, match="site id"):
        SitePublicKeys(b"short", 0, keys.sig_public, keys.kem_public)
    with pytest.raises(InvalidKey, match="32 bits"):
        SitePublicKeys(keys.site_id, 2**32, keys.sig_public, keys.kem_public)
    with pytest.raises(InvalidKey, match="sizes"):
        SitePublicKeys(keys.site_id, 0, keys.sig_public[:-1], keys.kem_public)


def test_site_id_is_stable_across_rotation(site: SiteIdentity) -> None:
    rotated, _ = site.rotate()
    again, _ = rotated.rotate()
    assert site.site_id == rotated.site_id == again.site_id
    assert again.generation == 2 and again.previous is not None
    assert again.previous.generation == 1  # only one previous generation is kept
    assert rotated.public_keys().key_fingerprint() != site.public_keys().key_fingerprint()
    assert again.kem_key_for(0) is None and again.forget_previous().previous is None


def test_register_revoke_and_lookups(site: SiteIdentity) -> None:
    directory = KeyDirectory()
    with pytest.raises(UnknownSender):
        directory.record(site.site_id)
    with pytest.raises(UnknownSender):
        directory.revoke(site.site_id)
    record = directory.register(site.public_keys(), now=5.0)
    assert record.enrolled_at == 5.0 and record.status is SiteStatus.ACTIVE
    with pytest.raises(InvalidEnvelope, match="already enrolled"):
        directory.register(site.public_keys())
    assert directory.keys(site.site_id) is directory.keys(site.site_id, 0)  # cached parse
    with pytest.raises(RevokedSender, match="generation 7"):
        directory.keys(site.site_id, 7)
    directory.revoke(site.site_id)
    with pytest.raises(RevokedSender):
        directory.keys(site.site_id)


def test_rotation_statement_checks(site: SiteIdentity, other_site: SiteIdentity) -> None:
    directory = KeyDirectory(grace_seconds=10.0)
    directory.register(site.public_keys(), now=0.0)
    rotated, statement = site.rotate()
    with pytest.raises(InvalidEnvelope, match="size"):
        directory.rotate(statement[:-1])
    with pytest.raises(InvalidSignature):  # not authorised by the old key
        directory.rotate(flip(statement, PUBLIC_KEYS_SIZE + 10))
    with pytest.raises(InvalidSignature):  # no proof of possession of the new key
        directory.rotate(flip(statement, PUBLIC_KEYS_SIZE + SIGNATURE_SIZE + 10))
    _, foreign = other_site.rotate()
    with pytest.raises(UnknownSender):
        directory.rotate(foreign)
    _, skip = rotated.rotate()
    with pytest.raises(InvalidEnvelope, match="expected 1"):
        directory.rotate(skip)
    record = directory.rotate(statement, now=100.0)
    assert record.keys == rotated.public_keys() and record.previous == site.public_keys()
    assert directory.keys(site.site_id, 0, now=109.0) == site.public_keys()
    with pytest.raises(RevokedSender):
        directory.keys(site.site_id, 0, now=110.0)
    with pytest.raises(InvalidEnvelope, match="expected 2"):
        directory.rotate(statement)  # replaying an old statement


def test_provider_level_validation() -> None:
    provider = CryptographyProvider()
    with pytest.raises(InvalidKey, match="does not parse"):
        provider.kem_public("ML-KEM-768", b"\xff" * 1184)
    with pytest.raises(InvalidKey):
        XWingPublicKey(b"\xff" * 1216)
    with pytest.raises(InvalidKey):
        provider.x25519_public(b"\x00" * 31)
    with pytest.raises(InvalidKey):
        provider.x25519_private(b"\x00" * 33)
    with pytest.raises(InvalidKey):
        provider.ed25519_private(b"\x00" * 31)
    with pytest.raises(InvalidKey):
        provider.ed25519_verify(b"\x00" * 31, b"\x00" * 64, b"m")
    with pytest.raises(InvalidSignature, match="64 bytes"):
        provider.ed25519_verify(b"\x00" * 32, b"\x00" * 63, b"m")
    with pytest.raises(InvalidSignature, match="does not verify"):
        provider.ed25519_verify(b"\xff" * 32, b"\x00" * 64, b"m")
