"""Filling the decision arrays (``fedge.decisions.DecisionData``) from a fleet of sites.

Demand is the site's own downlink PRB utilisation (fraction of one site's radio
capacity). The hour-ahead forecasts come from the project's forecaster architecture
(:class:`models.LoadForecaster`) trained for a 12-step (one hour) horizon on the training
days only, then run over every step; the agents never see a forecast made with held-out
data in its fitting.
"""

from __future__ import annotations

from collections.abc import Callable

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
from fedge.models import ForecastSpec, SiteScaler, site_features, split_bounds, windows
from fedge.simulation._source import SiteSource

_PRB = KPI_NAMES.index("dl_prb_util")
_UES = KPI_NAMES.index("active_ues")


def hour_ahead_spec() -> ForecastSpec:
    # Without the site profile: the decision policies were trained and documented on this
    # forecaster's inputs, and an hour-ahead profile would add 39 inputs per step.
    return ForecastSpec(lookback=12, horizon=HOUR_STEPS, site_profile=False)


def build_data(
    source: SiteSource,
    cluster_size: int,
    val_days: int,
    test_days: int,
    forecast_epochs: int,
    seed: int,
    on_epoch: Callable[[], None] | None = None,
    headroom: float = DEFAULT_HEADROOM,
    power: CarrierPower = EARTH_MACRO,
) -> DecisionData:
    """Load the clustered sites, train the hour-ahead forecaster, forecast every step."""
    check_headroom(headroom)
    clusters = make_clusters(source.num_sites, cluster_size)
    series = [source.site(int(i)) for i in clusters.ravel()]
    steps = {s.steps for s in series}
    if len(steps) != 1 or len({s.step_minutes for s in series}) != 1:
        raise DecisionError("decision sites must share one time grid (same steps and step)")
    if series[0].step_minutes != 5:
        raise DecisionError(
            f"the decision layer works on 5-minute steps, got {series[0].step_minutes}"
        )
    spd = series[0].steps_per_day
    try:
        val_start, test_start = split_bounds(series[0].steps, spd, val_days, test_days)
    except Exception as exc:
        raise DecisionError(str(exc)) from exc
    spec = hour_ahead_spec()
    feats, scalers = [], []
    for s in series:
        if np.isnan(s.values[:, [_PRB, _UES]]).any():
            raise DecisionError(f"{s.site_id}: dl_prb_util and active_ues must be reported")
        scaler = SiteScaler.fit(s.values[:val_start])
        scalers.append(scaler)
        feats.append(site_features(s.values, s.minute_of_week(), scaler))
    weights = _train_forecaster(feats, spec, val_start, forecast_epochs, seed, on_epoch)
    fc = _forecast_all(feats, scalers, spec, weights)
    load = np.stack([s.values[:, _PRB].astype(np.float64) / 100.0 for s in series])
    ue_max = np.array([max(float(sc.high[_UES]), 1.0) for sc in scalers])
    ues = np.stack([s.values[:, _UES].astype(np.float64) for s in series]) / ue_max[:, None]
    t_prb, t_ues = TARGET_INDEX.index(_PRB), TARGET_INDEX.index(_UES)
    return DecisionData(
        site_ids=tuple(s.site_id for s in series),
        archetypes=tuple(s.archetype for s in series),
        load=np.clip(load, 0.0, None),
        ues=np.clip(ues, 0.0, None),
        fc_load=np.clip(fc[..., t_prb] / 100.0, 0.0, None),
        fc_ues=np.clip(fc[..., t_ues] / ue_max[:, None, None], 0.0, None),
        minute_of_week=series[0].minute_of_week(),
        steps_per_day=spd,
        val_start=val_start,
        test_start=test_start,
        clusters=np.arange(len(series), dtype=np.int64).reshape(clusters.shape),
        headroom=headroom,
        power=power,
    )


def _train_forecaster(
    feats: list[NDArray[np.float32]],
    spec: ForecastSpec,
    val_start: int,
    epochs: int,
    seed: int,
    on_epoch: Callable[[], None] | None,
) -> list[NDArray[np.float32]]:
    """Pooled training on the training days of every decision site (targets before val_start)."""
    import torch

    from fedge.models import LoadForecaster, get_weights, train_epochs

    torch.manual_seed(seed)
    xs, ys = [], []
    # Every third window: neighbours overlap by 11 of 12 steps, so little is lost and the
    # forecaster trains in a third of the time on a shared 2-core machine.
    ends = np.arange(spec.lookback - 1, val_start - spec.horizon, 3, dtype=np.int64)
    for f in feats:
        x, y = windows(f, f[:, list(TARGET_INDEX)], ends, spec)
        xs.append(x)
        ys.append(y)
    x_all, y_all = np.concatenate(xs), np.concatenate(ys)
    model = LoadForecaster(spec)
    for epoch in range(epochs):
        train_epochs(
            model,
            x_all,
            y_all,
            epochs=1,
            batch_size=256,
            learning_rate=2e-3 * (0.5 ** (epoch / max(1, epochs - 1))),
            seed=seed * 1_000_003 + epoch,
        )
        if on_epoch is not None:
            on_epoch()
    return get_weights(model)


def _forecast_all(
    feats: list[NDArray[np.float32]],
    scalers: list[SiteScaler],
    spec: ForecastSpec,
    weights: list[NDArray[np.float32]],
) -> NDArray[np.float64]:
    """(sites, steps, horizon, targets) in original units; NaN where no window fits."""
    import torch

    from fedge.models import LoadForecaster, predict, set_weights

    model = LoadForecaster(spec)
    set_weights(model, weights)
    steps = feats[0].shape[0]
    out = np.full((len(feats), steps, spec.horizon, len(TARGET_INDEX)), np.nan)
    ends = np.arange(spec.lookback - 1, steps - spec.horizon, dtype=np.int64)
    with torch.no_grad():
        for k, (f, sc) in enumerate(zip(feats, scalers, strict=True)):
            x, _ = windows(f, f[:, list(TARGET_INDEX)], ends, spec)
            out[k, ends] = sc.inverse(predict(model, x, batch_size=4096), TARGET_INDEX)
    return out
