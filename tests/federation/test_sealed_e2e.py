"""End to end on Flower's real simulation engine: sealed int8 updates, one site tampered with."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.simulation._comm import comm_plots, pareto
from fedge.simulation._config import SimulationConfig, preset
from fedge.simulation._report import _figure_png, write_report
from fedge.simulation._run import _spec, run


def _weights(config: SimulationConfig) -> int:
    """The forecaster's parameter count: an fp32 update is four bytes per parameter."""
    from fedge.models import LoadForecaster, horizon_steps

    steps = horizon_steps(config.horizon_minutes, config.generator.step_minutes)
    return sum(p.numel() for p in LoadForecaster(_spec(config, steps)).parameters())


@pytest.mark.slow
def test_sealed_int8_run_excludes_the_tampered_site_and_completes(tmp_path: Path) -> None:
    config = replace(
        preset("smoke"),
        name="sealed",
        generator=replace(preset("smoke").generator, num_sites=3),
        methods=("fedavg",),
        codec="int8",
        feedback="residual",  # the classic residual path end to end (tracked: the next tests)
        attacks="tampered=0.34",  # one of three sites: its envelopes are altered in transit
        attack_baseline=False,
        export_onnx=False,
        workers=2,
    )
    result = run(config, tmp_path)
    report = result.report
    comm, security = report["comm"], report["security"]
    n = _weights(config)
    assert security["updates_sealed"] == 3 * 2
    assert security["accepted"] == 2 * 2  # both rounds completed with the two honest sites
    assert security["rejected"] == {"decryption_failed": 2}
    assert comm["codec"] == "int8"
    assert comm["compression_ratio"] > 3.8  # int8 plus per-tensor scales and the envelope
    assert comm["fp32_update_bytes"] > n * 4 > comm["bytes_per_update_mean"] > n
    assert [r["sites_up"] for r in comm["per_round"]] == [3, 3]
    assert comm["downlink_codec"] == "int8"  # the default: the global model sealed in int8
    assert n < comm["bytes_per_model_down_mean"] < 0.3 * comm["fp32_update_bytes"]
    assert comm["bytes_down_total"] > 3 * 2 * 2 * n  # train and evaluate, both rounds
    rounds = report["forecast"]["rounds"]
    assert all(0 < r["eval_rmse"] < 1 for r in rounds)
    assert np.isfinite(report["forecast"]["methods"]["fedavg"]["rmse"])
    assert report["adversarial"]["sites_by_attack"] == {"tampered": 1}
    state = tmp_path / "sealed" / "site-state" / "fedavg"
    assert len(list(state.glob("site-*/residual.npz"))) == 3  # tampering happens in transit
    json_path, html_path = write_report(report, result.run_dir, result.plot_series)
    page = html_path.read_text()
    assert "Updates on the wire" in page and "decryption_failed" in page
    assert json.loads(json_path.read_text())["security"]["rejected"] == {"decryption_failed": 2}


@pytest.mark.slow
def test_int8_downlink_quarters_the_global_model_on_the_wire(tmp_path: Path) -> None:
    """The sealed global model sent down in int8: a quarter of fp32 on the wire, and the
    sites still train from it (their deltas are against what they decoded)."""
    base = replace(
        preset("smoke"),
        generator=replace(preset("smoke").generator, num_sites=2),
        methods=("fedavg",),
        codec="int8",
        num_rounds=1,
        export_onnx=False,
        workers=1,
    )
    comms = {}
    for downlink in ("fp32", "int8"):
        config = replace(base, name=f"down-{downlink}", downlink_codec=downlink)
        report = run(config, tmp_path).report
        comms[downlink] = report["comm"]
        assert report["security"]["accepted"] == 2
        assert np.isfinite(report["forecast"]["methods"]["fedavg"]["rmse"])
    fp32, int8 = comms["fp32"], comms["int8"]
    assert fp32["downlink_codec"] == "fp32" and int8["downlink_codec"] == "int8"
    n = _weights(base)
    assert fp32["bytes_per_model_down_mean"] > n * 4
    # the envelope's fixed part (header, KEM ciphertexts, signature) is the same for both
    fixed = fp32["bytes_per_model_down_mean"] - n * 4
    assert n < int8["bytes_per_model_down_mean"] - fixed < 0.26 * n * 4


@pytest.mark.slow
def test_tracked_feedback_stays_in_step_through_rejections(tmp_path: Path) -> None:
    """Tracked (EF21) feedback on Flower's engine: a site whose replies are refused
    starts over with the server, and no honest reply is ever out of step."""
    config = replace(
        preset("smoke"),
        name="tracked",
        generator=replace(preset("smoke").generator, num_sites=3),
        methods=("fedavg",),
        num_rounds=3,
        codec="topk:0.1",
        feedback="tracked",
        attacks="replayed=0.34",  # round 1 honest, then its round-1 envelope again
        attack_baseline=False,
        export_onnx=False,
        workers=2,
    )
    report = run(config, tmp_path).report
    security = report["security"]
    assert security["rejected"] == {"replayed": 2}  # no feedback_mismatch
    assert security["accepted"] == 3 + 2 + 2
    assert np.isfinite(report["forecast"]["methods"]["fedavg"]["rmse"])
    state = tmp_path / "tracked" / "site-state" / "fedavg"
    assert len(list(state.glob("site-*/estimate.npz"))) == 3
    assert not list(state.glob("site-*/residual.npz"))


def test_pareto_front_and_plot() -> None:
    points: list[dict[str, Any]] = [
        {"codec": "fp32", "rmse": 0.10, "bytes_per_update_mean": 480_000.0},
        {"codec": "int8", "rmse": 0.10, "bytes_per_update_mean": 120_000.0},
        {"codec": "int4", "rmse": 0.12, "bytes_per_update_mean": 130_000.0},
        {"codec": "topk", "rmse": 0.11, "bytes_per_update_mean": 8_000.0},
    ]
    assert pareto(points) == ["int8", "topk"]
    plots = comm_plots({"comm_sweep": points}, _figure_png)
    assert len(plots) == 1 and len(plots[0][1]) > 1000
    assert comm_plots({}, _figure_png) == []
