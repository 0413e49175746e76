"""Closed-form personalisation: an asymmetric ridge correction of a shared model."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.models import (
    Correction,
    ForecastSpec,
    ModelError,
    OutputCalibration,
    fit_correction,
    fit_output_calibration,
)
from fedge.models._personal import asymmetric_cost
from fedge.models._spec import N_KPIS

SPEC = ForecastSpec(lookback=4, horizon=2, hidden=(4, 4))


def _site(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows, a shared model's forecasts that miss this site's evening lift, targets."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, SPEC.lookback, SPEC.n_features)).astype(np.float32)
    t = np.arange(n) * 2 * np.pi / 96
    x[:, -1, N_KPIS : N_KPIS + 2] = np.stack([np.sin(t), np.cos(t)], axis=1)  # the time encodings
    shared = rng.normal(size=(n, SPEC.horizon, 3)).astype(np.float32)
    lift = 0.8 * np.sin(t)[:, None, None] + 0.3  # the site's own pattern the model lacks
    y = (shared + lift + 0.05 * rng.normal(size=shared.shape)).astype(np.float32)
    return x, shared, y


def test_a_calibration_fitted_on_a_sites_days_lowers_its_error_on_later_days() -> None:
    x, pred, y = _site(900, 0)
    fit, later = slice(0, 600), slice(600, None)
    cal = fit_output_calibration(x[fit], pred[fit], y[fit], SPEC)
    assert cal is not None
    before = asymmetric_cost(y[later] - pred[later], SPEC.beta_under, SPEC.beta_over)
    after = asymmetric_cost(
        y[later] - cal.apply(x[later], pred[later]), SPEC.beta_under, SPEC.beta_over
    )
    assert after < 0.1 * before
    again = OutputCalibration.from_dict(cal.to_dict())
    np.testing.assert_allclose(again.apply(x[later], pred[later]), cal.apply(x[later], pred[later]))


def test_the_fit_weights_misses_like_the_forecasters_loss() -> None:
    rng = np.random.default_rng(1)
    phi = rng.normal(size=(2000, 3))
    resid = rng.normal(size=(2000, 1))  # nothing to learn but the level
    cor = fit_correction(phi, resid, beta_under=5.0, beta_over=1.0, holdout=0.5)
    assert cor is not None
    # the 5:1 expectile of a standard normal is about +0.6: forecasts lean high
    assert 0.4 < cor.intercept[0] < 0.8


def test_a_site_like_the_shared_model_keeps_the_shared_forecast() -> None:
    x, pred, _ = _site(400, 2)
    assert fit_output_calibration(x, pred, pred.copy(), SPEC) is None  # nothing to correct
    assert fit_output_calibration(x[:50], pred[:50], pred[:50] + 1, SPEC) is None  # too few


def test_bad_input_is_refused() -> None:
    x, pred, y = _site(200, 3)
    with pytest.raises(ModelError, match="targets"):
        fit_output_calibration(x, pred, y[:, :1], SPEC)
    with pytest.raises(ModelError, match="windows must be"):
        fit_output_calibration(x[:, :2], pred, y, SPEC)
    with pytest.raises(ModelError, match="non-finite"):
        bad = y.copy()
        bad[3, 0, 0] = np.nan
        fit_output_calibration(x, pred, bad, SPEC)
    with pytest.raises(ModelError, match="pair up"):
        fit_correction(np.zeros((10, 2)), np.zeros((9, 1)), beta_under=5, beta_over=1)
    with pytest.raises(ModelError, match="holdout"):
        fit_correction(np.zeros((10, 2)), np.zeros((10, 1)), beta_under=5, beta_over=1, holdout=1)
    with pytest.raises(ModelError, match="ridge"):
        fit_correction(np.zeros((10, 2)), np.zeros((10, 1)), beta_under=5, beta_over=1, ridges=())
    cal = fit_output_calibration(x, pred, y, SPEC)
    assert cal is not None
    with pytest.raises(ModelError, match="takes"):
        cal.correction.predict(np.zeros((2, 3)))
    record = cal.to_dict()
    with pytest.raises(ModelError, match="does not fit its spec"):
        OutputCalibration.from_dict({**record, "spec": {**record["spec"], "horizon": 3}})
    with pytest.raises(ModelError, match="needs"):
        OutputCalibration.from_dict({"spec": record["spec"]})
    with pytest.raises(ModelError, match="non-finite"):
        Correction.from_dict({**record["correction"], "intercept": [float("nan")] * 6})
    with pytest.raises(ModelError, match="do not agree"):
        Correction.from_dict({**record["correction"], "intercept": [0.0]})
    with pytest.raises(ModelError, match="bad correction record"):
        Correction.from_dict({"coef": [[1.0]]})
