"""Errors of the federation layer."""

from fedge import FedgeError


class FederationError(FedgeError):
    """A federation plan, message or round that cannot be used."""


class CodecError(FederationError):
    """An update that cannot be encoded, or a payload that does not parse."""


class TruncatedPayloadError(CodecError):
    """The payload ends before its declared contents do."""


class CorruptPayloadError(CodecError):
    """The payload parses to something impossible (bad magic, index, length, codec)."""


class UpdateRejectedError(FederationError):
    """A site's reply that the server excludes from the round; ``reason`` is the counted key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
