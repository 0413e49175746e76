"""Filling the decision arrays (``fedge.decisions.DecisionData``) from a fleet of sites.

Demand is the site's own downlink PRB utilisation (fraction of one site's radio
capacity). The hour-ahead forecasts come from the model the fleet serves: the forecaster
``fedge simulate`` trains with FedAvg (its default spec, a 60-minute horizon), federated
over the decision sites' training days, its best round chosen on their validation days,
then run over every step. Live, the coordinator feeds the policies that model's uploaded
forecasts, so the policies learn on the inputs they will get; no forecast they see was
made by a model fitted on held-out days.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.core import KPI_NAMES, TARGET_INDEX
from fedge.decisions import (
    DEFAULT_HEADROOM,
    EARTH_MACRO,
    HOUR_STEPS,
    CarrierPower,
    DecisionData,
    DecisionError,
    check_headroom,
    make_clusters,
)
from fedge.federation import FederationPlan
from fedge.models import (
    ForecastSpec,
    SiteScaler,
    Weights,
    fit_profile,
    horizon_steps,
    site_features,
    split_bounds,
    windows,
)
from fedge.simulation._config import SimulationConfig
from fedge.simulation._series import SiteSeries
from fedge.simulation._source import SiteSource, archive_sites

__all__ = ["build_data", "forecast_all", "hour_ahead_plan", "hour_ahead_spec"]

_PRB = KPI_NAMES.index("dl_prb_util")
_UES = KPI_NAMES.index("active_ues")
_STEP_MINUTES = 5


def hour_ahead_spec() -> ForecastSpec:
    """The fleet's forecaster (``fedge simulate``'s defaults) at a one-hour horizon."""
    c = SimulationConfig()
    horizon = horizon_steps(60, _STEP_MINUTES)
    if horizon != HOUR_STEPS:  # the policies read exactly one hour of forecast
        raise DecisionError(f"an hour is {horizon} steps, the policies read {HOUR_STEPS}")
    return ForecastSpec(
        lookback=c.lookback, horizon=horizon, hidden=c.hidden, beta_under=c.beta_under
    )


def hour_ahead_plan(
    data_spec: str, rounds: int, local_epochs: float, seed: int, val_days: int, test_days: int
) -> FederationPlan:
    """FedAvg as ``fedge simulate`` runs it (its batch and learning-rate schedule)."""
    c = SimulationConfig()
    return FederationPlan(
        data_spec=data_spec,
        strategy="fedavg",
        num_rounds=rounds,
        local_epochs=local_epochs,
        batch_size=c.batch_size,
        learning_rate=c.learning_rate,
        seed=seed,
        val_days=val_days,
        test_days=test_days,
        forecast=hour_ahead_spec(),
    )


def build_data(
    source: SiteSource,
    cluster_size: int,
    val_days: int,
    test_days: int,
    forecast_rounds: int,
    seed: int,
    on_round: Callable[[], None] | None = None,
    headroom: float = DEFAULT_HEADROOM,
    power: CarrierPower = EARTH_MACRO,
    *,
    local_epochs: float = 1.0,
    workers: int = 2,
) -> tuple[DecisionData, Weights]:
    """Load the clustered sites, federate the hour-ahead forecaster over them, forecast
    every step; returns the arrays and the federated model's weights."""
    from fedge.simulation._federated import run_federated

    check_headroom(headroom)
    if forecast_rounds < 1:
        raise DecisionError(f"forecast_rounds must be >= 1, got {forecast_rounds}")
    if not (local_epochs > 0 and math.isfinite(local_epochs)):
        raise DecisionError(f"local_epochs must be positive, got {local_epochs}")
    if workers < 1:
        raise DecisionError(f"workers must be >= 1, got {workers}")
    clusters = make_clusters(source.num_sites, cluster_size)
    series = [source.site(int(i)) for i in clusters.ravel()]
    steps = {s.steps for s in series}
    if len(steps) != 1 or len({s.step_minutes for s in series}) != 1:
        raise DecisionError("decision sites must share one time grid (same steps and step)")
    if series[0].step_minutes != _STEP_MINUTES:
        raise DecisionError(
            f"the decision layer works on 5-minute steps, got {series[0].step_minutes}"
        )
    spd = series[0].steps_per_day
    try:
        val_start, test_start = split_bounds(series[0].steps, spd, val_days, test_days)
    except Exception as exc:
        raise DecisionError(str(exc)) from exc
    for s in series:
        if np.isnan(s.values[:, [_PRB, _UES]]).any():
            raise DecisionError(f"{s.site_id}: dl_prb_util and active_ues must be reported")

    with tempfile.TemporaryDirectory(prefix="fedge-decision-sites-") as tmp:
        # Exactly the decision sites, in cluster order, as the federation's fleet.
        fleet = archive_sites(series, Path(tmp))
        plan = hour_ahead_plan(
            json.dumps(fleet.spec(), sort_keys=True),
            forecast_rounds,
            local_epochs,
            seed,
            val_days,
            test_days,
        )
        fed = run_federated(plan, len(series), workers, _per_round(on_round))
    weights = fed.outcome.weights
    fc, ue_max = forecast_all(series, plan.forecast, weights, val_start)
    load = np.stack([s.values[:, _PRB].astype(np.float64) / 100.0 for s in series])
    ues = np.stack([s.values[:, _UES].astype(np.float64) for s in series]) / ue_max[:, None]
    t_prb, t_ues = TARGET_INDEX.index(_PRB), TARGET_INDEX.index(_UES)
    fc_load = np.clip(fc[..., t_prb] / 100.0, 0.0, None)
    record: dict[str, Any] = {
        "method": "fedavg",
        "rounds": forecast_rounds,
        "local_epochs": local_epochs,
        "best_round": fed.outcome.best_round,
        "sites": len(series),
        "spec": plan.forecast.to_dict(),
        "val_rmse_fc_load": _val_rmse(load, fc_load, val_start, test_start),
        "wall_s": round(fed.wall_s, 1),
    }
    data = DecisionData(
        site_ids=tuple(s.site_id for s in series),
        archetypes=tuple(s.archetype for s in series),
        load=np.clip(load, 0.0, None),
        ues=np.clip(ues, 0.0, None),
        fc_load=fc_load,
        fc_ues=np.clip(fc[..., t_ues] / ue_max[:, None, None], 0.0, None),
        minute_of_week=series[0].minute_of_week(),
        steps_per_day=spd,
        val_start=val_start,
        test_start=test_start,
        clusters=np.arange(len(series), dtype=np.int64).reshape(clusters.shape),
        headroom=headroom,
        power=power,
        forecaster=record,
    )
    return data, weights


