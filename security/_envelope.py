"""One-shot sealed envelopes for store-and-forward (MQTT): no session, no round trip.

X-Wing to the recipient's static KEM key gives confidentiality; the sender's composite
signature over everything gives authenticity. The AEAD key is derived from the KEM
secret *and* the header, so a re-signed envelope under another sender id cannot decrypt.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final

from fedge.security._composite import SIGNATURE_SIZE
from fedge.security._errors import InvalidEnvelope
from fedge.security._identity import SiteIdentity, SitePublicKeys
from fedge.security._provider import Aead, Provider, get_provider
from fedge.security._registry import KeyDirectory
from fedge.security._replay import DEFAULT_WINDOW, ReplayWindow, SenderMarks
from fedge.security._wire import (
    AEAD_OF_SUITE,
    ONESHOT_HEADER,
    TAG_SIZE,
    VERSION,
    ContentType,
    Mode,
    Opened,
    Suite,
    check_prefix,
    check_round,
    content_type_for_sealing,
    content_type_of,
    suite_of,
)
from fedge.security._xwing import CIPHERTEXT_SIZE

SIGNATURE_CONTEXT: Final = b"fedge-oneshot-v1"
_KEY_INFO: Final = b"fedge v1 oneshot key"
_AAD_END: Final = ONESHOT_HEADER.size + CIPHERTEXT_SIZE
OVERHEAD: Final = _AAD_END + TAG_SIZE + SIGNATURE_SIZE


def _aead_for(provider: Provider, suite: Suite, secret: bytes, header: bytes) -> tuple[Aead, bytes]:
    okm = provider.hkdf(secret, b"", _KEY_INFO + header, 44)
    return provider.aead(AEAD_OF_SUITE[suite], okm[:32]), okm[32:]


class OneShotSealer:
    """Seals envelopes from one site; sequence numbers follow the clock in µs (and count up
    when two seals share a microsecond), so they keep increasing across restarts without
    persisted state, and stay in order across several sealers of one identity, such as the
    coordinator's workers, as far as their clocks agree."""

    def __init__(
        self,
        identity: SiteIdentity,
        *,
        suite: Suite = Suite.XWING_AES256GCM,
        provider: Provider | None = None,
        first_sequence: int | None = None,
    ) -> None:
        self._identity = identity
        self._suite = suite_of(suite)
        self._provider = provider or get_provider()
        self._clock = first_sequence is None
        self._next = time.time_ns() // 1000 if first_sequence is None else first_sequence

    def seal(
        self,
        recipient: SitePublicKeys,
        plaintext: bytes,
        content_type: ContentType,
        round_id: int = 0,
    ) -> bytes:
        check_round(round_id)
        seq = max(self._next, time.time_ns() // 1000) if self._clock else self._next
        self._next = seq + 1
        me = self._identity
        header = ONESHOT_HEADER.pack(
            VERSION,
            Mode.ONESHOT,
            self._suite,
            content_type_for_sealing(content_type),
            round_id,
            me.site_id,
            me.generation,
            recipient.site_id,
            recipient.generation,
            seq,
        )
        secret, kem_ct = recipient.kem_key(self._provider).encapsulate()
        aead, nonce = _aead_for(self._provider, self._suite, secret, header)
        aad = header + kem_ct
        body = aead.encrypt_after(aad, nonce, plaintext, aad)
        return body + me.signing_key.sign(body, SIGNATURE_CONTEXT)


class OneShotOpener:
    """Opens envelopes addressed to one site, with a replay window per sender.

    Without ``state`` the windows live only in this object, so a new opener (a restarted
    process) would accept every old envelope again. With ``state`` (a file path), each
    sender's highest accepted sequence number is written there before the plaintext is
    returned, and a new opener on the same file refuses everything at or below it.
    ``window=1`` accepts only increasing sequence numbers (no reordering): for payloads
    where an older one must never follow a newer one, such as models.
    """

    def __init__(
        self,
        identity: SiteIdentity,
        directory: KeyDirectory,
        *,
        window: int = DEFAULT_WINDOW,
        provider: Provider | None = None,
        state: Path | None = None,
    ) -> None:
        self._identity = identity
        self._directory = directory
        self._window = window
        self._provider = provider or get_provider()
        self._marks = None if state is None else SenderMarks(state, identity.site_id)
        self._windows: dict[bytes, ReplayWindow] = {}
        if self._marks is not None:
            for sender, mark in self._marks.marks().items():
                self._windows[sender] = ReplayWindow.refusing_up_to(mark, window)

    def open(self, envelope: bytes, now: float | None = None) -> Opened:
        suite = check_prefix(envelope, Mode.ONESHOT, OVERHEAD)
        content_type = content_type_of(envelope)
        (_, _, _, _, round_id, sender, sender_gen, recipient, recipient_gen, seq) = (
            ONESHOT_HEADER.unpack_from(envelope)
        )
        if recipient != self._identity.site_id:
            raise InvalidEnvelope(f"envelope is addressed to site {recipient.hex()}")
        kem_key = self._identity.kem_key_for(recipient_gen)
        if kem_key is None:
            raise InvalidEnvelope(f"envelope is sealed to key generation {recipient_gen}")
        sender_keys = self._directory.keys(sender, sender_gen, now)
        window = self._windows.get(sender)
        if window is not None:
            window.check(seq)
        signed_end = len(envelope) - SIGNATURE_SIZE
        body = envelope[:signed_end]
        sender_keys.verify_key(self._provider).verify(
            envelope[signed_end:], body, SIGNATURE_CONTEXT
        )
        secret = kem_key.decapsulate(envelope[ONESHOT_HEADER.size : _AAD_END])
        aead, nonce = _aead_for(self._provider, suite, secret, envelope[: ONESHOT_HEADER.size])
        plaintext = aead.decrypt(nonce, memoryview(body)[_AAD_END:], body[:_AAD_END])
        if self._marks is not None:
            self._marks.advance(sender, seq)  # durable first: a restart cannot reopen it
        if window is None:
            window = self._windows[sender] = ReplayWindow(self._window)
        window.accept(seq)
        return Opened(sender, content_type, round_id, seq, plaintext)
