"""``bench/forecast``'s targets follow the figures of the report they judge."""

from __future__ import annotations

import copy
from typing import Any

from bench.forecast import best_federated, by_horizon, targets

LEADS = ("5", "15", "30", "60")


def report(cost: dict[str, float], rmse: dict[str, float]) -> dict[str, Any]:
    """A report whose every lead time has the same figures per method."""
    row = {
        m: {
            "rmse": rmse[m],
            "asymmetric_cost": cost[m],
            "r2": 0.7,
            "underprovision_rate": 0.04,
            "mae": 0.0,
        }
        for m in cost
    }
    return {
        "config": {"generator": {"step_minutes": 5}},
        "forecast": {
            "horizon_steps": 12,
            "methods": copy.deepcopy(row),
            "by_horizon": {
                m: {"step": int(m) // 5, "minutes": int(m), "methods": copy.deepcopy(row)}
                for m in LEADS
            },
        },
    }


COST = {
    "fedavg": 1.0,
    "fedprox": 0.9,
    "centralized": 0.9,
    "local": 1.2,
    "persistence": 1.5,
    "seasonal_naive": 3.0,
}
RMSE = {
    "fedavg": 0.10,
    "fedprox": 0.09,
    "centralized": 0.088,
    "local": 0.1,
    "persistence": 0.12,
    "seasonal_naive": 0.2,
}


def test_every_target_met_when_the_figures_say_so() -> None:
    r = report(COST, RMSE)
    assert best_federated(r) == "fedprox"  # the lowest asymmetric cost
    t = targets("hard", r)
    assert t["best_federated"] == "fedprox"
    for key in (
        "beats_persistence_cost_every_horizon",
        "beats_seasonal_naive_cost_every_horizon",
        "beats_persistence_rmse_30_60",
        "within_1_05_of_centralized",
        "below_local",
        "hard_r2_above_0_6_at_15min",
        "hard_underprovision_below_5pct_at_15min",
    ):
        assert t[key] is True, key


def test_one_lead_time_or_ratio_off_fails_its_target_only() -> None:
    r = report(COST, RMSE)
    r["forecast"]["by_horizon"]["60"]["methods"]["fedprox"]["rmse"] = 0.13
    r["forecast"]["by_horizon"]["5"]["methods"]["fedprox"]["asymmetric_cost"] = 1.6
    r["forecast"]["methods"]["centralized"]["rmse"] = 0.08  # 0.09 / 0.08 > 1.05
    r["forecast"]["by_horizon"]["15"]["methods"]["fedprox"]["r2"] = 0.55
    t = targets("hard", r)
    assert t["beats_persistence_rmse_30_60"] is False
    assert t["beats_persistence_cost_every_horizon"] is False
    assert t["beats_seasonal_naive_cost_every_horizon"] is True
    assert t["within_1_05_of_centralized"] is False
    assert t["hard_r2_above_0_6_at_15min"] is False
    assert t["below_local"] is True
    assert "hard_r2_above_0_6_at_15min" not in targets("demo", r)


def test_a_missing_method_or_lead_time_is_not_judged() -> None:
    cost = {k: v for k, v in COST.items() if k not in ("centralized", "local")}
    r = report(cost, RMSE)
    del r["forecast"]["by_horizon"]["60"]
    t = targets("demo", r)
    assert t["within_1_05_of_centralized"] is None and t["below_local"] is None
    assert t["beats_persistence_rmse_30_60"] is None
    no_fed = report({"persistence": 1.0, "seasonal_naive": 2.0}, RMSE)
    assert targets("demo", no_fed) == {"best_federated": None}


def test_a_report_without_lead_times_is_judged_on_its_whole_horizon() -> None:
    r = report(COST, RMSE)
    del r["forecast"]["by_horizon"]
    rows = by_horizon(r)
    assert list(rows) == ["all"] and rows["all"]["minutes"] == 60
    assert targets("demo", r)["beats_persistence_cost_every_horizon"] is True
