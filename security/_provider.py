"""Crypto providers: one small interface, a default on ``cryptography`` and an optional liboqs one.

Only the post-quantum primitives differ between providers; X25519, Ed25519, HKDF and the
AEADs always come from ``cryptography`` (liboqs has none of them), so the liboqs provider
inherits them. Keys cross the interface as bytes, and every failure is a typed error.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import importlib.util
import io
import os
from pathlib import Path
from typing import Any, Final, Protocol

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedge.security._errors import (
    DecryptionFailed,
    InvalidKey,
    InvalidSignature,
    ProviderUnavailable,
    UnsupportedSuite,
)

PROVIDER_ENV: Final = "FEDGE_CRYPTO_PROVIDER"

#: name -> (public key, ciphertext) sizes in bytes (FIPS 203).
MLKEM_SIZES: Final = {"ML-KEM-768": (1184, 1088), "ML-KEM-1024": (1568, 1568)}
#: name -> (public key, signature) sizes in bytes (FIPS 204).
MLDSA_SIZES: Final = {
    "ML-DSA-44": (1312, 2420),
    "ML-DSA-65": (1952, 3309),
    "ML-DSA-87": (2592, 4627),
}
AEAD_NAMES: Final = ("AES-256-GCM", "ChaCha20-Poly1305")


class KemPublicKey(Protocol):
    def encapsulate(self) -> tuple[bytes, bytes]:
        """Return (shared_secret, ciphertext), whatever the provider's native order."""
        ...

    def public_bytes(self) -> bytes: ...


class KemPrivateKey(Protocol):
    def decapsulate(self, ciphertext: bytes) -> bytes: ...

    def public_bytes(self) -> bytes: ...


class SigPrivateKey(Protocol):
    def sign(self, data: bytes, context: bytes) -> bytes: ...

    def public_bytes(self) -> bytes: ...

    def private_bytes(self) -> bytes:
        """The provider's private form (the 32-byte seed for ``cryptography``)."""
        ...


class Aead(Protocol):
    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes) -> bytes: ...

    def encrypt_after(
        self, prefix: bytes, nonce: bytes, data: bytes, associated_data: bytes
    ) -> bytes:
        """``prefix || encrypt(...)`` written in one buffer (no large concatenation)."""
        ...

    def decrypt(
        self,
        nonce: bytes | memoryview,
        data: bytes | memoryview,
        associated_data: bytes | memoryview,
    ) -> bytes: ...


class Provider(Protocol):
    """What the protocol layers need from a crypto library."""

    name: str

    def kem_from_seed(self, alg: str, seed: bytes) -> KemPrivateKey: ...

    def kem_public(self, alg: str, public: bytes) -> KemPublicKey: ...

    def sig_generate(self, alg: str) -> SigPrivateKey: ...

    def sig_from_private(self, alg: str, private: bytes) -> SigPrivateKey: ...

    def sig_verify(
        self, alg: str, public: bytes, signature: bytes, data: bytes, context: bytes
    ) -> None: ...

    def x25519_private(self, private: bytes) -> x25519.X25519PrivateKey: ...

    def x25519_public(self, public: bytes) -> x25519.X25519PublicKey: ...

    def ed25519_private(self, private: bytes) -> ed25519.Ed25519PrivateKey: ...

    def ed25519_verify(self, public: bytes, signature: bytes, data: bytes) -> None: ...

    def hkdf(
        self, ikm: bytes, salt: bytes, info: bytes, length: int, sha3: bool = False
    ) -> bytes: ...

    def aead(self, name: str, key: bytes) -> Aead: ...


def _check_size(what: str, data: bytes, size: int) -> None:
    if len(data) != size:
        raise InvalidKey(f"{what} must be {size} bytes, got {len(data)}")


class _CryptographyKemPublic:
    __slots__ = ("_key", "_raw")

    def __init__(self, key: mlkem.MLKEM768PublicKey | mlkem.MLKEM1024PublicKey, raw: bytes):
        self._key = key
        self._raw = raw

    def encapsulate(self) -> tuple[bytes, bytes]:
        return self._key.encapsulate()

    def public_bytes(self) -> bytes:
        return self._raw


