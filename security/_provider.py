"""Crypto providers: one small interface, a default on ``cryptography`` and an optional liboqs one.

Only the post-quantum primitives differ between providers; X25519, Ed25519, HKDF and the
AEADs always come from ``cryptography`` (liboqs has none of them), so the liboqs provider
inherits them. Keys cross the interface as bytes, and every failure is a typed error:
nothing from either library (``ValueError``, liboqs-python's bare ``RuntimeError``, the
``SystemExit`` its loader raises) gets past this module.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib.util
import io
import logging
import os
import platform
import sys
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

log = logging.getLogger("fedge.security")

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


#: The longest ML-DSA context string (FIPS 204): one length byte.
MAX_CONTEXT: Final = 255
#: ML-KEM's modulus q (FIPS 203).
MLKEM_Q: Final = 3329
_MLKEM_RANK: Final = {"ML-KEM-768": 3, "ML-KEM-1024": 4}


def _check_size(what: str, data: bytes, size: int) -> None:
    if len(data) != size:
        raise InvalidKey(f"{what} must be {size} bytes, got {len(data)}")


def _check_context(alg: str, context: bytes) -> None:
    """Both providers refuse an over-long context with the same error, before any library."""
    if len(context) > MAX_CONTEXT:
        raise InvalidSignature(f"{alg} context is longer than {MAX_CONTEXT} bytes")


def _modulus_masks(rank: int) -> tuple[int, int, int]:
    """(12-bit field mask, 4096 - q per field, overflow bit per field) over 24-bit slots."""
    slots = 128 * rank  # 256 * rank coefficients, two per 3-byte slot
    return (
        int.from_bytes(b"\xff\x0f\x00" * slots, "little"),
        int.from_bytes((4096 - MLKEM_Q).to_bytes(3, "little") * slots, "little"),
        int.from_bytes(b"\x00\x10\x00" * slots, "little"),
    )


_MODULUS_MASKS: Final = {alg: _modulus_masks(rank) for alg, rank in _MLKEM_RANK.items()}


def mlkem_public_key_valid(alg: str, public: bytes) -> bool:
    """The FIPS 203 encapsulation-key modulus check: every 12-bit coefficient is below q.

    OpenSSL runs it when parsing; liboqs only when encapsulating (and then fails with a
    bare RuntimeError), so the liboqs provider runs it here. Even and odd coefficients
    sit in separate 24-bit slots, so adding ``4096 - q`` to each carries into bit 12 of
    its slot exactly when the coefficient is >= q: a few big-integer operations, no loop.
    """
    rank = _MLKEM_RANK[alg]
    mask, offset, overflow = _MODULUS_MASKS[alg]
    encoded = int.from_bytes(public[: 384 * rank], "little")
    even = (encoded & mask) + offset
    odd = ((encoded >> 12) & mask) + offset
    return not ((even | odd) & overflow)


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
    __slots__ = ("_alg", "_key", "_public")

    def __init__(self, alg: str, key: Any) -> None:
        self._alg = alg
        self._key = key
        self._public: bytes = key.public_key().public_bytes_raw()

    def sign(self, data: bytes, context: bytes) -> bytes:
        _check_context(self._alg, context)
        try:
            signature: bytes = self._key.sign(data, context)
        except ValueError as exc:
            raise InvalidSignature(f"{self._alg} signing failed") from exc
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
        return _CryptographySigPrivate(alg, _MLDSA_PRIVATE[alg].generate())

    def sig_from_private(self, alg: str, private: bytes) -> SigPrivateKey:
        _sig_sizes(alg)
        _check_size(f"{alg} seed", private, 32)
        return _CryptographySigPrivate(alg, _MLDSA_PRIVATE[alg].from_seed_bytes(private))

    def sig_verify(
        self, alg: str, public: bytes, signature: bytes, data: bytes, context: bytes
    ) -> None:
        pk_size, sig_size = _sig_sizes(alg)
        _check_size(f"{alg} public key", public, pk_size)
        if len(signature) != sig_size:
            raise InvalidSignature(f"{alg} signature must be {sig_size} bytes")
        _check_context(alg, context)
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


# --- liboqs -----------------------------------------------------------------------------

#: Where liboqs-python's loader looks inside an install prefix, by platform.
_LIBRARY_IN_PREFIX: Final = {
    "Darwin": Path("lib") / "liboqs.dylib",
    "Windows": Path("bin") / "oqs.dll",
}.get(platform.system(), Path("lib") / "liboqs.so")
#: The logger liboqs-python's module logs under is ``oqs.oqs``; this is its parent.
_OQS_LOGGER: Final = "oqs"


def _loads(library: str) -> bool:
    """Whether the dynamic loader accepts the file: the only test liboqs-python makes."""
    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


def find_liboqs() -> str | None:
    """The liboqs that liboqs-python's loader would load, or None; imports nothing.

    Exactly the loader's rules, because on a miss it counts down, runs ``git clone`` and
    builds liboqs from the internet: with ``$OQS_INSTALL_PATH`` set, only
    ``$OQS_INSTALL_PATH/lib/liboqs.so``; otherwise ``~/_oqs/lib/liboqs.so``, then
    ``ctypes.util.find_library("oqs")``. A file by another name (``liboqs.so.9``) or one
    the dynamic loader refuses does not count.
    """
    install = os.environ.get("OQS_INSTALL_PATH")
    if install is not None:
        library = str(Path(install).absolute() / _LIBRARY_IN_PREFIX)
        return library if _loads(library) else None
    with contextlib.suppress(RuntimeError):  # no home directory: the loader skips it too
        library = str(Path.home() / "_oqs" / _LIBRARY_IN_PREFIX)
        if _loads(library):
            return library
    found = ctypes.util.find_library("oqs")
    return found if found is not None and _loads(found) else None


def _quiet_oqs_loggers(banner: io.StringIO) -> None:
    """liboqs-python logs INFO lines to its own stdout handler: drop that handler and keep
    only its warnings, which still reach the application's handlers."""
    own_streams = (banner, sys.stdout, sys.__stdout__)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue
        if name != _OQS_LOGGER and not name.startswith(_OQS_LOGGER + "."):
            continue
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and handler.stream in own_streams:
                logger.removeHandler(handler)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


