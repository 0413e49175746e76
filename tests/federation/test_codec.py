"""Update codecs: round trips within their bounds, compact indices, a strict parser."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import NDArray

from fedge.federation import (
    CodecError,
    CodecId,
    CodecSchedule,
    CodecSpec,
    CorruptPayloadError,
    TruncatedPayloadError,
    decode,
    encode,
    error_bound,
)
from fedge.federation._sparse import (
    IndexCoding,
    decode_indices,
    decode_varints,
    encode_indices,
    encode_varints,
)

BOUNDED = [
    "fp32",
    "fp16",
    "int8",
    "int8-channel",
    "int8+sr",
    "int4",
    "int4+sr",
    "topk:0.03",
    "topk:0.5",
    "topk:1",
]

tensors = hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=40),
    elements=st.floats(-1e3, 1e3, width=32),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(tensors, min_size=1, max_size=4), st.sampled_from(BOUNDED), st.integers(0, 2**32))
def test_every_codec_round_trips_within_its_bound(
    arrays: list[NDArray[np.float32]], codec: str, seed: int
) -> None:
    spec = CodecSpec.parse(codec)
    out = decode(encode(arrays, spec, np.random.default_rng(seed)))
    assert [o.shape for o in out] == [a.shape for a in arrays]
    for a, o in zip(arrays, out, strict=True):
        assert o.dtype == np.float32
        assert float(np.abs(a - o).max()) <= error_bound(a, spec)


@settings(max_examples=40, deadline=None)
@given(st.lists(tensors, min_size=1, max_size=3))
def test_sign_keeps_signs_and_the_mean_magnitude(arrays: list[NDArray[np.float32]]) -> None:
    out = decode(encode(arrays, CodecSpec.parse("sign")))
    for a, o in zip(arrays, out, strict=True):
        assert np.array_equal(o >= 0, a >= 0)
        assert np.allclose(np.abs(o).mean(), np.abs(a).mean(), rtol=1e-5, atol=1e-6)


def test_int8_is_unbiased_with_stochastic_rounding() -> None:
    x = np.full((20000,), 0.3, dtype=np.float32)
    x[0], x[1] = 0.0, 1.0  # range 1: grid step 1/255, 0.3 sits between two levels
    spec = CodecSpec.parse("int8+sr")
    mean = float(decode(encode([x], spec, np.random.default_rng(1)))[0][2:].mean())
    det = float(decode(encode([x], CodecSpec.parse("int8")))[0][2:].mean())
    assert abs(mean - 0.3) < 2e-4 < abs(det - 0.3)


def test_topk_keeps_the_largest_and_picks_the_smaller_index_coding() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(10000).astype(np.float32)
    out = decode(encode([x], CodecSpec.parse("topk:0.03")))[0]
    kept = np.flatnonzero(out)
    assert kept.size == 300
    assert set(kept) == set(np.argsort(-np.abs(x))[:300])
    sparse = np.sort(rng.choice(10000, 300, replace=False))
    assert encode_indices(sparse, 10000)[0] is IndexCoding.DELTA_VARINT
    dense = np.sort(rng.choice(10000, 5000, replace=False))
    coding, data = encode_indices(dense, 10000)
    assert coding is IndexCoding.BITMAP and len(data) == 1250
    assert np.array_equal(decode_indices(coding, data, 5000, 10000), dense)


@settings(max_examples=60, deadline=None)
@given(st.lists(tensors, min_size=1, max_size=4), st.sampled_from([0.03, 0.2, 1.0]))
def test_whole_update_topk_uses_one_threshold_within_its_bound(
    arrays: list[NDArray[np.float32]], fraction: float
) -> None:
    """``topk+global``: exactly k of all entries, the largest across tensors; what is
    dropped is no larger than what is kept, what is kept is off by at most half an int8
    step of its tensor's kept values."""
    from fedge.federation._codec import _whole_topk

    out = decode(encode(arrays, CodecSpec.parse(f"topk+global:{fraction}")))
    chosen = _whole_topk(arrays, fraction)
    mags = np.concatenate([np.abs(a).reshape(-1) for a in arrays])
    k = min(mags.size, max(1, round(fraction * mags.size)))
    assert sum(c.size for c in chosen) == k  # exactly k, even on ties
    kept_min, dropped_max = np.inf, 0.0
    for a, o, idx in zip(arrays, out, chosen, strict=True):
        flat, got = a.reshape(-1), o.reshape(-1)
        keep = np.zeros(flat.size, bool)
        keep[idx] = True
        assert np.all(got[~keep] == 0)
        if keep.any():
            kept_min = min(kept_min, float(np.abs(flat[keep]).min()))
            span = float(flat[keep].max()) - float(flat[keep].min())
            slack = span / 255 / 2 * 1.001 + 1e-6 * max(1.0, span)
            assert float(np.abs(flat[keep] - got[keep]).max()) <= slack
        if (~keep).any():
            dropped_max = max(dropped_max, float(np.abs(flat[~keep]).max()))
    assert dropped_max <= kept_min  # one threshold over the whole update


