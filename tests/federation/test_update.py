"""What the server does with an opened reply: every malformed update is refused with a reason."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, RecordDict
from flwr.app.message.message import make_message

from fedge.federation import CodecError, CodecSpec, Ledger, UpdateRejectedError, encode, wire_size
from fedge.federation._sealed_strategy import _metrics
from fedge.federation._update import apply_update, frame, unframe
from fedge.simulation._adversary import spoil_delta

GLOBAL = [np.ones((4, 3), np.float32), np.zeros(3, np.float32)]


def _reason(payload: bytes) -> str:
    with pytest.raises(UpdateRejectedError) as exc:
        apply_update(GLOBAL, payload)
    return exc.value.reason


def test_a_good_update_is_added_to_the_global_model() -> None:
    delta = [np.full((4, 3), 0.5, np.float32), np.arange(3, dtype=np.float32)]
    out = apply_update(GLOBAL, encode(delta, CodecSpec.parse("fp16")))
    assert np.allclose(out[0], 1.5) and np.allclose(out[1], [0, 1, 2])


def test_malicious_and_broken_updates_get_their_reason() -> None:
    delta = [np.full((4, 3), 0.5, np.float32), np.ones(3, np.float32)]
    fp32 = CodecSpec.parse("fp32")
    assert _reason(encode(spoil_delta("nonfinite", delta, 1.0), fp32)) == "non_finite"
    assert _reason(encode(spoil_delta("misshaped", delta, 1.0), fp32)) == "shape_mismatch"
    assert _reason(encode(delta[:1], fp32)) == "shape_mismatch"
    good = encode(delta, CodecSpec.parse("int8"))
    assert _reason(good[:-3]) == "truncated_payload"
    assert _reason(b"ZZ" + good[2:]) == "corrupt_payload"
    boosted = spoil_delta("boosted", delta, -10.0)
    assert np.allclose(boosted[0], -5.0)


def test_frame_round_trip_and_bad_frames() -> None:
    meta, payload = unframe(frame({"num-examples": 3}, b"abc"))
    assert meta == {"num-examples": 3} and payload == b"abc"
    with pytest.raises(CodecError):
        unframe(b"\x00")
    with pytest.raises(CodecError):
        unframe(b"\x00\x00\x00\x09{}")
    with pytest.raises(CodecError):
        unframe(b"\x00\x00\x00\x02[]")
    with pytest.raises(CodecError):
        unframe(b"\x00\x00\x00\x02{x")
    with pytest.raises(CodecError):
        unframe(b"\xff\xff\xff\xff")
    with pytest.raises(CodecError, match="large"):
        frame({"x": "y" * 70000})


def test_metrics_must_be_numbers_with_a_weight() -> None:
    assert _metrics({"num-examples": 5, "train_loss": 0.1}) == {
        "num-examples": 5,
        "train_loss": 0.1,
    }
    for bad in (
        {"train_loss": 0.1},
        {"num-examples": -1},
        {"num-examples": 2, "x": "s"},
        {"num-examples": True},
    ):
        with pytest.raises(UpdateRejectedError):
            _metrics(bad)


def _message(content: RecordDict) -> Message:
    meta = Metadata(1, "m", 0, 1, "", "", 0.0, 60.0, "train")
    return make_message(metadata=meta, content=content)


def test_wire_size_counts_the_serialised_message_and_the_ledger_sums() -> None:
    small = _message(RecordDict({"c": ConfigRecord({"b": b"x" * 10})}))
    big = _message(RecordDict({"a": ArrayRecord.from_numpy_ndarrays([np.zeros(1000, np.float32)])}))
    assert 10 < wire_size(small) < 200
    assert wire_size(big) > 4000
    ledger = Ledger(codec="int8")
    ledger.add_up(1, 5, 100)
    ledger.add_up(1, 5, 20)
    ledger.add_down(1, 5, 400)
    ledger.update_bytes += [100, 300]
    ledger.plain_update_bytes += [800]
    ledger.reject(1, 6, "non_finite")
    s = ledger.summary()
    assert s["comm"]["bytes_up_total"] == 120 and s["comm"]["bytes_down_total"] == 400
    assert s["comm"]["compression_ratio"] == 4.0
    assert s["security"]["rejected"] == {"non_finite": 1}