def _import_oqs() -> Any:
    """Import liboqs-python only once its loader is known to succeed, silently.

    Its banner goes to stdout and, through the root logger, into the application's logs:
    stdout is redirected and the ``oqs`` loggers stop propagating during the import.
    Should its loader still give up, its ``SystemExit`` becomes ``ProviderUnavailable``.
    """
    if find_liboqs() is None:
        raise ProviderUnavailable(
            "liboqs shared library not found where liboqs-python loads it "
            "($OQS_INSTALL_PATH/lib/liboqs.so, else ~/_oqs/lib/liboqs.so or the system "
            "library path; set OQS_INSTALL_PATH to a liboqs 0.16 build)"
        )
    if importlib.util.find_spec("oqs") is None:
        raise ProviderUnavailable("liboqs-python is not installed: pip install 'fedge[oqs]'")
    parent = logging.getLogger(_OQS_LOGGER)
    propagate, parent.propagate = parent.propagate, False
    banner = io.StringIO()
    try:
        with contextlib.redirect_stdout(banner):
            import oqs
    except SystemExit as exc:
        raise ProviderUnavailable(
            f"liboqs-python could not load liboqs (it exited with {exc.code!r})"
        ) from None
    except Exception as exc:
        raise ProviderUnavailable(f"liboqs-python failed to import: {exc}") from exc
    finally:
        parent.propagate = propagate
        _quiet_oqs_loggers(banner)
    if banner.getvalue().strip():
        log.debug("liboqs-python import output: %s", banner.getvalue().strip())
    return oqs


class _Liboqs:
    """The imported bindings. Every native object is made here for one operation and freed
    (its secret key cleansed) by ``with`` when it ends: liboqs-python objects have no
    ``__del__``, so one that is not freed keeps its native memory and secret forever."""

    __slots__ = ("_module", "_unsupported")

    def __init__(self, module: Any) -> None:
        self._module = module
        unsupported = getattr(module, "MechanismNotSupportedError", None)
        self._unsupported: tuple[type[BaseException], ...] = (
            (unsupported,) if isinstance(unsupported, type) else ()
        )

    def kem(self, alg: str, secret_key: bytes | None = None) -> Any:
        try:
            return self._module.KeyEncapsulation(alg, secret_key)
        except self._unsupported as exc:
            raise UnsupportedSuite(f"this liboqs build does not enable {alg}") from exc

    def sig(self, alg: str, secret_key: bytes | None = None) -> Any:
        try:
            return self._module.Signature(alg, secret_key)
        except self._unsupported as exc:
            raise UnsupportedSuite(f"this liboqs build does not enable {alg}") from exc


