from __future__ import annotations

import numpy as np
import pytest

from fedge.simulation._baselines import actuals, persistence, seasonal
from fedge.simulation._metrics import pool_scores, score_site

RANGE = np.array([100.0, 500.0, 200.0])


def series(shift: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    actual = rng.uniform(0, 1, size=(50, 2, 3)) * RANGE
    return actual, actual + shift * RANGE


def test_perfect_forecast() -> None:
    actual, forecast = series(0.0)
    pooled = pool_scores([score_site("a", "rural", actual, forecast, RANGE)])
    assert pooled["rmse"] == 0 and pooled["underprovision_rate"] == 0
    assert pooled["r2"] == pytest.approx(1.0)


def test_under_forecasts_count_and_cost_five_times_more() -> None:
    actual, low = series(-0.1)
    _, high = series(0.1)
    under = pool_scores([score_site("a", "rural", actual, low, RANGE)])
    over = pool_scores([score_site("a", "rural", actual, high, RANGE)])
    assert under["underprovision_rate"] == 1.0 and over["underprovision_rate"] == 0.0
    assert under["rmse"] == pytest.approx(0.1) and over["rmse"] == pytest.approx(0.1)
    assert under["asymmetric_cost"] == pytest.approx(5 * over["asymmetric_cost"])
    # Per-KPI figures stay in original units.
    assert under["per_kpi"]["dl_throughput_mbps"]["rmse"] == pytest.approx(0.1 * 500)


def test_pooling_weights_sites_by_points() -> None:
    a_act, a_fc = series(0.1)
    b_act, b_fc = series(0.0)
    pooled = pool_scores(
        [
            score_site("a", "x", a_act, a_fc, RANGE),
            score_site("b", "x", b_act[:, :1], b_fc[:, :1], RANGE),
        ]
    )
    assert pooled["points"] == 150
    assert pooled["rmse"] == pytest.approx(np.sqrt(0.01 * 100 / 150))


def test_bad_inputs() -> None:
    actual, forecast = series(0.0)
    with pytest.raises(ValueError, match="differ"):
        score_site("a", "x", actual, forecast[:, :1], RANGE)
    with pytest.raises(ValueError, match="no site scores"):
        pool_scores([])


def test_baselines() -> None:
    values = np.arange(40, dtype=np.float32).reshape(20, 2).repeat(3, axis=1)[:, :5]
    ends = np.array([10, 12])
    np.testing.assert_array_equal(persistence(values, ends, 2, (0,))[:, :, 0], [[20, 20], [24, 24]])
    np.testing.assert_array_equal(actuals(values, ends, 2, (0,))[:, :, 0], [[22, 24], [26, 28]])
    np.testing.assert_array_equal(seasonal(values, ends, 2, (0,), 4)[:, :, 0], [[14, 16], [18, 20]])
    with pytest.raises(ValueError, match="history"):
        seasonal(values, ends, 2, (0,), 12)


def test_report_horizons_at_5_and_2_minute_steps() -> None:
    from fedge.simulation._metrics import report_horizons

    assert report_horizons(12, 5) == [(5, 1), (15, 3), (30, 6), (60, 12)]
    assert report_horizons(3, 5) == [(5, 1), (15, 3)]
    # 2-min steps: 5 and 15 min are ties, the shorter step taken (4 and 14 min)
    assert report_horizons(30, 2) == [(5, 2), (15, 7), (30, 15), (60, 30)]
    assert report_horizons(1, 60) == [(5, 1)]  # one pick per step


def test_score_by_horizon_slices_each_step() -> None:
    from fedge.simulation._errors import SimulationError
    from fedge.simulation._metrics import score_site_by_horizon

    actual, forecast = series(0.0)
    forecast = forecast.copy()
    forecast[:, 1] += 0.1 * RANGE  # only step 2 is off
    by = score_site_by_horizon("a", "x", actual, forecast, RANGE, [1, 2])
    assert pool_scores([by[1]])["rmse"] == 0
    assert pool_scores([by[2]])["rmse"] == pytest.approx(0.1)
    with pytest.raises(SimulationError, match="outside"):
        score_site_by_horizon("a", "x", actual, forecast, RANGE, [3])
    with pytest.raises(SimulationError, match="matching"):
        score_site_by_horizon("a", "x", actual, forecast[:, :1], RANGE, [1])
    with pytest.raises(SimulationError, match="positive"):
        from fedge.simulation._metrics import report_horizons

        report_horizons(0, 5)
