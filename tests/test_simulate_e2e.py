"""End to end: real Flower simulation runtime (Ray backend), real training, the report."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from fedge.simulation._config import ALL_METHODS, preset
from fedge.simulation._report import write_report
from fedge.simulation._run import run

pytestmark = pytest.mark.slow

METHOD_KEYS = {
    "rmse",
    "mae",
    "r2",
    "underprovision_rate",
    "asymmetric_cost",
    "per_kpi",
    "by_archetype",
}


@dataclass(frozen=True)
class _Run:
    report: dict  # type: ignore[type-arg]
    page: str
    run_dir: Path


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> _Run:
    """One run of every method and the decisions on four sites (a cluster's size) (each run starts the
    simulation engine and trains the hierarchy: the tests share one)."""
    runs = tmp_path_factory.mktemp("runs")
    config = replace(
        preset("smoke"),
        name="e2e",
        generator=replace(preset("smoke").generator, num_sites=4),
        decisions=True,
    )
    result = run(config, runs)
    json_path, html_path = write_report(result.report, result.run_dir, result.plot_series)
    return _Run(json.loads(json_path.read_text()), html_path.read_text(), result.run_dir)


@pytest.fixture(scope="module")
def report(simulated: _Run) -> dict:  # type: ignore[type-arg]
    return simulated.report


def test_the_page_holds_the_forecast_and_decision_plots(simulated: _Run) -> None:
    assert "Loss per round: training and validation" in simulated.page
    assert simulated.page.count("data:image/png;base64,") == 4 + 3


def test_four_sites_two_rounds_federate(report: dict) -> None:  # type: ignore[type-arg]
    rounds = report["forecast"]["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert r["train_loss"] > 0 and 0 < r["eval_rmse"] < 1
    # Round 2's mean training loss is not reliably below round 1's in this 3- or 4-site, 2-round
    # run (once 0.087 then 0.118, usually 0.127 then 0.116): the model starts at
    # persistence. That training produced a useful model is reliable (~4x here).
    methods = report["forecast"]["methods"]
    assert methods["fedavg"]["rmse"] < 0.8 * methods["seasonal_naive"]["rmse"]
    assert set(report["forecast"]["rounds_by_method"]) == {"fedavg", "fedprox"}
    assert report["timing"]["site_rounds"] == 2 * 4 * 2


def test_report_schema(report: dict) -> None:  # type: ignore[type-arg]
    assert {"config", "forecast", "timing", "data"} <= set(report)
    methods = report["forecast"]["methods"]
    assert set(methods) == set(ALL_METHODS)
    for m in methods.values():
        assert set(m) >= METHOD_KEYS
        assert 0 <= m["underprovision_rate"] <= 1 and m["rmse"] > 0
        assert set(m["per_kpi"]) == {"dl_prb_util", "dl_throughput_mbps", "active_ues"}
    assert report["timing"]["wall_s"] > 0 and report["timing"]["site_rounds_per_min"] > 0
    assert len(report["forecast"]["sites"]) == 4
    assert Path(report["artifacts"]["fedavg_onnx"]).is_file()


def test_every_lead_time_and_the_kept_round_are_reported(report: dict) -> None:  # type: ignore[type-arg]
    """60 minutes at 5-min steps: one model, 12 steps; 5/15/30/60 min scored apart."""
    fc = report["forecast"]
    assert fc["horizon_steps"] == 12 and fc["horizon_minutes"] == 60
    by = fc["by_horizon"]
    assert [(k, v["step"], v["minutes"]) for k, v in by.items()] == [
        ("5", 1, 5), ("15", 3, 15), ("30", 6, 30), ("60", 12, 60),
    ]  # fmt: skip
    for v in by.values():
        assert set(v["methods"]) == set(ALL_METHODS)
    # persistence gets worse with lead time (the model must beat it where it counts)
    pers = [v["methods"]["persistence"]["rmse"] for v in by.values()]
    assert pers == sorted(pers)
    for m in ("fedavg", "fedprox", "local", "centralized"):
        rows = fc["methods"][m]["loss_by_round"]
        best = fc["methods"][m]["best_round"]
        assert 1 <= best <= len(rows)
        assert all(r["val_loss"] > 0 and r["train_loss"] > 0 for r in rows)
        if m != "local":  # local: the most common of the sites' own best rounds
            assert rows[best - 1]["val_loss"] == min(r["val_loss"] for r in rows)


def test_simulate_with_decisions_reports_methods_and_ceilings(simulated: _Run) -> None:
    """``fedge simulate --decisions``: the hierarchy trained on the run's sites, in the report."""
    dec = simulated.report["decisions"]
    assert {"dqn", "always_on", "threshold", "random", "hindsight_bound"} <= set(dec["energy"])
    assert {"ppo", "static", "proportional_forecast", "hindsight_bound"} <= set(dec["slices"])
    ceiling = dec["slices"]["hindsight_bound"]
    assert 0 < ceiling["sla_satisfaction_without_foresight"] <= 1
    assert dec["slices"]["ppo"]["sla_satisfaction"] <= ceiling["sla_satisfaction"]
    page = simulated.page
    assert "Central decisions" in page and "Ceilings (hindsight, not methods)" in page
    assert (simulated.run_dir / "decisions" / "manifest.json").is_file()
    assert dec["forecaster"]["method"] == "fedavg"  # the policies read the federated model
    models = dec["power_models"]
    assert set(models) == {"earth", "tr38864"}
    for m in models.values():
        assert {"dqn", "threshold", "hindsight_bound"} <= set(m["energy"])
        assert "ratio_to_ceiling" in m["energy"]["dqn"]
    assert (simulated.run_dir / "decisions-tr38864" / "manifest.json").is_file()
