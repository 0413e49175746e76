"""Composite ML-DSA-65 + Ed25519 signatures, exactly ``MLDSA65-Ed25519-SHA512`` of
draft-ietf-lamps-pq-composite-sigs, so a signature stands if either algorithm holds.
"""

from __future__ import annotations

import hashlib
import os
from typing import Final

from fedge.security._errors import InvalidKey, InvalidSignature
from fedge.security._provider import Provider, SigPrivateKey, get_provider

PREFIX: Final = b"CompositeAlgorithmSignatures2025"
LABEL: Final = b"COMPSIG-MLDSA65-Ed25519-SHA512"
MLDSA_PUBLIC_SIZE: Final = 1952
MLDSA_SIGNATURE_SIZE: Final = 3309
PUBLIC_KEY_SIZE: Final = MLDSA_PUBLIC_SIZE + 32
SIGNATURE_SIZE: Final = MLDSA_SIGNATURE_SIZE + 64
PRIVATE_KEY_SIZE: Final = 32 + 32
_ALG: Final = "ML-DSA-65"


def message_representative(message: bytes, context: bytes) -> bytes:
    """M' of the draft: both component signatures sign this, never the raw message."""
    if len(context) > 255:
        raise InvalidSignature("composite signature context is longer than 255 bytes")
    return PREFIX + LABEL + bytes([len(context)]) + context + hashlib.sha512(message).digest()


class CompositeVerifyKey:
    """ML-DSA-65 public key (1952 B) || Ed25519 public key (32 B)."""

    __slots__ = ("_provider", "_raw")

    def __init__(self, public: bytes, provider: Provider | None = None) -> None:
        if len(public) != PUBLIC_KEY_SIZE:
            raise InvalidKey(f"composite public key must be {PUBLIC_KEY_SIZE} bytes")
        self._raw = bytes(public)
        self._provider = provider or get_provider()

    def public_bytes(self) -> bytes:
        return self._raw

    def fingerprint(self) -> bytes:
        """SHA3-256 of the composite public key: names this key everywhere."""
        return hashlib.sha3_256(self._raw).digest()

    def verify(self, signature: bytes, message: bytes, context: bytes = b"") -> None:
        """Raise ``InvalidSignature`` unless both component signatures verify."""
        if len(signature) != SIGNATURE_SIZE:
            raise InvalidSignature(f"composite signature must be {SIGNATURE_SIZE} bytes")
        rep = message_representative(message, context)
        self._provider.sig_verify(
            _ALG,
            self._raw[:MLDSA_PUBLIC_SIZE],
            signature[:MLDSA_SIGNATURE_SIZE],
            rep,
            LABEL,
        )
        self._provider.ed25519_verify(
            self._raw[MLDSA_PUBLIC_SIZE:], signature[MLDSA_SIGNATURE_SIZE:], rep
        )


class CompositeSigningKey:
    """ML-DSA-65 seed (32 B) || Ed25519 private key (32 B), as the draft serialises it."""

    __slots__ = ("_ed", "_mldsa", "_private", "_provider", "_public")

    def __init__(self, private: bytes, provider: Provider | None = None) -> None:
        if len(private) != PRIVATE_KEY_SIZE:
            raise InvalidKey(f"composite private key must be {PRIVATE_KEY_SIZE} bytes")
        self._provider = provider or get_provider()
        self._private = bytes(private)
        self._mldsa: SigPrivateKey = self._provider.sig_from_private(_ALG, self._private[:32])
        self._ed = self._provider.ed25519_private(self._private[32:])
        self._public = self._mldsa.public_bytes() + self._ed.public_key().public_bytes_raw()

    @classmethod
    def generate(cls, provider: Provider | None = None) -> CompositeSigningKey:
        return cls(os.urandom(PRIVATE_KEY_SIZE), provider)

    def private_bytes(self) -> bytes:
        return self._private

    def public_key(self) -> CompositeVerifyKey:
        return CompositeVerifyKey(self._public, self._provider)

    def sign(self, message: bytes, context: bytes = b"") -> bytes:
        rep = message_representative(message, context)
        return self._mldsa.sign(rep, LABEL) + self._ed.sign(rep)
