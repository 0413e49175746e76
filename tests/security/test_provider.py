"""Provider selection, the liboqs guard, typed AEAD failures, and cross-provider interop."""

from __future__ import annotations

import ctypes.util
import gc
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedge.security import (
    ContentType,
    CryptographyProvider,
    DecryptionFailed,
    InvalidKey,
    KeyDirectory,
    ProviderUnavailable,
    SiteIdentity,
    UnsupportedSuite,
    get_provider,
)
from fedge.security import _provider as provider_module
from tests.security.conftest import loadable_library
from tests.security.helpers import handshake

ROOT = Path(__file__).resolve().parents[2]


def _no_liboqs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delitem(provider_module._PROVIDERS, "oqs", raising=False)  # import afresh
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


def test_find_liboqs_follows_the_loader_and_needs_a_loadable_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_liboqs(monkeypatch, tmp_path)
    lib = tmp_path / "nowhere" / "lib"
    lib.mkdir(parents=True)
    (lib / "liboqs.so").write_bytes(b"")  # present, but the dynamic loader refuses it
    assert provider_module.find_liboqs() is None
    real = shutil.copyfile(loadable_library(), lib / "liboqs.so")
    assert provider_module.find_liboqs() == str(real)
    monkeypatch.setenv("OQS_INSTALL_PATH", "")  # set but empty: the loader's ./lib
    monkeypatch.chdir(tmp_path / "nowhere")
    assert provider_module.find_liboqs() == str(real)


def test_find_liboqs_falls_back_to_the_system_library(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_liboqs(monkeypatch, tmp_path)
    system = loadable_library()
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: str(system))
    assert provider_module.find_liboqs() is None  # $OQS_INSTALL_PATH set: only there
    monkeypatch.delenv("OQS_INSTALL_PATH")
    assert provider_module.find_liboqs() == str(system)


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
def test_oqs_mlkem768_interop_both_ways() -> None:
    ours, theirs = CryptographyProvider(), get_provider("oqs")
    seed = bytes(range(64))
    a, b = ours.kem_from_seed("ML-KEM-768", seed), theirs.kem_from_seed("ML-KEM-768", seed)
    assert a.public_bytes() == b.public_bytes()
    secret, ct = theirs.kem_public("ML-KEM-768", a.public_bytes()).encapsulate()
    assert a.decapsulate(ct) == secret
    secret, ct = ours.kem_public("ML-KEM-768", b.public_bytes()).encapsulate()
    assert b.decapsulate(ct) == secret


@requires_liboqs
def test_oqs_mldsa65_interop_both_ways() -> None:
    ours, theirs = CryptographyProvider(), get_provider("oqs")
    a, b = ours.sig_generate("ML-DSA-65"), theirs.sig_generate("ML-DSA-65")
    theirs.sig_verify("ML-DSA-65", a.public_bytes(), a.sign(b"m", b"c"), b"m", b"c")
    ours.sig_verify("ML-DSA-65", b.public_bytes(), b.sign(b"m", b"c"), b"m", b"c")


def _rss_bytes() -> int:
    statm = Path("/proc/self/statm")
    if not statm.exists():
        pytest.skip("resident set size is read from /proc/self/statm (Linux)")
    return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rss_growth(step: Callable[[], object], warm: int, runs: int) -> int:
    for _ in range(warm):
        step()
    gc.collect()
    before = _rss_bytes()
    for _ in range(runs):
        step()
    gc.collect()
    return _rss_bytes() - before


@requires_liboqs
def test_oqs_native_memory_stays_flat_over_key_operations() -> None:
    """Unfreed liboqs objects cost about 120 B per public-key parse: 20 000 parses,
    encapsulations and decapsulations would grow by well over 2 MiB."""
    oqs = get_provider("oqs")
    key = oqs.kem_from_seed("ML-KEM-768", bytes(range(64)))
    signer = oqs.sig_generate("ML-DSA-65")

    def step() -> None:
        _, ciphertext = oqs.kem_public("ML-KEM-768", key.public_bytes()).encapsulate()
        key.decapsulate(ciphertext)

    assert _rss_growth(step, 2000, 20_000) < 1 << 20

    def sign_verify() -> None:
        signature = signer.sign(b"m", b"")
        oqs.sig_verify("ML-DSA-65", signer.public_bytes(), signature, b"m", b"")

    assert _rss_growth(sign_verify, 500, 5000) < 1 << 20


@requires_liboqs
@pytest.mark.slow
def test_oqs_native_memory_stays_flat_over_handshakes() -> None:
    """Unfreed objects cost about 290 B per handshake: 20 000 would grow by over 5 MiB."""
    oqs = get_provider("oqs")
    site, coordinator = SiteIdentity.generate(oqs), SiteIdentity.generate(oqs)
    directory = KeyDirectory(provider=oqs)
    directory.register(site.public_keys())

    def step() -> None:
        mine, theirs = handshake(site, coordinator, directory)
        theirs.open(mine.seal(b"x", ContentType.METRICS))

    assert _rss_growth(step, 1000, 20_000) < 2 << 20


def _with_coefficient(public: bytes, index: int, value: int) -> bytes:
    out = bytearray(public)
    at = index // 2 * 3
    if index % 2 == 0:
        out[at], out[at + 1] = value & 0xFF, (out[at + 1] & 0xF0) | value >> 8
    else:
        out[at + 1], out[at + 2] = (out[at + 1] & 0x0F) | (value & 0x0F) << 4, value >> 4
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(
    alg=st.sampled_from(["ML-KEM-768", "ML-KEM-1024"]),
    seed=st.binary(min_size=64, max_size=64),
    index=st.integers(0, 1023),
    value=st.integers(3000, 4095) | st.integers(0, 4095),
)
def test_oqs_modulus_check_agrees_with_openssl(
    alg: str, seed: bytes, index: int, value: int
) -> None:
    """The liboqs provider's public-key check accepts exactly what OpenSSL accepts."""
    ours = CryptographyProvider()
    good = ours.kem_from_seed(alg, seed).public_bytes()
    coefficients = (len(good) - 32) * 2 // 3  # 12 bits each, then the 32-byte seed rho
    candidate = _with_coefficient(good, index % coefficients, value)
    try:
        ours.kem_public(alg, candidate)
    except InvalidKey:
        openssl_accepts = False
    else:
        openssl_accepts = True
    assert provider_module.mlkem_public_key_valid(alg, candidate) is openssl_accepts
    assert openssl_accepts is (value < 3329)
