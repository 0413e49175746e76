"""Error feedback: the long-run sum of what is sent tracks the true sum; residuals persist."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from federation import CodecSpec, FederationError, ResidualStore, compress_with_feedback, decode


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
