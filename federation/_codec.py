"""Update codecs and their versioned binary format (docs/compression.md, byte by byte).

A payload is self-describing: it names its codec and every tensor's shape, so the server
checks it against the model it sent before anything is aggregated. Parsing is strict:
short input raises :class:`TruncatedPayloadError`, anything inconsistent :class:`CorruptPayloadError`.
All integers are big-endian; float fields are IEEE-754 little-endian (numpy's native
layout on every platform fedge runs on, so bodies are read without a copy).
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import numpy as np
from numpy.typing import NDArray

from fedge.federation._errors import CodecError, CorruptPayloadError, TruncatedPayloadError
from fedge.federation._sparse import decode_indices, encode_indices

MAGIC: Final = b"FU"
VERSION: Final = 1
HEADER: Final = struct.Struct(">2sBBBH")  # magic, version, codec, flags, tensor count
FLAG_STOCHASTIC: Final = 0x01
MAX_NDIM: Final = 8
FP16_MAX: Final = 65504.0
_AFFINE: Final = struct.Struct("<ff")  # lo, scale
_TOPK_HEAD: Final = struct.Struct(">IBI")  # k, index coding, index bytes

Arrays = list[NDArray[np.float32]]


class CodecId(IntEnum):
    FP32 = 0
    FP16 = 1
    INT8 = 2
    INT8_CHANNEL = 3
    INT4 = 4
    TOPK_INT8 = 5
    SIGN = 6


_NAMES: Final = {
    "fp32": CodecId.FP32,
    "fp16": CodecId.FP16,
    "int8": CodecId.INT8,
    "int8-channel": CodecId.INT8_CHANNEL,
    "int4": CodecId.INT4,
    "topk": CodecId.TOPK_INT8,
    "sign": CodecId.SIGN,
}
CODECS: Final = tuple(_NAMES)


@dataclass(frozen=True)
class CodecSpec:
    """``fp32``, ``fp16``, ``int8[-channel][+sr]``, ``int4[+sr]``, ``topk:<fraction>``, ``sign``."""

    codec: CodecId
    fraction: float = 1.0  # top-k only
    stochastic: bool = False  # stochastic rounding for int8 / int4
    whole: bool = False  # top-k over the whole update (one threshold), not per tensor

    @classmethod
    def parse(cls, text: str) -> CodecSpec:
        name, _, arg = text.strip().partition(":")
        name, plus, extra = name.partition("+")
        stochastic = plus == "+" and extra == "sr"
        whole = plus == "+" and extra == "global" and name == "topk"
        if (plus and not (stochastic or whole)) or name not in _NAMES:
            raise CodecError(f"unknown codec {text!r}; choose from {', '.join(CODECS)}")
        codec = _NAMES[name]
        if stochastic and codec not in (CodecId.INT8, CodecId.INT8_CHANNEL, CodecId.INT4):
            raise CodecError(f"stochastic rounding applies to int8/int4, not {name}")
        if codec is CodecId.TOPK_INT8:
            try:
                fraction = float(arg) if arg else 0.03
            except ValueError:
                raise CodecError(f"top-k fraction {arg!r} is not a number") from None
            if not 0.0 < fraction <= 1.0:
                raise CodecError(f"top-k fraction must be in (0, 1], got {fraction}")
            return cls(codec, fraction=fraction, whole=whole)
        if arg:
            raise CodecError(f"codec {name} takes no argument")
        return cls(codec, stochastic=stochastic)

    def __str__(self) -> str:
        name = next(k for k, v in _NAMES.items() if v is self.codec)
        if self.codec is CodecId.TOPK_INT8:
            return f"{name}{'+global' if self.whole else ''}:{self.fraction:g}"
        return name + ("+sr" if self.stochastic else "")

    @property
    def lossless(self) -> bool:
        return self.codec is CodecId.FP32


# --- encoding ---------------------------------------------------------------------------


def _affine(
    x: NDArray[np.float32], levels: int, rng: np.random.Generator | None
) -> tuple[float, float, NDArray[np.uint8]]:
    lo = float(x.min()) if x.size else 0.0
    hi = float(x.max()) if x.size else 0.0
    scale = (hi - lo) / levels if hi > lo else 0.0
    if scale == 0.0:
        return lo, 0.0, np.zeros(x.shape, dtype=np.uint8)
    t = (x.astype(np.float64) - lo) / scale
    t = np.floor(t + rng.random(t.shape)) if rng is not None else np.rint(t)
    return lo, scale, np.clip(t, 0, levels).astype(np.uint8)


def _affine_rows(
    rows: NDArray[np.float32], levels: int, rng: np.random.Generator | None
) -> tuple[bytes, NDArray[np.uint8]]:
    """Per-row affine quantisation, vectorised: (lo, scale) pairs as bytes, and the codes."""
    if rows.size == 0:
        return np.zeros((rows.shape[0], 2), "<f4").tobytes(), np.zeros(rows.shape, np.uint8)
    lo = rows.min(axis=1).astype(np.float64)
    scale = (rows.max(axis=1).astype(np.float64) - lo) / levels
    safe = np.where(scale > 0, scale, 1.0)
    t = (rows.astype(np.float64) - lo[:, None]) / safe[:, None]
    t = np.floor(t + rng.random(t.shape)) if rng is not None else np.rint(t)
    q = np.where(scale[:, None] > 0, np.clip(t, 0, levels), 0).astype(np.uint8)
    heads = np.stack([lo, scale], axis=1).astype("<f4")
    return heads.tobytes(), q


def _tensor_topk(flat: NDArray[np.float32], fraction: float) -> NDArray[np.int64]:
    k = min(flat.size, max(1, round(fraction * flat.size))) if flat.size else 0
    if k == flat.size:
        return np.arange(flat.size, dtype=np.int64)
    return np.sort(np.argpartition(np.abs(flat), flat.size - k)[flat.size - k :]).astype(np.int64)


def _whole_topk(arrays: Arrays, fraction: float) -> list[NDArray[np.int64]]:
    """Per tensor, the flat indices of the ``fraction`` largest entries of the whole update
    (DGC's single threshold, exactly k in all, ties broken by position): small tensors that
    move a lot, such as the output layer and the biases, are sent in full rather than at
    the same 3% as the large weight matrices."""
    flats = [np.abs(np.asarray(a, np.float32)).reshape(-1) for a in arrays]
    mags = np.concatenate(flats) if flats else np.zeros(0, np.float32)
    if mags.size == 0:
        return [np.zeros(0, np.int64) for _ in arrays]
    k = min(mags.size, max(1, round(fraction * mags.size)))
    chosen = np.sort(np.argpartition(mags, mags.size - k, kind="introselect")[mags.size - k :])
    bounds = np.cumsum([0] + [f.size for f in flats])
    return [
        (chosen[(chosen >= lo) & (chosen < hi)] - lo).astype(np.int64)
        for lo, hi in itertools.pairwise(bounds)
    ]


def _check_finite(x: NDArray[np.float32]) -> None:
    if not np.isfinite(x).all():
        raise CodecError("update holds NaN or Inf; refusing to encode it")


def encode(arrays: Arrays, spec: CodecSpec, rng: np.random.Generator | None = None) -> bytes:
    """One update (a list of tensors) as a payload; ``rng`` drives stochastic rounding."""
    if len(arrays) > 0xFFFF:
        raise CodecError("too many tensors")
    if spec.stochastic and rng is None:
        raise CodecError("stochastic rounding needs a random generator")
    sr = rng if spec.stochastic else None
    flags = FLAG_STOCHASTIC if spec.stochastic else 0
    parts = [HEADER.pack(MAGIC, VERSION, spec.codec, flags, len(arrays))]
    chosen = _whole_topk(arrays, spec.fraction) if spec.whole else None
    for i, raw in enumerate(arrays):
        x = np.ascontiguousarray(raw, dtype=np.float32)
        if x.ndim > MAX_NDIM:
            raise CodecError(f"tensor of {x.ndim} dimensions")
        parts.append(struct.pack(f">B{x.ndim}I", x.ndim, *x.shape))
        flat = x.reshape(-1)
        c = spec.codec
        if c is CodecId.FP32:
            parts.append(flat.astype("<f4").tobytes())  # NaN passes: the server rejects it
            continue
        _check_finite(flat)
        if c is CodecId.FP16:
            if flat.size and float(np.abs(flat).max()) > FP16_MAX:
                raise CodecError("value outside the fp16 range")
            parts.append(flat.astype("<f2").tobytes())
        elif c in (CodecId.INT8, CodecId.INT8_CHANNEL):
            channel = c is CodecId.INT8_CHANNEL and x.ndim >= 2
            rows = x.reshape(x.shape[0], -1) if channel else flat.reshape(1, -1)
            heads, q8 = _affine_rows(rows, 255, sr)
            parts.append(heads)
            parts.append(q8.tobytes())
        elif c is CodecId.INT4:
            lo, scale, q = _affine(flat, 15, sr)
            if q.size % 2:
                q = np.append(q, np.uint8(0))
            parts.append(_AFFINE.pack(lo, scale))
            parts.append((q[0::2] | (q[1::2] << 4)).astype(np.uint8).tobytes())
        elif c is CodecId.TOPK_INT8:
            idx = chosen[i] if chosen is not None else _tensor_topk(flat, spec.fraction)
            k = int(idx.size)
            coding, index_bytes = encode_indices(idx, flat.size)
            lo, scale, q = _affine(flat[idx], 255, None)
            parts.append(_TOPK_HEAD.pack(k, coding, len(index_bytes)))
            parts.append(index_bytes)
            parts.append(_AFFINE.pack(lo, scale))
            parts.append(q.tobytes())
        else:  # SIGN
            scale = float(np.abs(flat).mean()) if flat.size else 0.0
            parts.append(struct.pack("<f", scale))
            parts.append(np.packbits(flat >= 0, bitorder="little").tobytes())
    return b"".join(parts)


# --- decoding ---------------------------------------------------------------------------


class _Reader:
    __slots__ = ("at", "data")

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.at = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.at + n > len(self.data):
            raise TruncatedPayloadError(
                f"payload ends at byte {len(self.data)}, needed {self.at + n}"
            )
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def unpack(self, fmt: struct.Struct) -> tuple[int | float | bytes, ...]:
        return fmt.unpack(self.take(fmt.size))


def _dequant(q: NDArray[np.uint8], lo: float, scale: float) -> NDArray[np.float32]:
    return (q.astype(np.float32) * np.float32(scale) + np.float32(lo)).astype(np.float32)


def payload_codec(data: bytes) -> CodecId:
    """The codec a payload declares (header only)."""
    if len(data) < HEADER.size:
        raise TruncatedPayloadError(f"payload of {len(data)} bytes has no header")
    magic, version, codec, _, _ = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptPayloadError("not an update payload (bad magic)")
    if version != VERSION:
        raise CorruptPayloadError(f"unsupported payload version {version}")
    try:
        return CodecId(codec)
    except ValueError:
        raise CorruptPayloadError(f"unknown codec id {codec}") from None


def decode(data: bytes) -> Arrays:
    """Strict inverse of :func:`encode`: every byte accounted for, or a typed error."""
    codec = payload_codec(data)
    r = _Reader(data)
    _, _, _, flags, count = r.unpack(HEADER)
    if int(flags) & ~FLAG_STOCHASTIC:
        raise CorruptPayloadError(f"unknown flags {int(flags):#x}")
    out: Arrays = []
    for _ in range(int(count)):
        (ndim,) = r.take(1)
        if ndim > MAX_NDIM:
            raise CorruptPayloadError(f"tensor of {ndim} dimensions")
        shape = tuple(int(d) for d in struct.unpack(f">{ndim}I", r.take(4 * ndim)))
        n = int(np.prod(shape, dtype=np.int64))
        flat: NDArray[np.float32]
        if codec is CodecId.FP32:
            flat = np.frombuffer(r.take(4 * n), dtype="<f4").astype(np.float32)
        elif codec is CodecId.FP16:
            flat = np.frombuffer(r.take(2 * n), dtype="<f2").astype(np.float32)
        elif codec in (CodecId.INT8, CodecId.INT8_CHANNEL):
            rows = shape[0] if codec is CodecId.INT8_CHANNEL and ndim >= 2 else 1
            per_row = n // rows if rows else 0
            heads = np.frombuffer(r.take(8 * rows), dtype="<f4").reshape(rows, 2)
            q = np.frombuffer(r.take(n), dtype=np.uint8).reshape(rows, per_row)
            flat = (q * heads[:, 1:2] + heads[:, 0:1]).astype(np.float32).reshape(-1)
        elif codec is CodecId.INT4:
            lo, scale = r.unpack(_AFFINE)
            packed = np.frombuffer(r.take((n + 1) // 2), dtype=np.uint8)
            nib = np.empty(packed.size * 2, dtype=np.uint8)
            nib[0::2], nib[1::2] = packed & 0x0F, packed >> 4
            if n % 2 and nib[-1]:
                raise CorruptPayloadError("int4 padding nibble is not zero")
            flat = _dequant(nib[:n], float(lo), float(scale))
        elif codec is CodecId.TOPK_INT8:
            k, coding, nbytes = (int(v) for v in r.unpack(_TOPK_HEAD))
            if k > n:
                raise CorruptPayloadError(f"top-k of {k} from {n} elements")
            idx = decode_indices(coding, r.take(nbytes), k, n)
            lo, scale = r.unpack(_AFFINE)
            values = _dequant(np.frombuffer(r.take(k), dtype=np.uint8), float(lo), float(scale))
            flat = np.zeros(n, dtype=np.float32)
            flat[idx] = values
        else:  # SIGN
            (scale,) = r.unpack(struct.Struct("<f"))
            nb = (n + 7) // 8
            bits = np.unpackbits(np.frombuffer(r.take(nb), dtype=np.uint8), bitorder="little")
            if bits[n:].any():
                raise CorruptPayloadError("sign padding bits are not zero")
            flat = np.where(bits[:n], np.float32(scale), np.float32(-float(scale)))
            flat = flat.astype(np.float32)
        out.append(flat.reshape(shape))
    if r.at != len(r.data):
        raise CorruptPayloadError(f"{len(r.data) - r.at} trailing bytes after the last tensor")
    return out


def error_bound(x: NDArray[np.float32], spec: CodecSpec) -> float:
    """Largest elementwise error ``decode(encode(x))`` may show (sign: none, see docs)."""
    flat = x.reshape(-1).astype(np.float64)
    if flat.size == 0 or spec.codec is CodecId.FP32:
        return 0.0
    span = float(flat.max() - flat.min())
    if spec.codec is CodecId.FP16:
        return float(np.abs(flat).max()) * 2.0**-11 + 2.0**-24
    if spec.codec in (CodecId.INT8, CodecId.INT8_CHANNEL):
        step = span / 255
    elif spec.codec is CodecId.INT4:
        step = span / 15
    elif spec.codec is CodecId.TOPK_INT8:
        k = min(flat.size, max(1, round(spec.fraction * flat.size)))
        mags = np.sort(np.abs(flat))
        dropped = float(mags[flat.size - k]) if k < flat.size else 0.0
        return max(dropped, span / 255 / 2 * 1.001 + 1e-6 * max(1.0, span))
    else:
        return float("inf")
    slack = 1e-6 * max(1.0, float(np.abs(flat).max()))  # float32 arithmetic
    return (step if spec.stochastic else step / 2) + slack


DOWNLINK_CODECS = ("fp32", "fp16", "int8", "int8-channel")


def downlink_spec(text: str) -> CodecSpec:
    """The codec of the global model sent down: dense ones only (every site needs every
    weight; sparse or sign codecs carry updates, not models)."""
    spec = CodecSpec.parse(text)
    if str(spec) not in DOWNLINK_CODECS:
        raise CodecError(
            f"downlink codec must be one of {', '.join(DOWNLINK_CODECS)}, got {text!r}"
        )
    return spec


@dataclass(frozen=True)
class CodecSchedule:
    """Which codec each round uses: ``"sign@1-2,topk:0.03"`` = sign in rounds 1-2, else top-k.

    Entries are ``codec`` (the default, exactly one) or ``codec@a`` / ``codec@a-b``
    (inclusive rounds); a plain codec name is a schedule with only a default.
    """

    default: CodecSpec
    ranges: tuple[tuple[int, int, CodecSpec], ...] = ()

    @classmethod
    def parse(cls, text: str) -> CodecSchedule:
        default: CodecSpec | None = None
        ranges: list[tuple[int, int, CodecSpec]] = []
        for entry in (e.strip() for e in text.split(",")):
            codec, at, span = entry.partition("@")
            spec = CodecSpec.parse(codec)
            if not at:
                if default is not None:
                    raise CodecError(f"schedule {text!r} has two default codecs")
                default = spec
                continue
            first, dash, last = span.partition("-")
            try:
                a, b = int(first), int(last) if dash else int(first)
            except ValueError:
                raise CodecError(f"bad round range {span!r} in {text!r}") from None
            if not 1 <= a <= b:
                raise CodecError(f"bad round range {span!r} in {text!r}")
            ranges.append((a, b, spec))
        if default is None:
            raise CodecError(f"schedule {text!r} names no default codec")
        return cls(default, tuple(ranges))

    def at(self, server_round: int) -> CodecSpec:
        for a, b, spec in self.ranges:
            if a <= server_round <= b:
                return spec
        return self.default
