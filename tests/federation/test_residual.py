"""Error feedback: the long-run sum of what is sent tracks the true sum; residuals persist."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedge.federation import (
    CodecSpec,
    FederationError,
    ResidualStore,
    compress_with_feedback,
    decode,
)


@pytest.mark.parametrize("codec", ["topk:0.02", "sign", "int4"])
def test_long_run_sum_tracks_the_true_sum(codec: str) -> None:
    rng = np.random.default_rng(0)
    spec = CodecSpec.parse(codec)
    shape = (50, 40)
    mean = rng.standard_normal(shape).astype(np.float32) * 0.1  # a persistent direction
    residual = [np.zeros(shape, np.float32)]
    true_sum = np.zeros(shape)
    ef_sum = np.zeros(shape)
    plain_sum = np.zeros(shape)
    steps = 300
    for _ in range(steps):
        delta = [(mean + rng.standard_normal(shape).astype(np.float32) * 0.05).astype(np.float32)]
        payload, residual = compress_with_feedback(delta, residual, spec, rng)
        ef_sum += decode(payload)[0]
        plain_sum += decode(compress_with_feedback(delta, [np.zeros(shape, np.float32)], spec)[0])[
            0
        ]
        true_sum += delta[0]
    # Exact identity: what was sent plus what is still owed equals what was produced.
    assert np.allclose(ef_sum + residual[0], true_sum, atol=1e-3)
    ef_err = np.linalg.norm(ef_sum - true_sum) / np.linalg.norm(true_sum)
    plain_err = np.linalg.norm(plain_sum - true_sum) / np.linalg.norm(true_sum)
    assert ef_err < 0.1
    assert ef_err < plain_err / 3


def test_lossless_codec_leaves_no_residual() -> None:
    d = [np.arange(6, dtype=np.float32).reshape(2, 3)]
    payload, residual = compress_with_feedback(
        d, [np.ones((2, 3), np.float32)], CodecSpec.parse("fp32")
    )
    assert np.array_equal(decode(payload)[0], d[0] + 1)
    assert not residual[0].any()


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(FederationError, match="shapes"):
        compress_with_feedback(
            [np.zeros(3, np.float32)], [np.zeros(4, np.float32)], CodecSpec.parse("int8")
        )


def test_store_survives_a_restart_and_is_bound_to_its_channel(tmp_path: Path) -> None:
    like = [np.zeros((3, 2), np.float32), np.zeros(4, np.float32)]
    r = [np.full((3, 2), 0.5, np.float32), np.arange(4, dtype=np.float32)]
    ResidualStore(tmp_path).save("chan-a", r, server_round=3)
    again = ResidualStore(tmp_path)  # a new process, same directory
    loaded = again.load("chan-a", like, server_round=4)
    assert all(np.array_equal(a, b) for a, b in zip(loaded, r, strict=True))
    assert not any(a.any() for a in again.load("chan-b", like, server_round=4))
    assert not any(a.any() for a in again.load("chan-a", [np.zeros(7, np.float32)] * 2, 4))


def test_stale_residual_decays_per_missed_round(tmp_path: Path) -> None:
    store = ResidualStore(tmp_path)
    like = [np.zeros(2, np.float32)]
    store.save("c", [np.ones(2, np.float32)], server_round=2)
    assert np.allclose(store.load("c", like, 3, decay=0.5)[0], 1.0)  # no round missed
    assert np.allclose(store.load("c", like, 5, decay=0.5)[0], 0.25)  # rounds 3, 4 missed
    assert np.allclose(store.load("c", like, 5, decay=1.0)[0], 1.0)


def test_unreadable_store_raises_typed_error(tmp_path: Path) -> None:
    (tmp_path / "residual.npz").write_bytes(b"not a zip")
    with pytest.raises(FederationError, match="unreadable"):
        ResidualStore(tmp_path).load("c", [np.zeros(2, np.float32)], 1)


def test_tracked_estimate_converges_to_a_steady_update() -> None:
    """EF21: each round sends top-k of (delta - estimate); with a steady delta the estimate
    both ends keep becomes the whole update, which residual feedback never hands over."""
    from fedge.federation._residual import compress_difference

    rng = np.random.default_rng(0)
    delta = [rng.normal(0, 1, (40, 25)).astype(np.float32), rng.normal(0, 3, 30).astype(np.float32)]
    estimate = [np.zeros_like(d) for d in delta]
    spec = CodecSpec.parse("topk+global:0.1")
    errors = []
    for _ in range(40):
        payload, estimate = compress_difference(delta, estimate, spec)
        sent = decode(payload)
        assert sum(int(np.count_nonzero(s)) for s in sent) <= round(0.1 * 1030) + 2
        errors.append(sum(float(np.abs(d - e).max()) for d, e in zip(delta, estimate, strict=True)))
    assert errors[-1] < 0.05 * errors[0]
    with pytest.raises(FederationError, match="estimate does not match"):
        compress_difference(delta, [np.zeros(3, np.float32)], spec)


def test_estimate_store_returns_only_the_estimate_asked_for(tmp_path: Path) -> None:
    from fedge.federation._residual import ESTIMATE_FILE

    store = ResidualStore(tmp_path, ESTIMATE_FILE)
    like = [np.zeros((2, 2), np.float32)]
    assert store.load_estimate("chan", like, 1) is None  # nothing stored yet
    store.save("chan", [np.ones((2, 2), np.float32)], server_round=3, seq=2)
    held = store.load_estimate("chan", like, 2)
    assert held is not None and np.array_equal(held[0], np.ones((2, 2)))
    assert store.load_estimate("chan", like, 1) is None  # the server holds another: start over
    assert store.load_estimate("chan", like, 0) is None
    assert store.load_estimate("other-run", like, 2) is None
    assert store.load_estimate("chan", [np.zeros(3, np.float32)], 2) is None


def test_server_tracks_each_site_estimate_and_refuses_a_mismatch() -> None:
    """The server's half of tracked feedback (``SealedStrategy._track``)."""
    from flwr.serverapp.strategy import FedAvg

    from fedge.federation import CodecId, UpdateRejectedError, encode
    from fedge.federation._sealed_strategy import SealedStrategy

    strategy = SealedStrategy(
        FedAvg(),
        None,  # type: ignore[arg-type]  # _track never touches the channel
        lambda n, r: "fp32",
        feedback="tracked",
    )
    glob = [np.zeros(4, np.float32)]
    one = encode([np.ones(4, np.float32)], CodecSpec(CodecId.FP32))
    assert np.array_equal(strategy._track(7, glob, one, 0)[0], np.ones(4))
    assert np.array_equal(strategy._track(7, glob, one, 1)[0], np.full(4, 2.0))
    with pytest.raises(UpdateRejectedError, match="estimate 1, server holds 2") as exc:
        strategy._track(7, glob, one, 1)  # a stale base: the site missed that we moved on
    assert exc.value.reason == "feedback_mismatch"
    assert np.array_equal(strategy._track(7, glob, one, 0)[0], np.ones(4))  # start over
    for bad in (-1, True, "1"):
        with pytest.raises(UpdateRejectedError) as exc:
            strategy._track(7, glob, one, bad)
        assert exc.value.reason == "corrupt_payload"