def test_whole_update_topk_sends_k_even_when_most_of_the_update_is_zero() -> None:
    x = np.zeros(1000, np.float32)
    x[:5] = 1.0  # threshold 0 for k = 30: a >= test would have sent all 1,000
    out = decode(encode([x], CodecSpec.parse("topk+global:0.03")))[0]
    assert np.count_nonzero(out) == 5 and np.array_equal(out[:5], np.ones(5))
    payload = encode([x], CodecSpec.parse("topk+global:0.03"))
    assert len(payload) < 100


def test_whole_update_topk_spends_the_budget_where_the_update_is_large() -> None:
    rng = np.random.default_rng(0)
    matrix = rng.normal(0, 0.01, (512, 128)).astype(np.float32)
    bias = rng.normal(0, 1.0, 64).astype(np.float32)  # small tensor, large steps
    per_tensor = decode(encode([matrix, bias], CodecSpec.parse("topk:0.03")))
    whole = decode(encode([matrix, bias], CodecSpec.parse("topk+global:0.03")))
    assert np.count_nonzero(per_tensor[1]) == 2  # 3% of 64
    assert np.count_nonzero(whole[1]) == 64  # all of it
    total = matrix.size + bias.size
    assert np.count_nonzero(whole[0]) + 64 == round(0.03 * total)


@given(st.lists(st.integers(0, 2**32 - 1), max_size=50))
def test_varints_round_trip(values: list[int]) -> None:
    v = np.array(values, dtype=np.int64)
    assert np.array_equal(decode_varints(encode_varints(v), len(values)), v)


def test_reference_model_sizes() -> None:
    from fedge.models import ForecastSpec, LoadForecaster, get_weights

    w = get_weights(LoadForecaster(ForecastSpec()))
    fp32 = len(encode(w, CodecSpec.parse("fp32")))
    assert fp32 / len(encode(w, CodecSpec.parse("int8"))) > 3.9
    assert fp32 / len(encode(w, CodecSpec.parse("topk:0.03"))) > 32


# --- the parser rejects bad input with typed errors --------------------------------------


def _payload(codec: str = "topk:0.1") -> bytes:
    rng = np.random.default_rng(3)
    arrays = [
        rng.standard_normal((16, 8)).astype(np.float32),
        rng.standard_normal(5).astype(np.float32),
    ]
    return encode(arrays, CodecSpec.parse(codec), rng)


@pytest.mark.parametrize(
    "codec", ["fp32", "fp16", "int8", "int8-channel", "int4", "topk:0.1", "sign"]
)
def test_every_truncation_is_rejected(codec: str) -> None:
    data = _payload(codec)
    for n in range(len(data)):
        with pytest.raises(CodecError):
            decode(data[:n])
    with pytest.raises(TruncatedPayloadError):
        decode(data[: len(data) - 1])


def test_trailing_bytes_bad_magic_version_codec_flags_are_corrupt() -> None:
    data = _payload()
    with pytest.raises(CorruptPayloadError, match="trailing"):
        decode(data + b"\x00")
    with pytest.raises(CorruptPayloadError, match="magic"):
        decode(b"XX" + data[2:])
    with pytest.raises(CorruptPayloadError, match="version"):
        decode(data[:2] + b"\x09" + data[3:])
    with pytest.raises(CorruptPayloadError, match="codec"):
        decode(data[:3] + b"\x63" + data[4:])
    with pytest.raises(CorruptPayloadError, match="flags"):
        decode(data[:4] + b"\x80" + data[5:])
    with pytest.raises(CorruptPayloadError, match="dimensions"):
        decode(data[:7] + b"\x09" + data[8:])