def forecast_all(
    series: list[SiteSeries], spec: ForecastSpec, weights: Weights, val_start: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(sites, steps, horizon, targets) in original units, NaN where no window fits, and
    each site's training maximum of active UEs (the UE scale of the arrays).

    Features as a site builds them for its federated training (``prepare_site``): scaler
    and profile fitted on the training days only."""
    import torch

    from fedge.models import LoadForecaster, predict, set_weights

    model = LoadForecaster(spec)
    set_weights(model, weights)
    steps = series[0].steps
    out = np.full((len(series), steps, spec.horizon, len(TARGET_INDEX)), np.nan)
    ends = np.arange(spec.lookback - 1, steps - spec.horizon, dtype=np.int64)
    ue_max = np.empty(len(series))
    with torch.no_grad():
        for k, s in enumerate(series):
            mow = s.minute_of_week()
            scaler = SiteScaler.fit(s.values[:val_start])
            ue_max[k] = max(float(scaler.high[_UES]), 1.0)
            profile = (
                fit_profile(
                    s.values[:val_start], mow[:val_start], s.steps_per_day, scaler, TARGET_INDEX
                )
                if spec.site_profile
                else None
            )
            f = site_features(s.values, mow, scaler, profile, spec.horizon)
            x, _ = windows(f, f[:, list(TARGET_INDEX)], ends, spec)
            out[k, ends] = scaler.inverse(predict(model, x, batch_size=4096), TARGET_INDEX)
    return out, ue_max


def _per_round(on_round: Callable[[], None] | None) -> Callable[[int], None] | None:
    if on_round is None:
        return None
    tick = on_round

    def advance(_round: int) -> None:
        tick()

    return advance


def _val_rmse(
    load: NDArray[np.float64], fc_load: NDArray[np.float64], val_start: int, test_start: int
) -> float:
    """RMSE (fraction of PRBs) of every lead time of forecasts made on validation days
    whose targets stay inside them."""
    h = fc_load.shape[2]
    ends = np.arange(val_start - 1, test_start - h, dtype=np.int64)
    target = np.stack([load[:, ends + 1 + j] for j in range(h)], axis=-1)
    err = fc_load[:, ends] - np.clip(target, 0.0, None)
    return round(float(np.sqrt(np.mean(err**2))), 5)
