"""One model for every lead time up to an hour: ONNX export and the agent's forecast path
follow a 12-step spec as they follow a 1-step one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fedge.core import step_minute_of_week
from fedge.edge_agent import AnomalyConfig, ForecastEngine, Serving, Store
from fedge.models import (
    ForecastSpec,
    LoadForecaster,
    OnnxForecaster,
    export_onnx,
    predict,
    site_features,
)
from tests.edge_agent.conftest import STEP, seed_history, site_values

SPEC = ForecastSpec(lookback=12, horizon=12, hidden=(16, 8))


def _model(tmp_path: Path) -> tuple[LoadForecaster, OnnxForecaster]:
    torch.manual_seed(3)
    model = LoadForecaster(SPEC)
    return model, OnnxForecaster(export_onnx(model, tmp_path / "m.onnx"))


def test_onnx_export_gives_every_step_of_the_hour(tmp_path: Path) -> None:
    model, onnx = _model(tmp_path)
    assert onnx.spec == SPEC
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, SPEC.lookback, SPEC.n_features)).astype(np.float32)
    got = onnx.predict(x)
    assert got.shape == (5, 12, 3)
    np.testing.assert_allclose(got, predict(model, x), rtol=1e-4, atol=1e-5)


def test_the_agent_forecasts_twelve_steps_as_training_builds_them(tmp_path: Path) -> None:
    _, onnx = _model(tmp_path)
    values, _ = site_values(days=3)
    db = tmp_path / "a.db"
    newest = 5_000_000
    seed_history(db, ["x"], values, newest)
    store = Store(db)
    try:
        engine = ForecastEngine(store, STEP, AnomalyConfig())
        engine.cell("x")
        rows = engine.forecast(["x"], Serving("v1", onnx))
        assert [r.step for r in rows] == list(range(newest + 1, newest + 13))
        scaler, profile = engine.cells["x"].scaler, engine.cells["x"].profile
        assert scaler is not None and profile is not None
        mow = step_minute_of_week(np.arange(newest - 11, newest + 1, dtype=np.int64), STEP)
        feats = site_features(values[-12:], mow, scaler, profile, SPEC.horizon)
        want = np.maximum(scaler.inverse(onnx.predict(feats[None])[0], (0, 2, 3)), 0.0)
        np.testing.assert_allclose([r.values for r in rows], want, rtol=1e-5, atol=1e-4)
    finally:
        store.close()
