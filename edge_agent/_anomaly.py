"""Anomalies from forecast residuals: a rolling robust z-score per cell and KPI, and alert
episodes an operator can trust.

The residual is relative: (actual - one-step forecast) / (forecast + ``level_floor`` cell
standard deviations). Traffic noise is multiplicative, so an absolute residual is small at
night and large at the busy hour, and a window of 288 mostly quiet steps made every busy
hour look anomalous (4.5 false alerts per site-day). Besides the forecast KPIs the
detector watches throughput per PRB (``CHANNELS``). Each channel's relative residual is
compared with the median and MAD of the cell's recent residuals, so a model biased for a
cell does not alert on every step, and a few outliers do not hide the next.

A step *deviates* when ``min_kpis`` channels reach ``|z| >= z_warning``. An **episode** opens
(one alert) after ``persistence`` consecutive deviating steps, or at once on a step with
``|z| >= z_critical``; it stays open, without further alerts, until ``cooldown``
consecutive steps do not deviate, and then closes with one ``resolved`` message that
carries its start, end and peak. A warning episode that reaches ``z_critical`` sends one
``escalated`` alert. The cost per message is O(1) beyond the amortised median refresh.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedge.core import KPI_NAMES, TARGET_KPIS
from fedge.edge_agent._config import AnomalyConfig
from fedge.edge_agent._kpi import KpiSample

_MAD_SCALE = 1.4826  # MAD of a normal distribution -> its standard deviation
# in relative residual units (a share of the forecast): a near-perfect model must not
# alert on a 1% wobble
_MAD_FLOOR = 0.01
# The median and MAD are recomputed once the window has taken in this fraction of its size
# in new residuals (every 12 steps of a full 288 window; every step while it is short). One
# more residual barely moves a robust statistic of hundreds, and the two medians were the
# agent's largest per-message cost after inference.
_REFRESH_FRACTION = 1 / 24

_PRB, _THR = TARGET_KPIS.index("dl_prb_util"), TARGET_KPIS.index("dl_throughput_mbps")
#: What the detector watches: the forecast KPIs, and throughput per PRB (the spectral
#: efficiency). A radio degradation halves throughput while PRB use rises; load noise
#: moves both together, so their ratio is a far quieter signal than either KPI.
CHANNELS = (*TARGET_KPIS, "dl_throughput_per_prb")

#: Alert message states: an episode opens, may escalate to critical once, and resolves.
OPEN, ESCALATED, RESOLVED = "open", "escalated", "resolved"


@dataclass(frozen=True)
class KpiDeviation:
    name: str
    actual: float
    forecast: float
    z: float


@dataclass(frozen=True)
class Alert:
    """One alert message. ``open`` and ``escalated`` carry the KPIs deviating at ``step``;
    ``resolved`` carries the episode's peak step KPIs, and ``severity`` is its peak."""

    cell: str
    step: int
    ts: float
    severity: str  # "warning" | "critical"
    kpis: tuple[KpiDeviation, ...]
    state: str = OPEN  # OPEN | ESCALATED | RESOLVED
    since_ts: float | None = None  # the episode's first deviating step
    until_ts: float | None = None  # its last deviating step (RESOLVED only)


def with_efficiency(residual: NDArray[np.float64]) -> NDArray[np.float64]:
    """The relative residuals of the forecast KPIs, and of throughput per PRB after them.

    With r = (a - f) / (f + e), 1 + r = (a + e) / (f + e): the ratio's residual is
    (1 + r_thr) / (1 + r_prb) - 1, no second forecast needed."""
    if len(residual) == len(CHANNELS):
        return residual
    out = np.empty(len(CHANNELS))
    out[:-1] = residual
    # max(nan, x) is nan: an unreported KPI leaves the ratio unknown
    out[-1] = (1.0 + float(residual[_THR])) / max(1.0 + float(residual[_PRB]), 1e-3) - 1.0
    return out


def relative_residual(
    actual: NDArray[np.float64],
    forecast: NDArray[np.float64],
    std: NDArray[np.float64],
    level_floor: float,
) -> NDArray[np.float64]:
    """(actual - forecast) / (|forecast| + level_floor * std), per target KPI.

    The floor keeps a near-zero forecast (a quiet cell at night) from turning one UE into
    a huge deviation."""
    return np.asarray(
        (actual - forecast) / (np.abs(forecast) + level_floor * std), dtype=np.float64
    )


