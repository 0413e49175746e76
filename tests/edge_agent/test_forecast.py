"""The forecast path matches the training features; residual alerts catch an outage."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.core import step_minute_of_week
from fedge.edge_agent import (
    AnomalyConfig,
    ForecastEngine,
    KpiSample,
    ResidualDetector,
    Serving,
    Store,
)
from fedge.edge_agent._replay import replay_alerts, score_alerts
from fedge.models import OnnxForecaster, SiteProfile, SiteScaler, site_features
from tests.edge_agent.conftest import STEP, Models, seed_history, site_values


def test_batched_forecasts_equal_the_training_feature_path(
    tmp_path: Path, tiny_models: Models
) -> None:
    values, _ = site_values(days=3)
    db = tmp_path / "a.db"
    seed_history(db, ["x", "y"], values, 5_000_000)
    store = Store(db)
    try:
        engine = ForecastEngine(store, STEP, AnomalyConfig())
        model = OnnxForecaster(tiny_models.good)
        serving = Serving("v1", model)
        for cell in ("x", "y"):
            engine.cell(cell)
        rows = {r.cell: r for r in engine.forecast(["x", "y"], serving)}
        scaler, profile = engine.cells["x"].scaler, engine.cells["x"].profile
        assert isinstance(scaler, SiteScaler) and isinstance(profile, SiteProfile)
        assert model.spec.site_profile
        steps = np.arange(5_000_000 - 11, 5_000_001, dtype=np.int64)
        mow = step_minute_of_week(steps, STEP)
        feats = site_features(values[-12:], mow, scaler, profile, model.spec.horizon)
        want = np.maximum(scaler.inverse(model.predict(feats[None])[0], (0, 2, 3)), 0.0)[0]
        np.testing.assert_allclose(rows["x"].values, want, rtol=1e-5, atol=1e-4)
        assert rows["x"].step == 5_000_001 and rows["x"].made_step == 5_000_000
        assert rows["x"].values == rows["y"].values  # same history, same forecast
    finally:
        store.close()


def test_an_injected_outage_raises_an_alert_and_normal_traffic_stays_quiet(
    tiny_models: Models,
) -> None:
    values, _ = site_values(days=4, seed=21)
    values = values.copy()
    outage = slice(3 * 288 + 100, 3 * 288 + 106)
    values[outage, 2] = 0.0  # throughput
    values[outage, 3] = 0.0  # active UEs
    serving = Serving("v1", OnnxForecaster(tiny_models.good))
    fired = replay_alerts(values, serving, AnomalyConfig(), warmup=2 * 288)
    assert fired[outage.start], "no alert at the outage's first step"
    labels = np.zeros(len(values), dtype=np.int8)
    labels[outage] = 1
    score = score_alerts(fired[2 * 288 :], labels[2 * 288 :])
    assert score.events == 1 and score.event_recall == 1.0
    assert score.alerts < 0.05 * (len(values) - 2 * 288)  # quiet on normal traffic


def test_detector_severity_kpis_and_unreported_kpis() -> None:
    det = ResidualDetector(
        AnomalyConfig(window=50, min_history=10, z_warning=4, z_critical=8, persistence=1)
    )
    rng = np.random.default_rng(0)
    s = KpiSample("c", 0.0, 0, (50.0, None, 100.0, 20.0, 30.0))
    for _ in range(30):
        assert det.score(s, rng.normal(0, 0.1, 3), (50.0, 100.0, 20.0)) is None
    warn = det.score(s, np.array([0.0, 0.55, 0.0]), (50.0, 100.0, 20.0))
    assert warn is not None and warn.severity == "warning"
    assert [k.name for k in warn.kpis] == ["dl_throughput_mbps", "dl_throughput_per_prb"]
    crit = det.score(s, np.array([-5.0, 0.0, -5.0]), (50.0, 100.0, 20.0))
    assert crit is not None and crit.severity == "critical"
    assert {"dl_prb_util", "active_ues"} <= {k.name for k in crit.kpis}
    partial = ResidualDetector(AnomalyConfig(window=20, min_history=5))
    for _ in range(10):
        partial.score(s, np.array([0.01, np.nan, 0.02]), (1.0, 1.0, 1.0))
    z = partial.zscores("c", np.array([0.0, np.nan, 9.0]))
    assert z is not None and np.isnan(z[1]) and z[2] > 5


def test_engine_state_survives_a_restart(tmp_path: Path, tiny_models: Models) -> None:
    """Window, scaler, pending forecast and residual history come back from the store."""
    values, _ = site_values(days=2)
    db = tmp_path / "a.db"
    seed_history(db, ["c"], values[:-20], 7_000_000)
    serving = Serving("v1", OnnxForecaster(tiny_models.good))
    store = Store(db)
    engine = ForecastEngine(store, STEP, AnomalyConfig(min_history=5))
    for k in range(1, 11):
        sample = KpiSample(
            "c", (7_000_000 + k) * STEP, 7_000_000 + k, tuple(float(v) for v in values[-20 + k])
        )
        engine.observe(sample, True)
        store.commit_batch([sample], engine.forecast(["c"], serving), time.time())
    before = engine.cells["c"]
    store.close()
    store = Store(db)
    try:
        again = ForecastEngine(store, STEP, AnomalyConfig(min_history=5)).cell("c")
        assert again is not None
        np.testing.assert_array_equal(again.window, before.window)
        assert again.pending.keys() == before.pending.keys() == {7_000_011}
        assert again.scaler is not None and before.scaler is not None
        np.testing.assert_allclose(again.scaler.mean, before.scaler.mean)
    finally:
        store.close()


@pytest.mark.parametrize("profile", [None, {"table": [[1.0]]}], ids=["legacy", "corrupt"])
def test_a_scaler_stored_without_a_usable_profile_is_refitted(
    tmp_path: Path, tiny_models: Models, profile: dict[str, Any] | None
) -> None:
    values, _ = site_values(days=2)
    db = tmp_path / "a.db"
    seed_history(db, ["x"], values, 5_000_000)
    store = Store(db)
    try:
        saved_before: dict[str, Any] = dict(SiteScaler.fit(values).to_dict())
        if profile is not None:
            saved_before["profile"] = profile
        store.put_scaler("x", saved_before, 10)
        engine = ForecastEngine(store, STEP, AnomalyConfig())
        state = engine.cell("x")
        assert state is not None and state.scaler is None
        rows = engine.forecast(["x"], Serving("v1", OnnxForecaster(tiny_models.good)))
        assert rows and state.profile is not None
        saved = store.scaler("x")
        assert saved is not None and "profile" in saved[0]
    finally:
        store.close()


def test_detector_cached_statistics_track_the_exact_ones() -> None:
    """Median and MAD are refreshed every window/24 residuals: z stays close to the exact one,
    and a lasting shift in a cell's residuals is absorbed instead of alerting forever."""
    cfg = AnomalyConfig(window=288, min_history=24)
    det = ResidualDetector(cfg)
    rng = np.random.default_rng(3)
    s = KpiSample("c", 0.0, 0, (50.0, 1.0, 100.0, 20.0, 30.0))
    history: list[np.ndarray] = []
    worst = 0.0
    for i in range(900):
        r = rng.normal(2.0 if i >= 500 else 0.0, 0.3, 3)  # the cell's bias shifts at step 500
        z = det.zscores("c", r)
        if len(history) >= cfg.min_history:
            hist = np.array(history[-cfg.window :])
            med = np.median(hist, axis=0)
            scale = np.maximum(1.4826 * np.median(np.abs(hist - med), axis=0), 0.05)
            assert z is not None
            if not 500 <= i < 500 + cfg.window:  # away from the shift both are settled
                worst = max(worst, float(np.max(np.abs(z[:3] - (r - med) / scale))))
        det.score(s, r, (50.0, 100.0, 20.0))
        history.append(r)
    assert 0.0 < worst < 0.5  # cached, not recomputed each step, and never far off
    late = det.zscores("c", np.array([2.0, 2.0, 2.0]))
    assert late is not None and np.all(np.abs(late) < 1.0)  # the new bias is the new normal
