"""The policy manifest: what a decision-policy directory holds and how it is named.

Training writes it next to the two ONNX policies; serving reads it back and checks every
file against it. Its ``version`` is a digest of both ONNX files, so the same bytes always
carry the same version and a changed file cannot pass under an old one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from fedge.core._errors import ManifestError

MANIFEST: Final = "manifest.json"
MANIFEST_FORMAT: Final = 1
ENERGY_ONNX: Final = "energy_policy.onnx"
SLICE_ONNX: Final = "slice_policy.onnx"
#: The one input of both ONNX policies: a batch of observations (batch, obs).
OBS_INPUT: Final = "obs"
#: The energy policy's outputs: the greedy mode (batch,) and its Q-values (batch, modes).
ENERGY_OUTPUTS: Final = ("mode", "q_values")
#: The slice policy's output: PRB shares (batch, slices + 1), the last one unreserved.
SLICE_OUTPUT: Final = "shares"
_VERSION_CHARS: Final = 16


def policy_version(blobs: Iterable[bytes]) -> str:
    """The version of a policy set: the leading hex digits of SHA-256 over its files in order."""
    digest = hashlib.sha256()
    for blob in blobs:
        digest.update(blob)
    return digest.hexdigest()[:_VERSION_CHARS]


@dataclass(frozen=True)
class PolicyFile:
    """One ONNX policy: its file name, digest, observation names and output labels."""

    file: str
    sha256: str
    obs: tuple[str, ...]
    labels: tuple[str, ...]  # energy: the mode names; slices: the share names


@dataclass(frozen=True)
class PolicyManifest:
    """A policy directory's manifest; ``details`` carries what training recorded besides."""

    version: str
    energy: PolicyFile
    slices: PolicyFile
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "version": self.version,
            **dict(self.details),
            "energy": _file_dict(self.energy, "modes"),
            "slices": _file_dict(self.slices, "shares"),
        }

    @classmethod
    def from_dict(cls, doc: object) -> PolicyManifest:
        """The manifest in a parsed JSON document; a missing or mistyped field raises."""
        if not isinstance(doc, dict):
            raise ManifestError(f"a manifest is a JSON object, not {type(doc).__name__}")
        if doc.get("format") != MANIFEST_FORMAT:
            raise ManifestError(
                f"manifest format {doc.get('format')!r}, expected {MANIFEST_FORMAT}"
            )
        version = doc.get("version")
        if not isinstance(version, str) or len(version) != _VERSION_CHARS:
            raise ManifestError(f"version must be {_VERSION_CHARS} hex characters, got {version!r}")
        energy = _file(doc.get("energy"), "energy", "modes")
        slices = _file(doc.get("slices"), "slices", "shares")
        details = {
            k: v for k, v in doc.items() if k not in ("format", "version", "energy", "slices")
        }
        return cls(version, energy, slices, details)


def _file_dict(f: PolicyFile, labels: str) -> dict[str, Any]:
    return {"file": f.file, "sha256": f.sha256, "obs": list(f.obs), labels: list(f.labels)}


def _file(doc: object, where: str, labels: str) -> PolicyFile:
    if not isinstance(doc, dict):
        raise ManifestError(f"{where} must be an object")
    name, digest = doc.get("file"), doc.get("sha256")
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name[0] == ".":
        raise ManifestError(f"{where}.file must be a plain file name, got {name!r}")
    if not isinstance(digest, str) or len(digest) != 64:
        raise ManifestError(f"{where}.sha256 must be 64 hex characters")
    return PolicyFile(
        name,
        digest,
        _names(doc.get("obs"), f"{where}.obs"),
        _names(doc.get(labels), f"{where}.{labels}"),
    )


def _names(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"{where} must be a non-empty list of names")
    return tuple(value)
