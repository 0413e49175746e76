# ruff: noqa: N818 - the names follow pyca (InvalidTag, InvalidSignature), as pyca does
"""The security package's one flat family of errors.

Every failed check raises one of these; nothing returns False. Third-party exceptions
are translated at the boundary so callers only ever catch ``SecurityError``.
"""

from __future__ import annotations

from fedge import FedgeError


class SecurityError(FedgeError):
    """Base of every error the security package raises on purpose."""


class InvalidEnvelope(SecurityError):
    """A wire message (envelope or handshake) is malformed, misaddressed or out of place."""


class ReplayDetected(SecurityError):
    """A sequence number was already accepted or lies behind the replay window."""


class UnknownSender(SecurityError):
    """The sender (or peer) is not enrolled in the registry."""


class RevokedSender(SecurityError):
    """The sender (or peer) is enrolled but revoked."""


class DecryptionFailed(SecurityError):
    """Authenticated decryption or decapsulation failed."""


class UnsupportedSuite(SecurityError):
    """The version or suite id is not one this build speaks."""


class ProviderUnavailable(SecurityError):
    """The requested crypto provider (or its native library) cannot be used here."""


class InvalidSignature(SecurityError):
    """A signature or a proof of key possession did not verify."""


class InvalidToken(SecurityError):
    """An enrollment token is malformed, unknown, expired or already used."""


class KeyStoreError(SecurityError):
    """A key file is missing, unreadable, too open, or the key-encryption key is wrong;
    or a replay-state file cannot be read or written."""


class InvalidKey(SecurityError):
    """Key material has the wrong size or does not parse."""


class AlreadyUsed(SecurityError):
    """A single-use object (handshake, KDF) was used twice."""


class PkiError(SecurityError):
    """A transport CA or certificate cannot be made: a bad name, address or lifetime, a
    missing or mismatched CA, or a file that exists already."""
