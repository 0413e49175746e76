"""X-Wing: the hybrid KEM X25519 + ML-KEM-768 of draft-connolly-cfrg-xwing-kem-10.

The session is safe if either primitive holds. The private key is the 32-byte seed;
SHAKE256 expands it to the ML-KEM-768 seed d||z (64 bytes) and the X25519 scalar.
"""

from __future__ import annotations

import hashlib
import os
from typing import Final

from fedge.security._errors import DecryptionFailed, InvalidKey
from fedge.security._provider import KemPublicKey, Provider, get_provider

LABEL: Final = b"\\.//^\\"
SEED_SIZE: Final = 32
PUBLIC_KEY_SIZE: Final = 1184 + 32
CIPHERTEXT_SIZE: Final = 1088 + 32
SHARED_SECRET_SIZE: Final = 32
_MLKEM: Final = "ML-KEM-768"
_PK_M: Final = 1184
_CT_M: Final = 1088


def _combine(ss_m: bytes, ss_x: bytes, ct_x: bytes, pk_x: bytes) -> bytes:
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + LABEL).digest()


class XWingPublicKey:
    """A parsed X-Wing encapsulation key; parse once, encapsulate many times."""

    __slots__ = ("_mlkem", "_provider", "_raw", "_x25519", "_x_raw")

    def __init__(self, public: bytes, provider: Provider | None = None) -> None:
        if len(public) != PUBLIC_KEY_SIZE:
            raise InvalidKey(f"X-Wing public key must be {PUBLIC_KEY_SIZE} bytes")
        self._provider = provider or get_provider()
        self._raw = bytes(public)
        self._mlkem: KemPublicKey = self._provider.kem_public(_MLKEM, self._raw[:_PK_M])
        self._x_raw = self._raw[_PK_M:]
        self._x25519 = self._provider.x25519_public(self._x_raw)

    def public_bytes(self) -> bytes:
        return self._raw

    def encapsulate(self, eseed: bytes | None = None) -> tuple[bytes, bytes]:
        """Return (shared_secret, ciphertext).

        ``eseed`` fixes only the X25519 half (bytes 32..64): the providers expose no
        deterministic ML-KEM encapsulation, so ML-KEM always draws fresh randomness.
        """
        ss_m, ct_m = self._mlkem.encapsulate()
        ek = eseed[32:64] if eseed is not None else os.urandom(32)
        if len(ek) != 32:
            raise InvalidKey("X-Wing eseed must be 64 bytes")
        eph = self._provider.x25519_private(ek)
        ct_x = eph.public_key().public_bytes_raw()
        try:
            ss_x = eph.exchange(self._x25519)
        except ValueError as exc:  # low-order point: OpenSSL refuses an all-zero secret
            raise InvalidKey("X25519 public key is of low order") from exc
        return _combine(ss_m, ss_x, ct_x, self._x_raw), ct_m + ct_x


class XWingPrivateKey:
    """An X-Wing decapsulation key, kept as its 32-byte seed."""

    __slots__ = ("_mlkem", "_provider", "_public", "_seed", "_x25519", "_x_raw")

    def __init__(self, seed: bytes, provider: Provider | None = None) -> None:
        if len(seed) != SEED_SIZE:
            raise InvalidKey(f"X-Wing seed must be {SEED_SIZE} bytes")
        self._provider = provider or get_provider()
        self._seed = bytes(seed)
        expanded = hashlib.shake_256(self._seed).digest(96)
        self._mlkem = self._provider.kem_from_seed(_MLKEM, expanded[:64])
        self._x25519 = self._provider.x25519_private(expanded[64:96])
        self._x_raw = self._x25519.public_key().public_bytes_raw()
        self._public = self._mlkem.public_bytes() + self._x_raw

    @classmethod
    def generate(cls, provider: Provider | None = None) -> XWingPrivateKey:
        return cls(os.urandom(SEED_SIZE), provider)

    def seed_bytes(self) -> bytes:
        return self._seed

    def public_bytes(self) -> bytes:
        return self._public

    def public_key(self) -> XWingPublicKey:
        return XWingPublicKey(self._public, self._provider)

    def decapsulate(self, ciphertext: bytes) -> bytes:
        if len(ciphertext) != CIPHERTEXT_SIZE:
            raise DecryptionFailed(f"X-Wing ciphertext must be {CIPHERTEXT_SIZE} bytes")
        ct_m, ct_x = ciphertext[:_CT_M], ciphertext[_CT_M:]
        ss_m = self._mlkem.decapsulate(ct_m)
        try:
            ss_x = self._x25519.exchange(self._provider.x25519_public(ct_x))
        except ValueError as exc:
            raise DecryptionFailed("X25519 ciphertext is of low order") from exc
        return _combine(ss_m, ss_x, ct_x, self._x_raw)