class _Ring:
    __slots__ = ("count", "data", "pos", "since", "stats")

    def __init__(self, size: int) -> None:
        self.data = np.full((size, len(CHANNELS)), np.nan)
        self.pos = 0
        self.count = 0
        self.since = 0  # residuals pushed since ``stats`` were computed
        self.stats: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None

    def push(self, row: NDArray[np.float64]) -> None:
        self.data[self.pos] = row
        self.pos = (self.pos + 1) % len(self.data)
        self.count = min(self.count + 1, len(self.data))
        self.since += 1

    def median_scale(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Median and robust scale of the window, refreshed as described at the top."""
        if self.stats is not None and self.since < max(1.0, self.count * _REFRESH_FRACTION):
            return self.stats
        hist = self.data[: self.count] if self.count < len(self.data) else self.data
        # np.median is ~100x faster than np.nanmedian; NaN only where a KPI is not reported
        if np.isnan(hist).any():
            with warnings.catch_warnings():  # a KPI the cell never reports is all-NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                med = np.nanmedian(hist, axis=0)
                mad = np.nanmedian(np.abs(hist - med), axis=0)
            med, mad = np.nan_to_num(med), np.nan_to_num(mad, nan=1.0)
        else:
            med = np.median(hist, axis=0)
            mad = np.median(np.abs(hist - med), axis=0)
        self.stats = (med, np.maximum(_MAD_SCALE * mad, _MAD_FLOOR))
        self.since = 0
        return self.stats


@dataclass
class Episode:
    """A cell's open alert episode (or the run of deviating steps that may open one)."""

    start_step: int
    start_ts: float
    run: int = 0  # deviating steps so far (consecutive while it is a candidate)
    quiet: int = 0  # consecutive steps without deviation since the last deviating one
    alerted: bool = False  # an OPEN alert was sent: this is an episode, not a candidate
    severity: str = "warning"
    peak_z: float = 0.0
    peak: tuple[KpiDeviation, ...] = ()
    last_ts: float = 0.0


class ResidualDetector:
    def __init__(self, config: AnomalyConfig) -> None:
        self.config = config
        self._rings: dict[str, _Ring] = {}
        self._episodes: dict[str, Episode] = {}

    def residual(self, cell: str, residual: NDArray[np.float64]) -> None:
        ring = self._rings.get(cell)
        if ring is None:
            ring = self._rings[cell] = _Ring(self.config.window)
        ring.push(with_efficiency(residual))

    def zscores(self, cell: str, residual: NDArray[np.float64]) -> NDArray[np.float64] | None:
        """z per channel of ``residual`` against the cell's history (before adding it);
        None while the history is too short."""
        ring = self._rings.get(cell)
        if ring is None or ring.count < self.config.min_history:
            return None
        med, scale = ring.median_scale()
        return np.asarray((with_efficiency(residual) - med) / scale, dtype=np.float64)

    def episode(self, cell: str) -> Episode | None:
        """The cell's open episode, if an alert for it was sent and it has not resolved."""
        ep = self._episodes.get(cell)
        return ep if ep is not None and ep.alerted else None

    def score(
        self, sample: KpiSample, residual: NDArray[np.float64], forecast: tuple[float, ...]
    ) -> Alert | None:
        channels = with_efficiency(residual)
        z = self.zscores(sample.cell, channels)
        self.residual(sample.cell, channels)
        if z is None:
            return None
        cfg = self.config
        size = np.abs(z)
        deviating = np.flatnonzero(size >= cfg.z_warning)  # NaN (unreported) never is
        ep = self._episodes.get(sample.cell)
        if len(deviating) < max(cfg.min_kpis, 1):
            return self._quiet(sample, ep)
        hits = tuple(
            KpiDeviation(CHANNELS[j], *_actual_forecast(sample, forecast, j), float(z[j]))
            for j in deviating.tolist()
        )
        top = float(size[deviating].max())
        severity = "critical" if top >= cfg.z_critical else "warning"
        if ep is None:
            ep = self._episodes[sample.cell] = Episode(sample.step, sample.ts)
        ep.run += 1
        ep.quiet = 0
        ep.last_ts = sample.ts
        if top >= ep.peak_z:
            ep.peak_z, ep.peak = top, hits
        was = ep.severity
        ep.severity = "critical" if severity == "critical" or was == "critical" else "warning"
        if not ep.alerted:
            if ep.run < cfg.persistence and severity != "critical":
                return None
            ep.alerted = True
            return Alert(sample.cell, sample.step, sample.ts, ep.severity, hits, OPEN, ep.start_ts)
        if was == "warning" and severity == "critical":
            return Alert(
                sample.cell, sample.step, sample.ts, "critical", hits, ESCALATED, ep.start_ts
            )
        return None

    def _quiet(self, sample: KpiSample, ep: Episode | None) -> Alert | None:
        if ep is None:
            return None
        if not ep.alerted:  # the run of deviating steps broke before it persisted
            del self._episodes[sample.cell]
            return None
        ep.quiet += 1
        if ep.quiet < self.config.cooldown:
            return None
        del self._episodes[sample.cell]
        return Alert(
            sample.cell,
            sample.step,
            sample.ts,
            ep.severity,
            ep.peak,
            RESOLVED,
            ep.start_ts,
            ep.last_ts,
        )


def _actual_forecast(sample: KpiSample, forecast: tuple[float, ...], j: int) -> tuple[float, float]:
    if j < len(TARGET_KPIS):
        return float(sample.values[KPI_NAMES.index(TARGET_KPIS[j])] or 0.0), forecast[j]
    thr = sample.values[KPI_NAMES.index("dl_throughput_mbps")] or 0.0
    prb = sample.values[KPI_NAMES.index("dl_prb_util")] or 0.0
    return float(thr / prb) if prb else 0.0, forecast[_THR] / forecast[_PRB] if forecast[
        _PRB
    ] else 0.0