def test_corrupt_sparse_indices_are_rejected() -> None:
    x = np.zeros(1000, dtype=np.float32)
    x[[3, 500, 999]] = 1.0
    data = bytearray(encode([x], CodecSpec.parse("topk:0.003")))
    head = 7 + 1 + 4  # header, ndim, one dim
    k, coding, _nbytes = struct.unpack_from(">IBI", data, head)
    assert (k, coding) == (3, IndexCoding.DELTA_VARINT)
    bad_k = bytearray(data)
    struct.pack_into(">I", bad_k, head, 2000)  # k > n
    with pytest.raises(CorruptPayloadError):
        decode(bytes(bad_k))
    bad_count = bytearray(data)
    struct.pack_into(">I", bad_count, head, 2)
    with pytest.raises(CodecError):
        decode(bytes(bad_count))
    bad_coding = bytearray(data)
    bad_coding[head + 4] = 7
    with pytest.raises(CorruptPayloadError, match="index coding"):
        decode(bytes(bad_coding))
    with pytest.raises(CorruptPayloadError, match="outside"):
        decode_indices(IndexCoding.DELTA_VARINT, encode_varints(np.array([0, 1, 2000])), 3, 1000)
    with pytest.raises(CorruptPayloadError, match="longer"):
        decode_varints(b"\x80\x80\x80\x80\x80\x01", 1)
    with pytest.raises(CorruptPayloadError):
        decode_varints(b"\x80", 1)
    with pytest.raises(CorruptPayloadError, match="bitmap"):
        decode_indices(IndexCoding.BITMAP, b"\xff", 8, 10)
    with pytest.raises(CorruptPayloadError, match="past"):
        decode_indices(IndexCoding.BITMAP, b"\x00\xff", 8, 10)
    with pytest.raises(CorruptPayloadError, match="holds"):
        decode_indices(IndexCoding.BITMAP, b"\x03\x00", 3, 10)
    with pytest.raises(CorruptPayloadError, match="empty"):
        decode_varints(b"\x01", 0)


def test_padding_bits_must_be_zero() -> None:
    x = np.array([1.0, -1.0, 0.5], dtype=np.float32)
    sign = bytearray(encode([x], CodecSpec.parse("sign")))
    sign[-1] |= 0x80
    with pytest.raises(CorruptPayloadError, match="padding"):
        decode(bytes(sign))
    int4 = bytearray(encode([x], CodecSpec.parse("int4")))
    int4[-1] |= 0xF0
    with pytest.raises(CorruptPayloadError, match="padding"):
        decode(bytes(int4))


@pytest.mark.parametrize(
    "text",
    ["int9", "topk:0", "topk:2", "topk:x", "sign+sr", "int8+foo", "fp16:3", "", "int8+global"],
)
def test_bad_codec_specs_are_rejected(text: str) -> None:
    with pytest.raises(CodecError):
        CodecSpec.parse(text)


def test_spec_text_round_trips_and_encoder_refuses_bad_input() -> None:
    for text in (
        "fp16",
        "int8+sr",
        "topk:0.03",
        "topk+global:0.01",
        "int4",
        "sign",
        "int8-channel",
    ):
        assert str(CodecSpec.parse(text)) == text
    assert CodecSpec.parse("topk").fraction == 0.03
    with pytest.raises(CodecError, match="NaN"):
        encode([np.array([np.nan], dtype=np.float32)], CodecSpec.parse("int8"))
    with pytest.raises(CodecError, match="fp16"):
        encode([np.array([1e6], dtype=np.float32)], CodecSpec.parse("fp16"))
    with pytest.raises(CodecError, match="random"):
        encode([np.ones(3, np.float32)], CodecSpec.parse("int8+sr"))
    with pytest.raises(CodecError, match="dimensions"):
        encode([np.ones((1,) * 9, np.float32)], CodecSpec(CodecId.FP32))


def test_codec_schedule_picks_per_round_and_rejects_bad_text() -> None:
    s = CodecSchedule.parse("sign@1-2, int4@5, topk:0.03")
    assert [str(s.at(r)) for r in (1, 2, 3, 5, 6)] == [
        "sign",
        "sign",
        "topk:0.03",
        "int4",
        "topk:0.03",
    ]
    assert str(CodecSchedule.parse("int8").at(7)) == "int8"
    for bad in ("sign@1", "int8,fp16", "int8@0,fp16", "int8@3-2,fp16", "int8@x,fp16", "bogus"):
        with pytest.raises(CodecError):
            CodecSchedule.parse(bad)
