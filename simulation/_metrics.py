"""Forecast error figures, per site and pooled per method.

Per-KPI figures are in original units. The method-level ``rmse``/``mae`` average the three
target KPIs after dividing each error by the site's training range of that KPI (else
Mbit/s would drown UE counts); ``r2`` averages per-site, per-KPI R² (pooling sites of very
different sizes would inflate it); the under-provisioning rate counts forecasts below the
actual by more than 5% of the site's KPI range; ``asymmetric_cost`` is the mean
range-normalised squared error with under-forecasts weighted 5, the loss the forecaster
is trained on, so methods that trade RMSE for fewer missed peaks compare fairly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.core import TARGET_KPIS
from fedge.simulation._errors import SimulationError

UNDERPROVISION_MARGIN = 0.05
#: Lead times the report breaks the forecast down by, in minutes.
REPORT_MINUTES = (5, 15, 30, 60)
# The forecaster's own objective: a missed peak costs BETA_UNDER, an overestimate 1.
BETA_UNDER, BETA_OVER = 5.0, 1.0


@dataclass(frozen=True)
class SiteScore:
    """Sufficient statistics of one site's errors on one split, per target KPI."""

    site_id: str
    archetype: str
    n: int
    sse: NDArray[np.float64]
    sae: NDArray[np.float64]
    nsse: NDArray[np.float64]
    nsae: NDArray[np.float64]
    under: NDArray[np.float64]
    r2: NDArray[np.float64]
    ncost: NDArray[np.float64]  # asymmetric squared error, range-normalised

    @property
    def nrmse(self) -> float:
        """Range-normalised RMSE averaged over KPIs: the site's headline error."""
        return float(np.mean(np.sqrt(self.nsse / max(self.n, 1))))


def score_site(
    site_id: str,
    archetype: str,
    actual: NDArray[np.floating[Any]],
    forecast: NDArray[np.floating[Any]],
    kpi_range: NDArray[np.floating[Any]],
) -> SiteScore:
    """``actual``/``forecast``: (windows, horizon, targets) in original units."""
    if actual.shape != forecast.shape:
        raise ValueError(f"actual {actual.shape} and forecast {forecast.shape} differ")
    a = actual.reshape(-1, actual.shape[-1]).astype(np.float64)
    f = forecast.reshape(-1, forecast.shape[-1]).astype(np.float64)
    err = f - a
    rng = np.asarray(kpi_range, dtype=np.float64)
    sst = ((a - a.mean(axis=0)) ** 2).sum(axis=0)
    sse = (err**2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(sst > 0, 1.0 - sse / sst, 0.0)
    return SiteScore(
        site_id=site_id,
        archetype=archetype,
        n=len(a),
        sse=sse,
        sae=np.abs(err).sum(axis=0),
        nsse=(err**2 / rng**2).sum(axis=0),
        nsae=(np.abs(err) / rng).sum(axis=0),
        under=(err < -UNDERPROVISION_MARGIN * rng).sum(axis=0).astype(np.float64),
        r2=r2,
        ncost=(np.where(err < 0, BETA_UNDER, BETA_OVER) * err**2 / rng**2).sum(axis=0),
    )


def report_horizons(horizon: int, step_minutes: int) -> list[tuple[int, int]]:
    """``(minutes asked, horizon step)`` for each of :data:`REPORT_MINUTES` the forecast
    reaches: the step whose lead time is nearest, a tie to the shorter (at 2-min steps
    5 min is step 2, 4 min ahead; the report says which), at least one, none past
    ``horizon`` or picked twice."""
    if horizon < 1 or step_minutes < 1:
        raise SimulationError(f"need a positive horizon and step, got {horizon} and {step_minutes}")
    out: list[tuple[int, int]] = []
    for minutes in REPORT_MINUTES:
        step = max(1, int(np.ceil(minutes / step_minutes - 0.5)))  # a tie: the shorter
        if step <= horizon and step not in {s for _, s in out}:
            out.append((minutes, step))
    return out


def score_site_by_horizon(
    site_id: str,
    archetype: str,
    actual: NDArray[np.floating[Any]],
    forecast: NDArray[np.floating[Any]],
    kpi_range: NDArray[np.floating[Any]],
    steps: Sequence[int],
) -> dict[int, SiteScore]:
    """:func:`score_site` of each horizon step in ``steps`` (1-based) on its own."""
    if actual.ndim != 3 or actual.shape != forecast.shape:
        raise SimulationError(
            f"need matching (windows, horizon, targets), got {actual.shape} and {forecast.shape}"
        )
    bad = [k for k in steps if not 1 <= k <= actual.shape[1]]
    if bad:
        raise SimulationError(f"horizon steps {bad} outside 1..{actual.shape[1]}")
    return {
        k: score_site(site_id, archetype, actual[:, k - 1 : k], forecast[:, k - 1 : k], kpi_range)
        for k in steps
    }


def pool_scores(scores: Iterable[SiteScore]) -> dict[str, Any]:
    """Method-level figures from its sites' scores (see module docstring)."""
    s = list(scores)
    if not s:
        raise ValueError("no site scores to pool")
    n = float(sum(x.n for x in s))
    sse = np.sum([x.sse for x in s], axis=0)
    sae = np.sum([x.sae for x in s], axis=0)
    nsse = np.sum([x.nsse for x in s], axis=0)
    nsae = np.sum([x.nsae for x in s], axis=0)
    under = np.sum([x.under for x in s], axis=0)
    r2 = np.mean([x.r2 for x in s], axis=0)
    ncost = np.sum([x.ncost for x in s], axis=0)
    per_kpi = {
        k: {
            "rmse": float(np.sqrt(sse[i] / n)),
            "mae": float(sae[i] / n),
            "r2": float(r2[i]),
            "underprovision_rate": float(under[i] / n),
            "nrmse": float(np.sqrt(nsse[i] / n)),
        }
        for i, k in enumerate(TARGET_KPIS)
    }
    return {
        "rmse": float(np.mean(np.sqrt(nsse / n))),
        "mae": float(np.mean(nsae / n)),
        "r2": float(np.mean(r2)),
        "underprovision_rate": float(np.mean(under / n)),
        "asymmetric_cost": float(np.mean(ncost / n)),
        "per_kpi": per_kpi,
        "sites": len(s),
        "points": int(n),
    }
