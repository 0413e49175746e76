"""Post-quantum identities, hybrid-KEM sessions and sealed envelopes.

Importing this package never imports liboqs-python (``oqs``): the optional provider loads
it only when asked for, after checking that its native library exists.
"""

from fedge.security._composite import CompositeSigningKey, CompositeVerifyKey
from fedge.security._enrollment import (
    EnrollmentAuthority,
    enrollment_request,
    prove_possession,
    token_hash,
)
from fedge.security._envelope import OVERHEAD as ONESHOT_OVERHEAD
from fedge.security._envelope import OneShotOpener, OneShotSealer
from fedge.security._errors import (
    AlreadyUsed,
    DecryptionFailed,
    InvalidEnvelope,
    InvalidKey,
    InvalidSignature,
    InvalidToken,
    KeyStoreError,
    PkiError,
    ProviderUnavailable,
    ReplayDetected,
    RevokedSender,
    SecurityError,
    UnknownSender,
    UnsupportedSuite,
)
from fedge.security._handshake import Initiator, Responder
from fedge.security._identity import SiteIdentity, SitePublicKeys, fingerprint
from fedge.security._keystore import load_identity, read_kek, save_identity
from fedge.security._pki import Issued, init_ca, issue
from fedge.security._provider import CryptographyProvider, OqsProvider, Provider, get_provider
from fedge.security._registry import (
    EnrollmentOutcome,
    KeyDirectory,
    MemoryRegistry,
    PendingEnrollment,
    Registry,
    SiteRecord,
    SiteStatus,
)
from fedge.security._session import OVERHEAD as SESSION_OVERHEAD
from fedge.security._session import Session, SessionPolicy
from fedge.security._wire import ContentType, Opened, Suite
from fedge.security._xwing import XWingPrivateKey, XWingPublicKey

__all__ = [
    # errors
    "SecurityError",
    "AlreadyUsed",
    "DecryptionFailed",
    "InvalidEnvelope",
    "InvalidKey",
    "InvalidSignature",
    "InvalidToken",
    "KeyStoreError",
    "PkiError",
    "ProviderUnavailable",
    "ReplayDetected",
    "RevokedSender",
    "UnknownSender",
    "UnsupportedSuite",
    # providers
    "Provider",
    "CryptographyProvider",
    "OqsProvider",
    "get_provider",
    # primitives
    "XWingPrivateKey",
    "XWingPublicKey",
    "CompositeSigningKey",
    "CompositeVerifyKey",
    # identities and key files
    "SiteIdentity",
    "SitePublicKeys",
    "fingerprint",
    "load_identity",
    "read_kek",
    "save_identity",
    # transport TLS certificates
    "Issued",
    "init_ca",
    "issue",
    # registry and enrollment
    "Registry",
    "MemoryRegistry",
    "KeyDirectory",
    "SiteRecord",
    "SiteStatus",
    "PendingEnrollment",
    "EnrollmentOutcome",
    "EnrollmentAuthority",
    "enrollment_request",
    "prove_possession",
    "token_hash",
    # sessions and envelopes
    "Initiator",
    "Responder",
    "Session",
    "SessionPolicy",
    "OneShotSealer",
    "OneShotOpener",
    "ContentType",
    "Opened",
    "Suite",
    "SESSION_OVERHEAD",
    "ONESHOT_OVERHEAD",
]
