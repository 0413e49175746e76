"""Key files: encrypted at rest, mode 0600, and every way to get them wrong is typed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fedge.security import KeyStoreError, SiteIdentity, load_identity, read_kek, save_identity
from fedge.security._keystore import decode_identity, encode_identity

KEK = b"correct horse battery staple"
FAST = 10  # scrypt log2(N) for tests; the default is 15


def test_round_trip_and_mode(tmp_path: Path, site: SiteIdentity) -> None:
    path = tmp_path / "site.key"
    save_identity(path, site, KEK, log2_n=FAST)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert site.signing_key.private_bytes() not in path.read_bytes()
    loaded = load_identity(path, KEK)
    assert loaded.public_keys() == site.public_keys()
    assert loaded.kem_key.seed_bytes() == site.kem_key.seed_bytes()


def test_rotated_identity_keeps_previous(tmp_path: Path, site: SiteIdentity) -> None:
    rotated, _ = site.rotate()
    path = tmp_path / "site.key"
    save_identity(path, rotated, KEK, log2_n=FAST)
    loaded = load_identity(path, KEK)
    assert loaded.generation == 1 and loaded.site_id == site.site_id
    assert loaded.previous is not None
    assert loaded.previous.public_keys() == site.public_keys()


def test_wrong_kek(tmp_path: Path, site: SiteIdentity) -> None:
    path = tmp_path / "site.key"
    save_identity(path, site, KEK, log2_n=FAST)
    with pytest.raises(KeyStoreError, match="wrong key-encryption key"):
        load_identity(path, b"not the right passphrase")


def test_missing_file_and_refused_overwrite(tmp_path: Path, site: SiteIdentity) -> None:
    with pytest.raises(KeyStoreError, match="no key file"):
        load_identity(tmp_path / "absent.key", KEK)
    path = tmp_path / "site.key"
    save_identity(path, site, KEK, log2_n=FAST)
    with pytest.raises(KeyStoreError, match="exists"):
        save_identity(path, site, KEK, log2_n=FAST)
    save_identity(path, site, KEK, overwrite=True, log2_n=FAST)


def test_too_open_file_is_refused(tmp_path: Path, site: SiteIdentity) -> None:
    path = tmp_path / "site.key"
    save_identity(path, site, KEK, log2_n=FAST)
    os.chmod(path, 0o644)
    with pytest.raises(KeyStoreError, match="readable by others"):
        load_identity(path, KEK)


@pytest.mark.parametrize("position", [0, 8, 9, 10, 20, 40, 60, -1])
def test_any_altered_byte_is_refused(tmp_path: Path, site: SiteIdentity, position: int) -> None:
    path = tmp_path / "site.key"
    save_identity(path, site, KEK, log2_n=FAST)
    blob = bytearray(path.read_bytes())
    blob[position] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(KeyStoreError):
        load_identity(path, KEK)


def test_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "site.key"
    path.write_bytes(b"FEDGEKEY")
    path.chmod(0o600)
    with pytest.raises(KeyStoreError, match="not a fedge key file"):
        load_identity(path, KEK)


def test_unwritable_location(tmp_path: Path, site: SiteIdentity) -> None:
    with pytest.raises(KeyStoreError, match="cannot write"):
        save_identity(tmp_path / "no" / "such" / "dir.key", site, KEK, log2_n=FAST)


def test_payload_decoding_validates(site: SiteIdentity) -> None:
    payload = encode_identity(site)
    assert decode_identity(payload).public_keys() == site.public_keys()
    with pytest.raises(KeyStoreError, match="wrong size"):
        decode_identity(payload[:-2])
    with pytest.raises(KeyStoreError, match="malformed"):
        decode_identity(payload[:-1] + b"\x01")


def test_read_kek(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDGE_KEK", "a passphrase from the environment")
    assert read_kek() == b"a passphrase from the environment"
    kek_file = tmp_path / "kek"
    kek_file.write_bytes(b"file passphrase\n")
    assert read_kek(kek_file) == b"file passphrase"
    with pytest.raises(KeyStoreError, match="cannot read"):
        read_kek(tmp_path / "absent")
    monkeypatch.setenv("FEDGE_KEK", "short")
    with pytest.raises(KeyStoreError, match="no usable key-encryption key"):
        read_kek()
    monkeypatch.delenv("FEDGE_KEK")
    with pytest.raises(KeyStoreError, match="no usable key-encryption key"):
        read_kek()


def test_out_of_range_scrypt_parameters(tmp_path: Path, site: SiteIdentity) -> None:
    path = tmp_path / "site.key"
    save_identity(path, site, KEK, log2_n=FAST)
    blob = bytearray(path.read_bytes())
    blob[10] = 40  # log2(N): 2**40 would exhaust memory; refused before scrypt runs
    path.write_bytes(bytes(blob))
    with pytest.raises(KeyStoreError, match="out-of-range"):
        load_identity(path, KEK)
    with pytest.raises(KeyStoreError, match="out-of-range"):
        save_identity(tmp_path / "other.key", site, KEK, log2_n=5)
