"""Site identities: a composite signature key plus a static X-Wing KEM key.

The site id is the truncated SHA3-256 fingerprint of the site's *first* composite public
key, so it stays stable across rotations; each rotation bumps a generation counter.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Final

from fedge.security._composite import PUBLIC_KEY_SIZE as SIG_PUBLIC_SIZE
from fedge.security._composite import CompositeSigningKey, CompositeVerifyKey
from fedge.security._errors import InvalidKey
from fedge.security._provider import Provider, get_provider
from fedge.security._xwing import PUBLIC_KEY_SIZE as KEM_PUBLIC_SIZE
from fedge.security._xwing import XWingPrivateKey, XWingPublicKey

SITE_ID_SIZE: Final = 16
PUBLIC_KEYS_SIZE: Final = SITE_ID_SIZE + 4 + SIG_PUBLIC_SIZE + KEM_PUBLIC_SIZE
ROTATION_CONTEXT: Final = b"fedge-rotate-v1"
#: Parsed keys kept per ``SitePublicKeys`` (one per provider in use; two exist).
_PARSED_PER_KEY: Final = 4


def fingerprint(public: bytes) -> bytes:
    """The 16-byte name of a composite public key (SHA3-256, truncated)."""
    return hashlib.sha3_256(public).digest()[:SITE_ID_SIZE]


class SitePublicKeys:
    """What others know about a site: id, key generation, both public keys.

    Parsed key objects are cached, per provider, because a responder encapsulates to the
    same static key for every handshake. Operations pass their own provider to
    ``kem_key``/``verify_key``, so the provider an operation was given is the one that
    encapsulates and verifies, whoever parsed these keys; ``provider`` here is only the
    default for callers that pass none.
    """

    __slots__ = (
        "_kem",
        "_provider",
        "_verify",
        "generation",
        "kem_public",
        "sig_public",
        "site_id",
    )

    def __init__(
        self,
        site_id: bytes,
        generation: int,
        sig_public: bytes,
        kem_public: bytes,
        provider: Provider | None = None,
    ) -> None:
        if len(site_id) != SITE_ID_SIZE:
            raise InvalidKey(f"site id must be {SITE_ID_SIZE} bytes")
        if not 0 <= generation < 2**32:
            raise InvalidKey("key generation must fit in 32 bits")
        if len(sig_public) != SIG_PUBLIC_SIZE or len(kem_public) != KEM_PUBLIC_SIZE:
            raise InvalidKey("public key sizes do not match the suite")
        self.site_id = bytes(site_id)
        self.generation = generation
        self.sig_public = bytes(sig_public)
        self.kem_public = bytes(kem_public)
        self._provider = provider
        self._kem: dict[Provider, XWingPublicKey] = {}
        self._verify: dict[Provider, CompositeVerifyKey] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SitePublicKeys) and self.to_bytes() == other.to_bytes()

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    def to_bytes(self) -> bytes:
        return self.site_id + struct.pack(">I", self.generation) + self.sig_public + self.kem_public

    @classmethod
    def from_bytes(cls, data: bytes, provider: Provider | None = None) -> SitePublicKeys:
        if len(data) != PUBLIC_KEYS_SIZE:
            raise InvalidKey(f"site public keys must be {PUBLIC_KEYS_SIZE} bytes")
        (generation,) = struct.unpack_from(">I", data, SITE_ID_SIZE)
        sig_end = SITE_ID_SIZE + 4 + SIG_PUBLIC_SIZE
        return cls(data[:SITE_ID_SIZE], generation, data[20:sig_end], data[sig_end:], provider)

    def key_fingerprint(self) -> bytes:
        """Names this generation's key pair (the site id names the site)."""
        return fingerprint(self.sig_public + self.kem_public)

    def _chosen(self, provider: Provider | None) -> Provider:
        return provider or self._provider or get_provider()

    def kem_key(self, provider: Provider | None = None) -> XWingPublicKey:
        """The KEM key parsed by ``provider``, which then does every encapsulation to it."""
        chosen = self._chosen(provider)
        key = self._kem.get(chosen)
        if key is None:
            if len(self._kem) >= _PARSED_PER_KEY:
                self._kem.clear()
            key = self._kem[chosen] = XWingPublicKey(self.kem_public, chosen)
        return key

    def verify_key(self, provider: Provider | None = None) -> CompositeVerifyKey:
        """The signature key bound to ``provider``, which then does every verification."""
        chosen = self._chosen(provider)
        key = self._verify.get(chosen)
        if key is None:
            if len(self._verify) >= _PARSED_PER_KEY:
                self._verify.clear()
            key = self._verify[chosen] = CompositeVerifyKey(self.sig_public, chosen)
        return key


class SiteIdentity:
    """A site's private keys; ``previous`` keeps the last generation during a grace period."""

    __slots__ = ("_public", "generation", "kem_key", "previous", "signing_key", "site_id")

    def __init__(
        self,
        site_id: bytes,
        generation: int,
        signing_key: CompositeSigningKey,
        kem_key: XWingPrivateKey,
        previous: SiteIdentity | None = None,
    ) -> None:
        self.site_id = bytes(site_id)
        self.generation = generation
        self.signing_key = signing_key
        self.kem_key = kem_key
        self.previous = previous
        self._public = SitePublicKeys(
            self.site_id,
            generation,
            signing_key.public_key().public_bytes(),
            kem_key.public_bytes(),
        )

    @classmethod
    def generate(cls, provider: Provider | None = None) -> SiteIdentity:
        provider = provider or get_provider()
        signing = CompositeSigningKey.generate(provider)
        site_id = fingerprint(signing.public_key().public_bytes())
        return cls(site_id, 0, signing, XWingPrivateKey.generate(provider))

    def public_keys(self) -> SitePublicKeys:
        return self._public

    def kem_key_for(self, generation: int) -> XWingPrivateKey | None:
        """This generation's KEM key, or the kept previous one, else None."""
        if generation == self.generation:
            return self.kem_key
        if self.previous is not None and generation == self.previous.generation:
            return self.previous.kem_key
        return None

    def rotate(self, provider: Provider | None = None) -> tuple[SiteIdentity, bytes]:
        """New keys under the same site id, and the statement the registry needs.

        The statement is the new public keys signed by the old key (authorisation) and
        by the new key (possession).
        """
        provider = provider or get_provider()
        current = SiteIdentity(self.site_id, self.generation, self.signing_key, self.kem_key)
        new = SiteIdentity(
            self.site_id,
            self.generation + 1,
            CompositeSigningKey.generate(provider),
            XWingPrivateKey.generate(provider),
            previous=current,
        )
        body = new.public_keys().to_bytes()
        statement = (
            body
            + self.signing_key.sign(body, ROTATION_CONTEXT)
            + new.signing_key.sign(body, ROTATION_CONTEXT)
        )
        return new, statement

    def forget_previous(self) -> SiteIdentity:
        """Drop the previous generation once the grace period is over."""
        return SiteIdentity(self.site_id, self.generation, self.signing_key, self.kem_key)
