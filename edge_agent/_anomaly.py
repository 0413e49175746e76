"""Anomalies from forecast residuals: a rolling robust z-score per cell and KPI.

The residual (actual minus one-step forecast, in the cell's standard deviations) is
compared with the median and MAD of the cell's recent residuals, so a model that is
biased for a cell does not alert on every step, and a few outliers do not hide the next.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedge.core import KPI_NAMES, TARGET_INDEX, TARGET_KPIS
from fedge.edge_agent._config import AnomalyConfig
from fedge.edge_agent._kpi import KpiSample

_MAD_SCALE = 1.4826  # MAD of a normal distribution -> its standard deviation
_MAD_FLOOR = 0.05  # in cell standard deviations: a near-perfect model must not alert on noise
# The median and MAD are recomputed once the window has taken in this fraction of its size
# in new residuals (every 12 steps of a full 288 window; every step while it is short). One
# more residual barely moves a robust statistic of hundreds, and the two medians were the
# agent's largest per-message cost after inference.
_REFRESH_FRACTION = 1 / 24


@dataclass(frozen=True)
class KpiDeviation:
    name: str
    actual: float
    forecast: float
    z: float


@dataclass(frozen=True)
class Alert:
    cell: str
    step: int
    ts: float
    severity: str  # "warning" | "critical"
    kpis: tuple[KpiDeviation, ...]


class _Ring:
    __slots__ = ("count", "data", "pos", "since", "stats")

    def __init__(self, size: int) -> None:
        self.data = np.full((size, len(TARGET_INDEX)), np.nan)
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


class ResidualDetector:
    def __init__(self, config: AnomalyConfig) -> None:
        self.config = config
        self._rings: dict[str, _Ring] = {}

    def residual(self, cell: str, residual: NDArray[np.float64]) -> None:
        ring = self._rings.get(cell)
        if ring is None:
            ring = self._rings[cell] = _Ring(self.config.window)
        ring.push(residual)

    def zscores(self, cell: str, residual: NDArray[np.float64]) -> NDArray[np.float64] | None:
        """z of ``residual`` against the cell's history (before adding it); None if too short."""
        ring = self._rings.get(cell)
        if ring is None or ring.count < self.config.min_history:
            return None
        med, scale = ring.median_scale()
        return np.asarray((residual - med) / scale, dtype=np.float64)

    def score(
        self, sample: KpiSample, residual: NDArray[np.float64], forecast: tuple[float, ...]
    ) -> Alert | None:
        z = self.zscores(sample.cell, residual)
        self.residual(sample.cell, residual)
        if z is None:
            return None
        cfg = self.config
        hits = [
            KpiDeviation(
                name, float(sample.values[KPI_NAMES.index(name)] or 0.0), forecast[j], float(z[j])
            )
            for j, name in enumerate(TARGET_KPIS)
            if np.isfinite(z[j]) and abs(z[j]) >= cfg.z_warning
        ]
        if len(hits) < max(cfg.min_kpis, 1):
            return None
        top = max(abs(h.z) for h in hits)
        severity = "critical" if top >= cfg.z_critical else "warning"
        return Alert(sample.cell, sample.step, sample.ts, severity, tuple(hits))