class _CryptographyKemPrivate:
    __slots__ = ("_ct_size", "_key", "_public")

    def __init__(
        self, key: mlkem.MLKEM768PrivateKey | mlkem.MLKEM1024PrivateKey, ct_size: int
    ) -> None:
        self._key = key
        self._ct_size = ct_size
        self._public = key.public_key().public_bytes_raw()

    def decapsulate(self, ciphertext: bytes) -> bytes:
        if len(ciphertext) != self._ct_size:
            raise DecryptionFailed(f"ML-KEM ciphertext must be {self._ct_size} bytes")
        return self._key.decapsulate(ciphertext)

    def public_bytes(self) -> bytes:
        return self._public


class _CryptographySigPrivate:
    __slots__ = ("_key", "_public")

    def __init__(self, key: Any) -> None:
        self._key = key
        self._public: bytes = key.public_key().public_bytes_raw()

    def sign(self, data: bytes, context: bytes) -> bytes:
        signature: bytes = self._key.sign(data, context)
        return signature

    def public_bytes(self) -> bytes:
        return self._public

    def private_bytes(self) -> bytes:
        seed: bytes = self._key.private_bytes_raw()
        return seed


_MLKEM_PRIVATE: Final[dict[str, Any]] = {
    "ML-KEM-768": mlkem.MLKEM768PrivateKey,
    "ML-KEM-1024": mlkem.MLKEM1024PrivateKey,
}
_MLKEM_PUBLIC: Final[dict[str, Any]] = {
    "ML-KEM-768": mlkem.MLKEM768PublicKey,
    "ML-KEM-1024": mlkem.MLKEM1024PublicKey,
}
_MLDSA_PRIVATE: Final[dict[str, Any]] = {
    "ML-DSA-44": mldsa.MLDSA44PrivateKey,
    "ML-DSA-65": mldsa.MLDSA65PrivateKey,
    "ML-DSA-87": mldsa.MLDSA87PrivateKey,
}
_MLDSA_PUBLIC: Final[dict[str, Any]] = {
    "ML-DSA-44": mldsa.MLDSA44PublicKey,
    "ML-DSA-65": mldsa.MLDSA65PublicKey,
    "ML-DSA-87": mldsa.MLDSA87PublicKey,
}


def _kem_sizes(alg: str) -> tuple[int, int]:
    try:
        return MLKEM_SIZES[alg]
    except KeyError:
        raise UnsupportedSuite(f"unknown KEM {alg!r}") from None


def _sig_sizes(alg: str) -> tuple[int, int]:
    try:
        return MLDSA_SIZES[alg]
    except KeyError:
        raise UnsupportedSuite(f"unknown signature algorithm {alg!r}") from None


