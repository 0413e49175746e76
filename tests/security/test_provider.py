"""Provider selection, the liboqs guard, typed AEAD failures, and cross-provider interop."""

from __future__ import annotations

import ctypes.util
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from fedge.security import (
    CryptographyProvider,
    DecryptionFailed,
    InvalidKey,
    ProviderUnavailable,
    UnsupportedSuite,
    get_provider,
)
from fedge.security import _provider as provider_module

ROOT = Path(__file__).resolve().parents[2]


def _no_liboqs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OQS_INSTALL_PATH", str(tmp_path / "nowhere"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)


def test_default_provider_and_env_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDGE_CRYPTO_PROVIDER", raising=False)
    assert get_provider().name == "cryptography"
    assert isinstance(get_provider("cryptography"), CryptographyProvider)
    monkeypatch.setenv("FEDGE_CRYPTO_PROVIDER", "nonsense")
    with pytest.raises(ProviderUnavailable, match="unknown crypto provider"):
        get_provider()


def test_oqs_without_library_is_a_typed_error_and_never_imports_oqs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_liboqs(monkeypatch, tmp_path)
    monkeypatch.delitem(sys.modules, "oqs", raising=False)
    assert provider_module.find_liboqs() is None
    with pytest.raises(ProviderUnavailable, match="liboqs shared library not found"):
        get_provider("oqs")
    assert "oqs" not in sys.modules


def test_find_liboqs_looks_in_oqs_install_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_liboqs(monkeypatch, tmp_path)
    lib = tmp_path / "nowhere" / "lib"
    lib.mkdir(parents=True)
    (lib / "liboqs.so.9").write_bytes(b"")
    assert provider_module.find_liboqs() == str(lib / "liboqs.so.9")
    home_lib = tmp_path / "_oqs" / "lib"
    home_lib.mkdir(parents=True)
    monkeypatch.delenv("OQS_INSTALL_PATH")
    (home_lib / "liboqs.so").write_bytes(b"")
    assert provider_module.find_liboqs() == str(home_lib / "liboqs.so")


def test_library_present_but_bindings_missing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_liboqs(monkeypatch, tmp_path)
    monkeypatch.setattr(provider_module, "find_liboqs", lambda: "/x/liboqs.so")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ProviderUnavailable, match="liboqs-python is not installed"):
        get_provider("oqs")


def test_importing_fedge_and_security_never_imports_oqs() -> None:
    code = "import sys, fedge, security, security._cli; print('oqs' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("name", ["AES-256-GCM", "ChaCha20-Poly1305"])
def test_aead_round_trip_and_typed_failure(name: str) -> None:
    aead = CryptographyProvider().aead(name, b"k" * 32)
    sealed = aead.encrypt(b"n" * 12, b"payload", b"aad")
    assert aead.decrypt(b"n" * 12, sealed, b"aad") == b"payload"
    with pytest.raises(DecryptionFailed):
        aead.decrypt(b"n" * 12, sealed, b"other aad")


def test_aead_and_algorithm_validation() -> None:
    provider = CryptographyProvider()
    with pytest.raises(InvalidKey):
        provider.aead("AES-256-GCM", b"short")
    with pytest.raises(UnsupportedSuite):
        provider.aead("AES-128-CBC", b"k" * 32)
    with pytest.raises(UnsupportedSuite):
        provider.kem_from_seed("ML-KEM-512", b"\x00" * 64)
    with pytest.raises(UnsupportedSuite):
        provider.sig_generate("ML-DSA-99")


def test_hkdf_sha256_and_sha3_differ() -> None:
    provider = CryptographyProvider()
    a = provider.hkdf(b"ikm", b"salt", b"info", 32)
    b = provider.hkdf(b"ikm", b"salt", b"info", 32, sha3=True)
    assert len(a) == len(b) == 32 and a != b


# --- interop: runs only where OQS_INSTALL_PATH points at a liboqs 0.16 build ---

requires_liboqs = pytest.mark.skipif(
    provider_module.find_liboqs() is None,
    reason="liboqs shared library absent (set OQS_INSTALL_PATH to a liboqs 0.16 build)",
)


@requires_liboqs
def test_mlkem768_interop_both_ways() -> None:
    ours, theirs = CryptographyProvider(), get_provider("oqs")
    seed = bytes(range(64))
    a, b = ours.kem_from_seed("ML-KEM-768", seed), theirs.kem_from_seed("ML-KEM-768", seed)
    assert a.public_bytes() == b.public_bytes()
    secret, ct = theirs.kem_public("ML-KEM-768", a.public_bytes()).encapsulate()
    assert a.decapsulate(ct) == secret
    secret, ct = ours.kem_public("ML-KEM-768", b.public_bytes()).encapsulate()
    assert b.decapsulate(ct) == secret


@requires_liboqs
def test_mldsa65_interop_both_ways() -> None:
    ours, theirs = CryptographyProvider(), get_provider("oqs")
    a, b = ours.sig_generate("ML-DSA-65"), theirs.sig_generate("ML-DSA-65")
    theirs.sig_verify("ML-DSA-65", a.public_bytes(), a.sign(b"m", b"c"), b"m", b"c")
    ours.sig_verify("ML-DSA-65", b.public_bytes(), b.sign(b"m", b"c"), b"m", b"c")
