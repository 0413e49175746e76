"""Index sets of a sparse update: a bitmap or delta-varints, whichever is smaller per tensor.

A bitmap costs ``ceil(n / 8)`` bytes whatever k is; delta-varints cost about one byte per
index while the mean gap stays below 128 (k / n above ~0.8%), so neither wins everywhere.
Both directions are vectorised: decoding a thousand updates is on the aggregation path.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

from fedge.federation._errors import CorruptPayloadError

MAX_VARINT_BYTES = 5  # u32 gaps


class IndexCoding(IntEnum):
    BITMAP = 0
    DELTA_VARINT = 1


def encode_varints(values: NDArray[np.int64]) -> bytes:
    """LEB128 (7 bits per byte, high bit = more) of non-negative integers below 2**32."""
    v = values.astype(np.uint64)
    if v.size == 0:
        return b""
    nbytes = np.ones(v.size, dtype=np.int64)
    for shift in (7, 14, 21, 28):
        nbytes += v >= (1 << shift)
    total = int(nbytes.sum())
    out = np.empty(total, dtype=np.uint8)
    starts = np.concatenate(([0], np.cumsum(nbytes)[:-1]))
    for j in range(int(nbytes.max())):
        live = nbytes > j
        byte = (v[live] >> np.uint64(7 * j)) & np.uint64(0x7F)
        more = nbytes[live] > j + 1
        out[starts[live] + j] = (byte | (more.astype(np.uint64) << np.uint64(7))).astype(np.uint8)
    return out.tobytes()


def decode_varints(data: bytes | memoryview, count: int) -> NDArray[np.int64]:
    """Exactly ``count`` varints filling ``data``; anything else is corrupt."""
    b = np.frombuffer(data, dtype=np.uint8)
    if count == 0:
        if b.size:
            raise CorruptPayloadError("varint bytes given for an empty index set")
        return np.zeros(0, dtype=np.int64)
    ends = np.flatnonzero(b < 0x80)
    if ends.size != count or ends[-1] != b.size - 1:
        raise CorruptPayloadError(f"expected {count} varints in {b.size} bytes, found {ends.size}")
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts + 1
    if int(lengths.max()) > MAX_VARINT_BYTES:
        raise CorruptPayloadError("varint longer than 5 bytes")
    pos = np.arange(b.size) - np.repeat(starts, lengths)
    parts = (b & 0x7F).astype(np.uint64) << (7 * pos).astype(np.uint64)
    values = np.add.reduceat(parts, starts)
    if int(values.max()) >= 1 << 32:
        raise CorruptPayloadError("varint exceeds 32 bits")
    return values.astype(np.int64)


def encode_indices(indices: NDArray[np.int64], size: int) -> tuple[IndexCoding, bytes]:
    """Sorted, unique flat indices into a tensor of ``size`` elements."""
    gaps = np.diff(indices, prepend=-1) - 1 if indices.size else indices
    varint = encode_varints(gaps)
    bitmap_len = (size + 7) // 8
    if len(varint) < bitmap_len:
        return IndexCoding.DELTA_VARINT, varint
    mask = np.zeros(size, dtype=bool)
    mask[indices] = True
    return IndexCoding.BITMAP, np.packbits(mask, bitorder="little").tobytes()


def decode_indices(
    coding: int, data: bytes | memoryview, count: int, size: int
) -> NDArray[np.int64]:
    """Inverse of :func:`encode_indices`, checking range, order and count."""
    if coding == IndexCoding.BITMAP:
        if len(data) != (size + 7) // 8:
            raise CorruptPayloadError(f"bitmap of {len(data)} bytes for {size} elements")
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
        if bits[size:].any():
            raise CorruptPayloadError("bitmap sets bits past the tensor's end")
        idx = np.flatnonzero(bits[:size]).astype(np.int64)
        if idx.size != count:
            raise CorruptPayloadError(f"bitmap holds {idx.size} indices, header says {count}")
        return idx
    if coding == IndexCoding.DELTA_VARINT:
        idx = np.cumsum(decode_varints(data, count) + 1) - 1
        if idx.size and int(idx[-1]) >= size:
            raise CorruptPayloadError(f"index {int(idx[-1])} outside a tensor of {size}")
        return idx
    raise CorruptPayloadError(f"unknown index coding {coding}")
