"""A sliding-bitmap replay window, one per direction (RFC 4303 / DTLS style)."""

from __future__ import annotations

from typing import Final

from fedge.security._errors import ReplayDetected

DEFAULT_WINDOW: Final = 1024


class ReplayWindow:
    """Accepts each sequence number once; anything ``size`` or more behind the highest is refused.

    ``check`` runs before decryption and ``accept`` after, so a forged envelope never
    moves the window.
    """

    __slots__ = ("_bits", "_highest", "size")

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if size < 1:
            raise ValueError("replay window size must be positive")
        self.size = size
        self._highest = -1
        self._bits = 0  # bit i set: sequence (highest - i) was accepted

    def check(self, seq: int) -> None:
        if seq > self._highest:
            return
        behind = self._highest - seq
        if behind >= self.size:
            raise ReplayDetected(f"sequence {seq} is behind the replay window")
        if (self._bits >> behind) & 1:
            raise ReplayDetected(f"sequence {seq} was already accepted")

    def accept(self, seq: int) -> None:
        self.check(seq)
        mask = (1 << self.size) - 1
        if seq > self._highest:
            shift = seq - self._highest
            self._bits = 1 if shift >= self.size else ((self._bits << shift) | 1) & mask
            self._highest = seq
        else:
            self._bits |= 1 << (self._highest - seq)
