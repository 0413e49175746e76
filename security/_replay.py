"""Replay protection: a sliding-bitmap window per direction (RFC 4303 / DTLS style), and
per-sender high-water marks on disk so that a restart does not reopen old envelopes."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Final

from fedge.security._errors import KeyStoreError, ReplayDetected

DEFAULT_WINDOW: Final = 1024
_MARKS_VERSION: Final = 1
_SENDER_ID_SIZE: Final = 16
_MAX_SEQ: Final = 2**64 - 1


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

    @classmethod
    def refusing_up_to(cls, highest: int, size: int = DEFAULT_WINDOW) -> ReplayWindow:
        """A window that refuses every sequence number up to ``highest``: what is known
        after a restart is only the mark, not which numbers below it were seen."""
        window = cls(size)
        window._highest = highest
        window._bits = (1 << size) - 1
        return window

    @property
    def highest(self) -> int:
        """The highest sequence number accepted so far (-1: none)."""
        return self._highest

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


class SenderMarks:
    """The highest sequence number accepted from each sender, for one recipient, on disk.

    A small JSON file, replaced atomically (temp file, fsync, rename, fsync of the folder)
    *before* an envelope's plaintext is handed over, so a crash can lose a delivery but
    never let one be opened twice. A file that is unreadable, malformed or another
    recipient's is an error, not a fresh start: starting afresh would reopen old traffic.
    One opener per file: two processes sharing one would overwrite each other's marks.
    """

    __slots__ = ("_marks", "_recipient", "path")

    def __init__(self, path: Path, recipient: bytes) -> None:
        self.path = Path(path)
        self._recipient = recipient.hex()
        self._marks = self._read()

    def marks(self) -> dict[bytes, int]:
        return dict(self._marks)

    def advance(self, sender: bytes, seq: int) -> None:
        """Record ``seq`` if it is above the sender's mark (durably, before returning)."""
        if seq <= self._marks.get(sender, -1):
            return
        marks = {**self._marks, sender: seq}
        self._write(marks)
        self._marks = marks

    def _bad(self, why: str) -> KeyStoreError:
        return KeyStoreError(f"replay state {self.path} {why}; refusing to start afresh")

    def _read(self) -> dict[bytes, int]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise self._bad(f"is unreadable ({exc})") from exc
        try:
            data = json.loads(text)
        except ValueError:
            raise self._bad("is not JSON") from None
        if not isinstance(data, dict) or data.get("version") != _MARKS_VERSION:
            raise self._bad(f"is not a version-{_MARKS_VERSION} replay state")
        if data.get("recipient") != self._recipient:
            raise self._bad(f"belongs to another site ({data.get('recipient')!r})")
        senders = data.get("senders")
        if not isinstance(senders, dict):
            raise self._bad("has no sender table")
        marks: dict[bytes, int] = {}
        for sender, mark in senders.items():
            try:
                sender_id = bytes.fromhex(sender)
            except ValueError:
                raise self._bad(f"names a sender that is not hex: {sender!r}") from None
            if len(sender_id) != _SENDER_ID_SIZE:
                raise self._bad(f"names a sender of the wrong size: {sender!r}")
            if type(mark) is not int or not 0 <= mark <= _MAX_SEQ:
                raise self._bad(f"holds a mark that is not a sequence number: {mark!r}")
            marks[sender_id] = mark
        return marks

    def _write(self, marks: dict[bytes, int]) -> None:
        body = json.dumps(
            {
                "version": _MARKS_VERSION,
                "recipient": self._recipient,
                "senders": {sender.hex(): mark for sender, mark in sorted(marks.items())},
            }
        )
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{self.path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as handle:
                    handle.write(body)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
                dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            raise KeyStoreError(f"cannot write replay state {self.path}: {exc}") from exc
