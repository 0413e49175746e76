"""Session mode: directional AEAD keys, per-direction sequence numbers, rekeying, replay windows.

The 24-byte header carries no sender or recipient: the session id names both, so the
per-envelope overhead is 24 + 16 (tag) = 40 bytes. The nonce is the per-epoch IV XOR the
sequence number and is never sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from fedge.security._errors import InvalidEnvelope, ReplayDetected, SecurityError
from fedge.security._provider import Aead, Provider
from fedge.security._registry import KeyDirectory
from fedge.security._replay import DEFAULT_WINDOW, ReplayWindow
from fedge.security._wire import (
    AEAD_OF_SUITE,
    SESSION_HEADER,
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
)

OVERHEAD: Final = SESSION_HEADER.size + TAG_SIZE
MAX_EPOCH_SKIP: Final = 16
_TRAFFIC_INFO: Final = b"fedge v1 traffic"
_MAX_SEQ: Final = 2**64 - 1


@dataclass(frozen=True)
class SessionPolicy:
    """When to rekey (whichever comes first) and how much reordering to tolerate."""

    window: int = DEFAULT_WINDOW
    rekey_messages: int = 2**20
    rekey_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.window < 1 or self.rekey_messages < 1 or self.rekey_seconds <= 0:
            raise ValueError("session policy values must be positive")


class _Epoch:
    """One epoch's AEAD, IV and the secret the next epoch's keys come from."""

    __slots__ = ("aead", "iv", "next_secret", "number")

    def __init__(self, provider: Provider, suite: Suite, secret: bytes, number: int) -> None:
        okm = provider.hkdf(secret, b"", _TRAFFIC_INFO, 32 + 12 + 32)
        self.aead: Aead = provider.aead(AEAD_OF_SUITE[suite], okm[:32])
        self.iv = int.from_bytes(okm[32:44])
        self.next_secret = okm[44:]
        self.number = number

    def nonce(self, seq: int) -> bytes:
        return (self.iv ^ seq).to_bytes(12)


class Session:
    """An established session; build one with ``Initiator``/``Responder``, never directly."""

    def __init__(
        self,
        *,
        session_id: bytes,
        peer: bytes,
        suite: Suite,
        send_secret: bytes,
        receive_secret: bytes,
        provider: Provider,
        directory: KeyDirectory | None = None,
        policy: SessionPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session_id = session_id
        self.peer = peer
        self.suite = suite
        self._provider = provider
        self._directory = directory
        self._policy = policy or SessionPolicy()
        self._clock = clock
        self._send = _Epoch(provider, suite, send_secret, 0)
        self._send_started = clock()
        self._seq = 0
        self._receive = _Epoch(provider, suite, receive_secret, 0)
        self._receive_previous: _Epoch | None = None
        self._window = ReplayWindow(self._policy.window)

    def seal(self, plaintext: bytes, content_type: ContentType, round_id: int = 0) -> bytes:
        check_round(round_id)
        per_epoch = self._policy.rekey_messages
        if self._clock() - self._send_started >= self._policy.rekey_seconds:
            self._seq = max(self._seq, (self._send.number + 1) * per_epoch)  # age: jump epochs
        seq = self._seq
        if seq > _MAX_SEQ:
            raise SecurityError("session sequence numbers exhausted; run a new handshake")
        while seq // per_epoch > self._send.number:
            self._send = _Epoch(
                self._provider, self.suite, self._send.next_secret, self._send.number + 1
            )
            self._send_started = self._clock()
        self._seq = seq + 1
        header = SESSION_HEADER.pack(
            VERSION, Mode.SESSION, self.suite, content_type_for_sealing(content_type), round_id,
            self.session_id, seq,
        )  # fmt: skip
        return self._send.aead.encrypt_after(header, self._send.nonce(seq), plaintext, header)

    def _epoch_for(self, number: int) -> _Epoch:
        current = self._receive
        if number == current.number:
            return current
        previous = self._receive_previous
        if previous is not None and number == previous.number:
            return previous
        if number < current.number:
            raise ReplayDetected(f"epoch {number} keys are already erased")
        if number - current.number > MAX_EPOCH_SKIP:
            raise InvalidEnvelope(f"epoch {number} is too far ahead")
        epoch = current
        while epoch.number < number:
            epoch = _Epoch(self._provider, self.suite, epoch.next_secret, epoch.number + 1)
        return epoch

    def open(self, envelope: bytes) -> Opened:
        """Verify and decrypt; nothing changes state unless the envelope is authentic."""
        suite = check_prefix(envelope, Mode.SESSION, OVERHEAD)
        content_type = content_type_of(envelope)
        if suite != self.suite:
            raise InvalidEnvelope(f"suite {suite.name} is not this session's")
        _, _, _, _, round_id, session_id, seq = SESSION_HEADER.unpack_from(envelope)
        if session_id != self.session_id:
            raise InvalidEnvelope(f"envelope belongs to session {session_id.hex()}")
        if self._directory is not None:
            self._directory.record(self.peer)  # revocation applies to live sessions too
        self._window.check(seq)
        epoch = self._epoch_for(seq // self._policy.rekey_messages)
        header = envelope[: SESSION_HEADER.size]
        body = memoryview(envelope)[SESSION_HEADER.size :]  # no copy of a large payload
        plaintext = epoch.aead.decrypt(epoch.nonce(seq), body, header)
        if epoch.number > self._receive.number:
            self._receive_previous = (
                self._receive if epoch.number == self._receive.number + 1 else None
            )
            self._receive = epoch
        self._window.accept(seq)
        return Opened(self.peer, content_type, round_id, seq, plaintext)

    @property
    def send_epoch(self) -> int:
        return self._send.number

    @property
    def receive_epoch(self) -> int:
        return self._receive.number
