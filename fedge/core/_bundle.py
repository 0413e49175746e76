"""The model bundle: how a forecaster travels from the coordinator to an agent.

``FEDGEMDL`` + a 4-byte big-endian header length + a JSON header (``version``, ``sha256``
of the ONNX bytes) + the ONNX bytes. The coordinator encodes it (and seals it to one site);
the agent decodes it after opening the envelope. The version names files on the agent, so
it is held to a safe alphabet here, where both sides read it.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass
from typing import Final

from fedge.core._errors import BundleError

BUNDLE_MAGIC: Final = b"FEDGEMDL"
MAX_HEADER_BYTES: Final = 4096
_LEN: Final = struct.Struct(">I")
_VERSION_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ModelBundle:
    """One model version's ONNX bytes under its version name."""

    version: str
    onnx: bytes

    def encode(self) -> bytes:
        if not _VERSION_RE.match(self.version):
            raise BundleError(f"model version {self.version!r} is not [A-Za-z0-9._-]{{1,64}}")
        header = json.dumps(
            {"version": self.version, "sha256": hashlib.sha256(self.onnx).hexdigest()}
        ).encode()
        return BUNDLE_MAGIC + _LEN.pack(len(header)) + header + self.onnx

    @classmethod
    def decode(cls, data: bytes) -> ModelBundle:
        """The bundle in ``data``; anything else raises :class:`BundleError`."""
        if not data.startswith(BUNDLE_MAGIC) or len(data) < len(BUNDLE_MAGIC) + _LEN.size:
            raise BundleError("not a fedge model bundle (bad magic)")
        (n,) = _LEN.unpack_from(data, len(BUNDLE_MAGIC))
        start = len(BUNDLE_MAGIC) + _LEN.size
        if n > MAX_HEADER_BYTES or start + n > len(data):
            raise BundleError("model bundle header length is out of bounds")
        try:
            header = json.loads(data[start : start + n])
            version, digest = header["version"], header["sha256"]
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            # RecursionError: a 4 KiB header can nest deeper than the JSON decoder recurses
            raise BundleError(f"model bundle header is malformed: {exc!s:.200}") from exc
        if not isinstance(version, str) or not _VERSION_RE.match(version):
            raise BundleError(f"model version {version!r} is not [A-Za-z0-9._-]{{1,64}}")
        onnx = data[start + n :]
        if hashlib.sha256(onnx).hexdigest() != digest:
            raise BundleError(f"model {version}: ONNX bytes do not match the header digest")
        return cls(version, onnx)