class CryptographyProvider:
    """The default: pyca/cryptography >= 50 on OpenSSL, every primitive fedge needs."""

    name = "cryptography"

    def kem_from_seed(self, alg: str, seed: bytes) -> KemPrivateKey:
        _, ct_size = _kem_sizes(alg)
        _check_size(f"{alg} seed", seed, 64)
        return _CryptographyKemPrivate(_MLKEM_PRIVATE[alg].from_seed_bytes(seed), ct_size)

    def kem_public(self, alg: str, public: bytes) -> KemPublicKey:
        pk_size, _ = _kem_sizes(alg)
        _check_size(f"{alg} public key", public, pk_size)
        try:
            key = _MLKEM_PUBLIC[alg].from_public_bytes(public)
        except ValueError as exc:
            raise InvalidKey(f"{alg} public key does not parse") from exc
        return _CryptographyKemPublic(key, bytes(public))

    def sig_generate(self, alg: str) -> SigPrivateKey:
        _sig_sizes(alg)
        return _CryptographySigPrivate(_MLDSA_PRIVATE[alg].generate())

    def sig_from_private(self, alg: str, private: bytes) -> SigPrivateKey:
        _sig_sizes(alg)
        _check_size(f"{alg} seed", private, 32)
        return _CryptographySigPrivate(_MLDSA_PRIVATE[alg].from_seed_bytes(private))

    def sig_verify(
        self, alg: str, public: bytes, signature: bytes, data: bytes, context: bytes
    ) -> None:
        pk_size, sig_size = _sig_sizes(alg)
        _check_size(f"{alg} public key", public, pk_size)
        if len(signature) != sig_size:
            raise InvalidSignature(f"{alg} signature must be {sig_size} bytes")
        try:
            _MLDSA_PUBLIC[alg].from_public_bytes(public).verify(signature, data, context)
        except _CryptoInvalidSignature as exc:
            raise InvalidSignature(f"{alg} signature does not verify") from exc
        except ValueError as exc:
            raise InvalidKey(f"{alg} public key does not parse") from exc

    def x25519_private(self, private: bytes) -> x25519.X25519PrivateKey:
        _check_size("X25519 private key", private, 32)
        return x25519.X25519PrivateKey.from_private_bytes(private)

    def x25519_public(self, public: bytes) -> x25519.X25519PublicKey:
        _check_size("X25519 public key", public, 32)
        return x25519.X25519PublicKey.from_public_bytes(public)

    def ed25519_private(self, private: bytes) -> ed25519.Ed25519PrivateKey:
        _check_size("Ed25519 private key", private, 32)
        return ed25519.Ed25519PrivateKey.from_private_bytes(private)

    def ed25519_verify(self, public: bytes, signature: bytes, data: bytes) -> None:
        _check_size("Ed25519 public key", public, 32)
        if len(signature) != 64:
            raise InvalidSignature("Ed25519 signature must be 64 bytes")
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(public).verify(signature, data)
        except _CryptoInvalidSignature as exc:
            raise InvalidSignature("Ed25519 signature does not verify") from exc
        except ValueError as exc:
            raise InvalidKey("Ed25519 public key does not parse") from exc

    def hkdf(self, ikm: bytes, salt: bytes, info: bytes, length: int, sha3: bool = False) -> bytes:
        algorithm: hashes.HashAlgorithm = hashes.SHA3_256() if sha3 else hashes.SHA256()
        return HKDF(algorithm=algorithm, length=length, salt=salt, info=info).derive(ikm)

    def aead(self, name: str, key: bytes) -> Aead:
        _check_size(f"{name} key", key, 32)
        if name == "AES-256-GCM":
            return _TypedAead(AESGCM(key))
        if name == "ChaCha20-Poly1305":
            return _TypedAead(ChaCha20Poly1305(key))
        raise UnsupportedSuite(f"unknown AEAD {name!r}")


class _TypedAead:
    """Wraps a pyca AEAD so a bad tag surfaces as ``DecryptionFailed``."""

    __slots__ = ("_aead",)

    def __init__(self, aead: AESGCM | ChaCha20Poly1305) -> None:
        self._aead = aead

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes) -> bytes:
        return self._aead.encrypt(nonce, data, associated_data)

    def encrypt_after(
        self, prefix: bytes, nonce: bytes, data: bytes, associated_data: bytes
    ) -> bytes:
        # One preallocated buffer: for 512 KiB this is ~6x faster than concatenating
        # a fresh ciphertext, whose pages the kernel must fault in and zero.
        buf = bytearray(len(prefix) + len(data) + 16)
        buf[: len(prefix)] = prefix
        self._aead.encrypt_into(nonce, data, associated_data, memoryview(buf)[len(prefix) :])
        return bytes(buf)

    def decrypt(
        self,
        nonce: bytes | memoryview,
        data: bytes | memoryview,
        associated_data: bytes | memoryview,
    ) -> bytes:
        try:
            return self._aead.decrypt(nonce, data, associated_data)
        except InvalidTag as exc:
            raise DecryptionFailed("AEAD tag does not verify") from exc


def find_liboqs() -> str | None:
    """Where liboqs-python would find its shared library, without importing it."""
    candidates: list[Path] = []
    install = os.environ.get("OQS_INSTALL_PATH")
    if install:
        candidates += [Path(install) / "lib", Path(install) / "lib64"]
    home = Path.home() / "_oqs"
    candidates += [home / "lib", home / "lib64"]
    for directory in candidates:
        for pattern in ("liboqs.so*", "liboqs.dylib", "oqs.dll"):
            found = sorted(directory.glob(pattern))
            if found:
                return str(found[0])
    return ctypes.util.find_library("oqs")


def _import_oqs() -> Any:
    """Import liboqs-python only once its native library is known to exist."""
    if find_liboqs() is None:
        raise ProviderUnavailable(
            "liboqs shared library not found (set OQS_INSTALL_PATH to a liboqs 0.16 build)"
        )
    if importlib.util.find_spec("oqs") is None:
        raise ProviderUnavailable("liboqs-python is not installed: pip install 'fedge[oqs]'")
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a banner on import
        import oqs
    return oqs