class OqsProvider(CryptographyProvider):
    """ML-KEM and ML-DSA from liboqs; classical and symmetric parts from ``cryptography``.

    liboqs keeps expanded ML-DSA private keys and has no seeded key generation, so keys
    generated here (``sig_generate``) stay here; seed-form keys load through
    ``cryptography``. Public keys, ciphertexts and signatures move freely. Public keys
    get the same checks as on OpenSSL, and liboqs-python's bare ``RuntimeError`` becomes
    the typed error the other provider raises.
    """

    name = "oqs"

    def __init__(self) -> None:
        self._lib = _Liboqs(_import_oqs())

    def kem_from_seed(self, alg: str, seed: bytes) -> KemPrivateKey:
        _, ct_size = _kem_sizes(alg)
        _check_size(f"{alg} seed", seed, 64)
        try:
            with self._lib.kem(alg) as kem:
                public = bytes(kem.generate_keypair_seed(seed))
                secret = bytes(kem.export_secret_key())
        except (RuntimeError, ValueError) as exc:
            raise InvalidKey(f"liboqs cannot derive an {alg} key from the seed") from exc
        return _OqsKemPrivate(self._lib, alg, secret, public, ct_size)

    def kem_public(self, alg: str, public: bytes) -> KemPublicKey:
        pk_size, _ = _kem_sizes(alg)
        _check_size(f"{alg} public key", public, pk_size)
        if not mlkem_public_key_valid(alg, public):
            raise InvalidKey(f"{alg} public key does not parse")
        return _OqsKemPublic(self._lib, alg, bytes(public))

    def sig_generate(self, alg: str) -> SigPrivateKey:
        _sig_sizes(alg)
        try:
            with self._lib.sig(alg) as signer:
                public = bytes(signer.generate_keypair())
                secret = bytes(signer.export_secret_key())
        except RuntimeError as exc:
            raise InvalidKey(f"liboqs cannot generate an {alg} key") from exc
        return _OqsSigPrivate(self._lib, alg, secret, public)

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
        _check_context(alg, context)
        try:
            with self._lib.sig(alg) as verifier:
                ok = verifier.verify_with_ctx_str(data, signature, context, public)
        except RuntimeError as exc:
            raise InvalidSignature(f"liboqs cannot verify this {alg} signature") from exc
        if not ok:
            raise InvalidSignature(f"{alg} signature does not verify")


class _OqsKemPublic:
    """A checked public key as bytes: liboqs needs no parsed object to encapsulate."""

    __slots__ = ("_alg", "_lib", "_raw")

    def __init__(self, lib: _Liboqs, alg: str, raw: bytes) -> None:
        self._lib = lib
        self._alg = alg
        self._raw = raw

    def encapsulate(self) -> tuple[bytes, bytes]:
        try:
            with self._lib.kem(self._alg) as kem:
                ciphertext, secret = kem.encap_secret(self._raw)  # liboqs order: (ct, ss)
        except RuntimeError as exc:
            raise InvalidKey(f"liboqs cannot encapsulate to this {self._alg} key") from exc
        return bytes(secret), bytes(ciphertext)

    def public_bytes(self) -> bytes:
        return self._raw


class _OqsKemPrivate:
    __slots__ = ("_alg", "_ct_size", "_lib", "_public", "_secret")

    def __init__(self, lib: _Liboqs, alg: str, secret: bytes, public: bytes, ct_size: int) -> None:
        self._lib = lib
        self._alg = alg
        self._secret = secret
        self._public = public
        self._ct_size = ct_size

    def decapsulate(self, ciphertext: bytes) -> bytes:
        if len(ciphertext) != self._ct_size:
            raise DecryptionFailed(f"ML-KEM ciphertext must be {self._ct_size} bytes")
        try:
            with self._lib.kem(self._alg, self._secret) as kem:
                return bytes(kem.decap_secret(ciphertext))
        except RuntimeError as exc:
            raise DecryptionFailed(f"liboqs cannot decapsulate with this {self._alg} key") from exc

    def public_bytes(self) -> bytes:
        return self._public


class _OqsSigPrivate:
    __slots__ = ("_alg", "_lib", "_public", "_secret")

    def __init__(self, lib: _Liboqs, alg: str, secret: bytes, public: bytes) -> None:
        self._lib = lib
        self._alg = alg
        self._secret = secret
        self._public = public

    def sign(self, data: bytes, context: bytes) -> bytes:
        _check_context(self._alg, context)
        try:
            with self._lib.sig(self._alg, self._secret) as signer:
                return bytes(signer.sign_with_ctx_str(data, context))
        except RuntimeError as exc:
            raise InvalidSignature(f"liboqs cannot sign with this {self._alg} key") from exc

    def public_bytes(self) -> bytes:
        return self._public

    def private_bytes(self) -> bytes:
        return self._secret


#: One instance per provider name: both are stateless apart from the imported bindings.
_PROVIDERS: dict[str, Provider] = {}


def get_provider(name: str | None = None) -> Provider:
    """The provider named, else ``$FEDGE_CRYPTO_PROVIDER``, else ``cryptography``."""
    chosen = name or os.environ.get(PROVIDER_ENV) or "cryptography"
    provider = _PROVIDERS.get(chosen)
    if provider is not None:
        return provider
    if chosen == "cryptography":
        provider = CryptographyProvider()
    elif chosen == "oqs":
        provider = OqsProvider()
    else:
        raise ProviderUnavailable(f"unknown crypto provider {chosen!r} (cryptography or oqs)")
    return _PROVIDERS.setdefault(chosen, provider)
