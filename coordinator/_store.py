"""ONNX artifacts on disk, named by their SHA-256, written atomically."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path
from typing import Final

from fedge.coordinator._errors import DatabaseError, InvalidInputError, NotFoundError

MAX_MODEL_BYTES: Final = 16 * 1024 * 1024
#: The base64 text of the largest model, the bound of every ``onnx_base64`` field.
MAX_MODEL_BASE64: Final = 4 * -(-MAX_MODEL_BYTES // 3)


def decode_model(onnx_base64: str) -> bytes:
    """The ONNX bytes of an upload: base64, within the size limit, a fedge forecaster."""
    try:
        blob = base64.b64decode(onnx_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError("onnx_base64 is not base64") from exc
    if len(blob) > MAX_MODEL_BYTES:
        raise InvalidInputError(f"models are limited to {MAX_MODEL_BYTES} bytes")
    check_onnx(blob)
    return blob


def check_onnx(blob: bytes) -> None:
    """Refuse, before anything is stored, bytes that are not a fedge forecaster: not ONNX
    that ONNX Runtime loads, without the forecast spec metadata, or failing to turn a probe
    window into the forecast its spec promises. Sites would refuse it only after download."""
    from fedge.models import ModelError, check_onnx_model

    try:
        check_onnx_model(blob)
    except ModelError as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InvalidInputError(f"not a usable fedge model: {first[:300]}") from exc


class ModelStore:
    """Content-addressed files under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseError(f"cannot create the model store {root}: {exc.strerror}") from exc

    def path(self, sha256: str) -> Path:
        return self.root / f"{sha256}.onnx"

    def put(self, blob: bytes) -> str:
        digest = hashlib.sha256(blob).hexdigest()
        target = self.path(digest)
        if target.exists():
            return digest
        tmp = target.with_name(f".{digest}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as handle:
                handle.write(blob)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise DatabaseError(f"cannot store model {digest}: {exc.strerror}") from exc
        return digest

    def get(self, sha256: str) -> bytes:
        try:
            blob = self.path(sha256).read_bytes()
        except OSError as exc:
            raise NotFoundError(f"model file {sha256} is missing from the store") from exc
        if hashlib.sha256(blob).hexdigest() != sha256:
            raise DatabaseError(f"model file {sha256} is corrupt")
        return blob