class OqsProvider(CryptographyProvider):
    """ML-KEM and ML-DSA from liboqs; classical and symmetric parts from ``cryptography``.

    liboqs keeps expanded ML-DSA private keys and has no seeded key generation, so keys
    generated here (``sig_generate``) stay here; seed-form keys load through
    ``cryptography``. Public keys, ciphertexts and signatures move freely.
    """

    name = "oqs"

    def __init__(self) -> None:
        self._oqs = _import_oqs()

    def kem_from_seed(self, alg: str, seed: bytes) -> KemPrivateKey:
        _, ct_size = _kem_sizes(alg)
        _check_size(f"{alg} seed", seed, 64)
        kem = self._oqs.KeyEncapsulation(alg)
        public = kem.generate_keypair_seed(seed)
        return _OqsKemPrivate(kem, bytes(public), ct_size)

    def kem_public(self, alg: str, public: bytes) -> KemPublicKey:
        pk_size, _ = _kem_sizes(alg)
        _check_size(f"{alg} public key", public, pk_size)
        return _OqsKemPublic(self._oqs.KeyEncapsulation(alg), bytes(public))

    def sig_generate(self, alg: str) -> SigPrivateKey:
        _sig_sizes(alg)
        signer = self._oqs.Signature(alg)
        public = signer.generate_keypair()
        return _OqsSigPrivate(signer, bytes(public))

    def sig_from_private(self, alg: str, private: bytes) -> SigPrivateKey:
        """Seed-form keys (the composite draft's private format) load through
        ``cryptography``: liboqs cannot expand an ML-DSA seed."""
        return super().sig_from_private(alg, private)

    def sig_verify(
        self, alg: str, public: bytes, signature: bytes, data: bytes, context: bytes
    ) -> None:
        pk_size, sig_size = _sig_sizes(alg)
        _check_size(f"{alg} public key", public, pk_size)
        if len(signature) != sig_size:
            raise InvalidSignature(f"{alg} signature must be {sig_size} bytes")
        with self._oqs.Signature(alg) as verifier:
            ok = verifier.verify_with_ctx_str(data, signature, context, public)
        if not ok:
            raise InvalidSignature(f"{alg} signature does not verify")


class _OqsKemPublic:
    __slots__ = ("_kem", "_raw")

    def __init__(self, kem: Any, raw: bytes) -> None:
        self._kem = kem
        self._raw = raw

    def encapsulate(self) -> tuple[bytes, bytes]:
        ciphertext, secret = self._kem.encap_secret(self._raw)  # liboqs order: (ct, ss)
        return bytes(secret), bytes(ciphertext)

    def public_bytes(self) -> bytes:
        return self._raw


class _OqsKemPrivate:
    __slots__ = ("_ct_size", "_kem", "_public")

    def __init__(self, kem: Any, public: bytes, ct_size: int) -> None:
        self._kem = kem
        self._public = public
        self._ct_size = ct_size

    def decapsulate(self, ciphertext: bytes) -> bytes:
        if len(ciphertext) != self._ct_size:
            raise DecryptionFailed(f"ML-KEM ciphertext must be {self._ct_size} bytes")
        return bytes(self._kem.decap_secret(ciphertext))

    def public_bytes(self) -> bytes:
        return self._public


class _OqsSigPrivate:
    __slots__ = ("_public", "_signer")

    def __init__(self, signer: Any, public: bytes) -> None:
        self._signer = signer
        self._public = public

    def sign(self, data: bytes, context: bytes) -> bytes:
        return bytes(self._signer.sign_with_ctx_str(data, context))

    def public_bytes(self) -> bytes:
        return self._public

    def private_bytes(self) -> bytes:
        return bytes(self._signer.export_secret_key())


_DEFAULT: CryptographyProvider | None = None


def get_provider(name: str | None = None) -> Provider:
    """The provider named, else ``$FEDGE_CRYPTO_PROVIDER``, else ``cryptography``."""
    global _DEFAULT  # noqa: PLW0603 - one stateless default instance is enough
    chosen = name or os.environ.get(PROVIDER_ENV) or "cryptography"
    if chosen == "cryptography":
        if _DEFAULT is None:
            _DEFAULT = CryptographyProvider()
        return _DEFAULT
    if chosen == "oqs":
        return OqsProvider()
    raise ProviderUnavailable(f"unknown crypto provider {chosen!r} (cryptography or oqs)")
