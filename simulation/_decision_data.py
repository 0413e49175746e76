"""What the decision agents see: site load, hour-ahead forecasts, clusters and splits.

Demand is the site's own downlink PRB utilisation (fraction of one site's radio
capacity). The hour-ahead forecasts come from the project's forecaster architecture
(:class:`models.LoadForecaster`) trained for a 12-step (one hour) horizon on the training
days only, then run over every step; the agents never see a forecast made with held-out
data in its fitting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedge.core import KPI_NAMES, TARGET_INDEX
from fedge.models import ForecastSpec, SiteScaler, site_features, split_bounds, windows
from fedge.simulation._errors import DecisionError
from fedge.simulation._power import EARTH_MACRO, PowerModel
from fedge.simulation._source import SiteSource

HOUR_STEPS = 12  # forecast horizon of the decision layer: one hour of 5-minute steps
DECISION_STEPS = 3  # the strategic agent acts every 15 minutes
# The strategic layer leaves the tactical one room: a site in a reduced mode carries its
# own demand only up to this share of its available PRBs, and a neighbour takes offload
# only up to it. 0.84 is the highest load at which a split of the PRBs still meets every
# slice's SLA in 99% of steps without foresight of the URLLC burst, for the median site
# (URLLC share 0.115; derived in docs/decisions.md and checked by a test against
# simulation._slice_env.sla_at_load). Above it, energy saved costs slice SLAs. The
# default; ``DecisionData.headroom`` (``--headroom``) carries the one in force.
DEFAULT_HEADROOM = 0.84
_PRB = KPI_NAMES.index("dl_prb_util")
_UES = KPI_NAMES.index("active_ues")


@dataclass(frozen=True)
class DecisionData:
    """Per-site arrays on the common 5-minute grid; sites share one calendar."""

    site_ids: tuple[str, ...]
    archetypes: tuple[str, ...]
    load: NDArray[np.float64]  # (sites, steps): demand as a fraction of site capacity
    ues: NDArray[np.float64]  # (sites, steps): active UEs / the site's training maximum
    fc_load: NDArray[np.float64]  # (sites, steps, 12): forecast made at the end of step t
    fc_ues: NDArray[np.float64]  # (sites, steps, 12)
    minute_of_week: NDArray[np.int64]  # (steps,)
    steps_per_day: int
    val_start: int
    test_start: int
    clusters: NDArray[np.int64]  # (clusters, K): site indices of each neighbourhood
    headroom: float = DEFAULT_HEADROOM  # load the strategic layer may fill per site
    power: PowerModel = EARTH_MACRO  # per-carrier power of the sites

    @property
    def num_sites(self) -> int:
        return len(self.site_ids)

    @property
    def steps(self) -> int:
        return int(self.load.shape[1])

    def block_starts(self, split: str) -> NDArray[np.int64]:
        """Starts of the 15-minute decision blocks of a split with a full hour of forecast."""
        lo, hi = {
            "train": (0, self.val_start),
            "val": (self.val_start, self.test_start),
            "test": (self.test_start, self.steps),
        }[split]
        first = max(lo, HOUR_STEPS)
        first += (-first) % DECISION_STEPS
        last = min(hi, self.steps - HOUR_STEPS + 1)  # forecast at t-1 must reach t+11
        return np.arange(first, last - DECISION_STEPS + 1, DECISION_STEPS, dtype=np.int64)


def make_clusters(num_sites: int, size: int) -> NDArray[np.int64]:
    """Consecutive sites form a neighbourhood; a remainder too small to cluster is left out."""
    if size < 2:
        raise DecisionError(f"cluster size must be >= 2, got {size}")
    n = num_sites // size
    if n < 1:
        raise DecisionError(f"{num_sites} sites cannot form a cluster of {size}")
    return np.arange(n * size, dtype=np.int64).reshape(n, size)


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
    power: PowerModel = EARTH_MACRO,
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


def check_headroom(headroom: float) -> None:
    if not 0.0 < headroom <= 1.0:  # NaN fails too
        raise DecisionError(f"headroom must be in (0, 1] of a site's PRBs, got {headroom}")


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
