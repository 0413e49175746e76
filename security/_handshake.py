"""KEMTLS-style mutual authentication with X-Wing: no signature on the per-session path.

The initiator encapsulates to the responder's static key and sends an ephemeral key; the
responder encapsulates to the ephemeral and to the initiator's static key. Keys come from
all three secrets and the transcript, so only the two enrolled sites can derive them:
the responder is confirmed by its finished tag, the initiator by its first envelope.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from typing import Final

from fedge.security._errors import AlreadyUsed, DecryptionFailed, InvalidEnvelope, InvalidKey
from fedge.security._identity import SiteIdentity, SitePublicKeys
from fedge.security._provider import Provider, get_provider
from fedge.security._registry import KeyDirectory
from fedge.security._session import Session, SessionPolicy
from fedge.security._wire import VERSION, Mode, Suite, check_prefix, suite_of
from fedge.security._xwing import CIPHERTEXT_SIZE, PUBLIC_KEY_SIZE, XWingPrivateKey, XWingPublicKey

#: version, mode, suite, initiator id, initiator generation, responder id, responder generation.
INIT_HEADER: Final = struct.Struct(">BBB16sI16sI")
#: version, mode, suite, session id.
RESPONSE_HEADER: Final = struct.Struct(">BBB8s")
CONFIRM_SIZE: Final = 16
INIT_SIZE: Final = INIT_HEADER.size + CIPHERTEXT_SIZE + PUBLIC_KEY_SIZE
RESPONSE_SIZE: Final = RESPONSE_HEADER.size + 2 * CIPHERTEXT_SIZE + CONFIRM_SIZE
_TRANSCRIPT_LABEL: Final = b"fedge-handshake-v1"
_KEY_INFO: Final = b"fedge v1 handshake keys"
_CONFIRM_LABEL: Final = b"fedge v1 responder finished"


def _transcript(responder_kem: bytes, initiator_kem: bytes, init: bytes) -> bytes:
    return hashlib.sha3_256(_TRANSCRIPT_LABEL + responder_kem + initiator_kem + init).digest()


def _schedule(
    provider: Provider, secrets: bytes, th1: bytes, response_body: bytes
) -> tuple[bytes, bytes, bytes]:
    """(initiator->responder secret, responder->initiator secret, finished tag)."""
    th2 = hashlib.sha3_256(th1 + response_body).digest()
    okm = provider.hkdf(secrets, th2, _KEY_INFO, 96)
    tag = hmac.digest(okm[64:], _CONFIRM_LABEL + th2, "sha256")[:CONFIRM_SIZE]
    return okm[:32], okm[32:64], tag


class Initiator:
    """The site side: ``start()`` then ``finish(response)``, each exactly once.

    ``provider`` does every encapsulation, the ephemeral key and the key schedule; the
    identity's own static key decapsulates on the provider it was loaded with.
    """

    def __init__(
        self,
        identity: SiteIdentity,
        responder: SitePublicKeys,
        *,
        suite: Suite = Suite.XWING_AES256GCM,
        provider: Provider | None = None,
        directory: KeyDirectory | None = None,
        policy: SessionPolicy | None = None,
    ) -> None:
        self._identity = identity
        self._responder = responder
        self._suite = suite_of(suite)
        self._provider = provider or get_provider()
        self._directory = directory
        self._policy = policy
        self._ephemeral: XWingPrivateKey | None = None
        self._state: tuple[bytes, bytes] | None = None  # (th1, ss_responder)
        self._started = self._finished = False

    def start(self) -> bytes:
        if self._started:
            raise AlreadyUsed("handshake already started; use a new Initiator")
        self._started = True
        me, peer = self._identity, self._responder
        if self._directory is not None:
            self._directory.record(peer.site_id)
        self._ephemeral = XWingPrivateKey.generate(self._provider)
        ss_r, ct_r = peer.kem_key(self._provider).encapsulate()
        init = (
            INIT_HEADER.pack(
                VERSION, Mode.HANDSHAKE_INIT, self._suite,
                me.site_id, me.generation, peer.site_id, peer.generation,
            )
            + ct_r
            + self._ephemeral.public_bytes()
        )  # fmt: skip
        self._state = (_transcript(peer.kem_public, me.kem_key.public_bytes(), init), ss_r)
        return init

    def finish(self, response: bytes) -> Session:
        if self._state is None or self._ephemeral is None:
            raise AlreadyUsed("call start() before finish()")
        if self._finished:
            raise AlreadyUsed("handshake already finished; use a new Initiator")
        self._finished = True
        th1, ss_r = self._state
        ephemeral, self._ephemeral, self._state = self._ephemeral, None, None
        if len(response) != RESPONSE_SIZE:
            raise InvalidEnvelope(f"handshake response must be {RESPONSE_SIZE} bytes")
        if check_prefix(response, Mode.HANDSHAKE_RESPONSE, RESPONSE_SIZE) != self._suite:
            raise InvalidEnvelope("responder changed the suite")
        at = RESPONSE_HEADER.size
        ss_e = ephemeral.decapsulate(response[at : at + CIPHERTEXT_SIZE])
        ss_i = self._identity.kem_key.decapsulate(response[at + CIPHERTEXT_SIZE : -CONFIRM_SIZE])
        i2r, r2i, tag = _schedule(self._provider, ss_r + ss_e + ss_i, th1, response[:-CONFIRM_SIZE])
        if not hmac.compare_digest(tag, response[-CONFIRM_SIZE:]):
            raise DecryptionFailed("responder key confirmation failed")
        return Session(
            session_id=response[3:at],
            peer=self._responder.site_id,
            suite=self._suite,
            send_secret=i2r,
            receive_secret=r2i,
            provider=self._provider,
            directory=self._directory,
            policy=self._policy,
        )


class Responder:
    """The coordinator side: ``respond(init)`` exactly once per handshake.

    ``provider`` does every encapsulation (to the ephemeral and to the initiator's static
    key, whatever provider the directory parsed it with) and the key schedule.
    """

    def __init__(
        self,
        identity: SiteIdentity,
        directory: KeyDirectory,
        *,
        provider: Provider | None = None,
        policy: SessionPolicy | None = None,
    ) -> None:
        self._identity = identity
        self._directory = directory
        self._provider = provider or get_provider()
        self._policy = policy
        self._used = False

    def respond(self, init: bytes, now: float | None = None) -> tuple[bytes, Session]:
        if self._used:
            raise AlreadyUsed("responder already used; use a new Responder per handshake")
        self._used = True
        if len(init) != INIT_SIZE:
            raise InvalidEnvelope(f"handshake init must be {INIT_SIZE} bytes")
        suite = check_prefix(init, Mode.HANDSHAKE_INIT, INIT_SIZE)
        _, _, _, peer_id, peer_gen, my_id, my_gen = INIT_HEADER.unpack_from(init)
        if my_id != self._identity.site_id:
            raise InvalidEnvelope(f"handshake is addressed to site {my_id.hex()}")
        my_kem = self._identity.kem_key_for(my_gen)
        if my_kem is None:
            raise InvalidEnvelope(f"handshake uses our key generation {my_gen}")
        peer = self._directory.keys(peer_id, peer_gen, now)
        at = INIT_HEADER.size
        ss_r = my_kem.decapsulate(init[at : at + CIPHERTEXT_SIZE])
        try:
            epk = XWingPublicKey(init[at + CIPHERTEXT_SIZE :], self._provider)
            ss_e, ct_e = epk.encapsulate()
        except InvalidKey as exc:
            raise InvalidEnvelope("handshake ephemeral key does not parse") from exc
        ss_i, ct_i = peer.kem_key(self._provider).encapsulate()
        session_id = os.urandom(8)
        body = (
            RESPONSE_HEADER.pack(VERSION, Mode.HANDSHAKE_RESPONSE, suite, session_id) + ct_e + ct_i
        )
        th1 = _transcript(my_kem.public_bytes(), peer.kem_public, init)
        i2r, r2i, tag = _schedule(self._provider, ss_r + ss_e + ss_i, th1, body)
        session = Session(
            session_id=session_id,
            peer=peer_id,
            suite=suite,
            send_secret=r2i,
            receive_secret=i2r,
            provider=self._provider,
            directory=self._directory,
            policy=self._policy,
        )
        return body + tag, session
