"""What goes inside an envelope: a small JSON control block, then an update payload.

``u32 length ‖ JSON (control fields or metrics) ‖ payload (docs/compression.md)``. Metrics
travel inside the envelope so that ``num-examples``, the aggregation weight, is as
authenticated as the update itself.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Final

import numpy as np

from fedge.federation._codec import Arrays, decode
from fedge.federation._errors import (
    CodecError,
    CorruptPayloadError,
    TruncatedPayloadError,
    UpdateRejectedError,
)

_LEN: Final = struct.Struct(">I")
MAX_JSON: Final = 1 << 16


def frame(meta: dict[str, Any], payload: bytes = b"") -> bytes:
    blob = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()
    if len(blob) > MAX_JSON:
        raise CodecError("control block too large")
    return _LEN.pack(len(blob)) + blob + payload


def unframe(data: bytes) -> tuple[dict[str, Any], bytes]:
    if len(data) < _LEN.size:
        raise TruncatedPayloadError("sealed content shorter than its length prefix")
    (n,) = _LEN.unpack_from(data)
    if n > MAX_JSON:
        raise CorruptPayloadError(f"control block of {n} bytes")
    if len(data) < _LEN.size + n:
        raise TruncatedPayloadError("sealed content ends inside its control block")
    try:
        meta = json.loads(data[_LEN.size : _LEN.size + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptPayloadError(f"control block is not JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise CorruptPayloadError("control block is not an object")
    return meta, data[_LEN.size + n :]


def apply_update(global_arrays: Arrays, payload: bytes) -> Arrays:
    """``global + delta``, after checking the delta against the model that was sent."""
    delta = checked_delta(global_arrays, payload)
    return [(g + d).astype(np.float32) for g, d in zip(global_arrays, delta, strict=True)]


def checked_delta(global_arrays: Arrays, payload: bytes) -> Arrays:
    """The decoded delta, refused unless it fits the model that was sent and is finite."""
    try:
        delta = decode(payload)
    except TruncatedPayloadError as exc:
        raise UpdateRejectedError("truncated_payload", str(exc)) from exc
    except CodecError as exc:
        raise UpdateRejectedError("corrupt_payload", str(exc)) from exc
    if len(delta) != len(global_arrays) or any(
        d.shape != g.shape for d, g in zip(delta, global_arrays, strict=True)
    ):
        got = [d.shape for d in delta]
        raise UpdateRejectedError("shape_mismatch", f"update shapes {got} do not match the model")
    if not all(np.isfinite(d).all() for d in delta):
        raise UpdateRejectedError("non_finite", "update holds NaN or Inf")
    return delta
