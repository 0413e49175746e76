"""Seedable synthetic gNB telemetry, generated lazily one site at a time.

Nothing is precomputed for the fleet: site ``i`` is a pure function of ``(seed, i)``, so
10,000 registered sites cost nothing until a site is asked for, and every worker that
asks gets the same series.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

from fedge.core import (
    ANOMALY_DEGRADATION,
    ANOMALY_OUTAGE,
    ANOMALY_SPIKE,
    KPI_NAMES,
    MINUTES_PER_DAY,
    datetime_minute_of_week,
)
from fedge.simulation._archetypes import ARCHETYPE_CYCLE, ARCHETYPES, Archetype, profile
from fedge.simulation._errors import DataError
from fedge.simulation._series import SiteSeries

_COL = {name: i for i, name in enumerate(KPI_NAMES)}


@dataclass(frozen=True)
class GeneratorConfig:
    num_sites: int = 20
    days: int = 21
    step_minutes: int = 5
    seed: int = 0
    start: str = "2026-03-02"  # a Monday
    anomalies_per_week: float = 1.5  # labelled anomalies per site and week, all kinds

    def __post_init__(self) -> None:
        if self.num_sites < 1:
            raise DataError(f"num_sites must be >= 1, got {self.num_sites}")
        if self.days < 1:
            raise DataError(f"days must be >= 1, got {self.days}")
        if self.step_minutes < 1 or 1440 % self.step_minutes:
            raise DataError(f"step_minutes must divide a day (1440 min), got {self.step_minutes}")
        if self.anomalies_per_week < 0:
            raise DataError("anomalies_per_week must be >= 0")
        try:
            np.datetime64(self.start, "D")
        except ValueError as exc:
            raise DataError(f"start must be an ISO date, got {self.start!r}") from exc

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class SiteGenerator:
    """Telemetry for ``config.num_sites`` sites, each made on demand."""

    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self._holidays = _holidays(config)

    @property
    def num_sites(self) -> int:
        return self.config.num_sites

    def site_id(self, index: int) -> str:
        return f"site-{index:05d}"

    def archetype(self, index: int) -> str:
        return ARCHETYPE_CYCLE[index % len(ARCHETYPE_CYCLE)]

    def site(self, index: int) -> SiteSeries:
        if not 0 <= index < self.config.num_sites:
            raise DataError(f"site index {index} outside 0..{self.config.num_sites - 1}")
        rng = np.random.default_rng([self.config.seed, index])
        return _make_site(
            self.config,
            self.site_id(index),
            ARCHETYPES[self.archetype(index)],
            self._holidays,
            rng,
        )

    def __iter__(self) -> Iterator[SiteSeries]:
        return (self.site(i) for i in range(self.config.num_sites))


def _holidays(config: GeneratorConfig) -> NDArray[np.bool_]:
    """Fleet-wide public holidays: one weekday in roughly every three weeks."""
    rng = np.random.default_rng([config.seed, 2**31 - 1])
    days = np.zeros(config.days, dtype=bool)
    for week_start in range(0, config.days, 21):
        day = week_start + 7 + int(rng.integers(0, 5))  # a weekday of the block's 2nd week
        if day < config.days:
            days[day] = True
    return days


def _make_site(
    config: GeneratorConfig,
    site_id: str,
    arch: Archetype,
    holidays: NDArray[np.bool_],
    rng: np.random.Generator,
) -> SiteSeries:
    spd = 1440 // config.step_minutes
    n = config.days * spd
    t = np.arange(n)
    day = t // spd
    dow = (day + _weekday(config.start)) % 7
    phase_h = rng.uniform(-0.5, 0.5)
    hours = ((t % spd) * config.step_minutes / 60.0 - phase_h) % 24.0

    # Each site scales its archetype's bumps a little: same family, different shape.
    def jitter(
        bumps: tuple[tuple[float, float, float], ...],
    ) -> tuple[tuple[float, float, float], ...]:
        return tuple(
            (a * rng.uniform(0.8, 1.2), c + rng.uniform(-0.4, 0.4), w * rng.uniform(0.85, 1.15))
            for a, c, w in bumps
        )

    wk = profile(jitter(arch.weekday), arch.base, hours)
    we = profile(jitter(arch.weekend), arch.base, hours)
    weekend_like = (dow >= 5) | (holidays[day] & arch.holiday_like_weekend)
    shape = np.where(weekend_like, we, wk)
    shape = shape / max(float(wk.max()), float(we.max()))
    demand = shape * rng.uniform(*arch.peak_load)

    # Scheduled events: evening surges on known days (venues mostly), part of normal load.
    n_events = rng.poisson(arch.events_per_week * config.days / 7.0)
    for ev_day in rng.choice(config.days, size=min(n_events, config.days), replace=False):
        centre, width = rng.uniform(19.5, 21.5), rng.uniform(1.0, 1.6)
        d = np.abs(hours - centre)
        bump = rng.uniform(0.5, 0.75) * np.exp(-0.5 * (d / width) ** 2)
        demand = demand + np.where(day == ev_day, bump, 0.0)

    trend_per_day = rng.uniform(-0.03, 0.08) / 30.0
    demand = demand * (1.0 + trend_per_day * t / spd)

    # AR(1) multiplicative noise: short-term persistence a forecaster can exploit.
    sigma = rng.uniform(*arch.noise_sigma) * np.sqrt(config.step_minutes / 5.0)
    phi = 0.9 ** (config.step_minutes / 5.0)
    eps = rng.normal(0.0, sigma, n)
    ar = np.empty(n)
    ar[0] = eps[0] / np.sqrt(1 - phi**2)
    for i in range(1, n):
        ar[i] = phi * ar[i - 1] + eps[i]
    demand = np.clip(demand * np.exp(ar), 0.0, None)

    labels = np.zeros(n, dtype=np.int8)
    spike = np.ones(n)
    degrade = np.ones(n)
    outage = np.zeros(n, dtype=bool)
    n_anom = rng.poisson(config.anomalies_per_week * config.days / 7.0)
    for _ in range(n_anom):
        kind = int(
            rng.choice([ANOMALY_OUTAGE, ANOMALY_SPIKE, ANOMALY_DEGRADATION], p=[0.3, 0.4, 0.3])
        )
        minutes = {
            ANOMALY_OUTAGE: rng.uniform(15, 90),
            ANOMALY_SPIKE: rng.uniform(15, 60),
            ANOMALY_DEGRADATION: rng.uniform(60, 360),
        }[kind]
        length = max(1, round(minutes / config.step_minutes))
        s = int(rng.integers(0, max(1, n - length)))
        sl = slice(s, s + length)
        labels[sl] = kind
        if kind == ANOMALY_OUTAGE:
            outage[sl] = True
        elif kind == ANOMALY_SPIKE:
            spike[sl] = rng.uniform(1.8, 3.0)
        else:
            degrade[sl] = rng.uniform(0.3, 0.6)
    demand = demand * spike

    max_ues = rng.uniform(*arch.max_ues)
    bandwidth_mbps = float(rng.choice([150.0, 300.0, 700.0], p=[0.3, 0.45, 0.25]))
    efficiency = rng.uniform(0.7, 1.1)
    ul_ratio = rng.uniform(0.3, 0.5)

    def obs(scale: float) -> NDArray[np.float64]:
        return rng.normal(0.0, scale, n)

    ues = max_ues * demand * (1.0 + obs(0.03))
    prb = 100.0 * (1.0 - np.exp(-1.6 * demand)) / (1.0 - np.exp(-1.6))
    prb = prb * np.where(degrade < 1.0, 1.15, 1.0) * (1.0 + obs(0.02))
    prb = np.clip(prb, 0.0, 100.0)
    slow_eff = 1.0 + 0.05 * np.sin(2 * np.pi * t / (spd * rng.uniform(2.0, 5.0)))
    thr = bandwidth_mbps * efficiency * slow_eff * (prb / 100.0) * degrade * (1.0 + obs(0.03))
    ul = np.clip(ul_ratio * prb * (1.0 + obs(0.05)) + 1.0, 0.0, 100.0)
    cpu = 8.0 + 55.0 * prb / 100.0 + 10.0 * np.clip(ues / max_ues, 0, 2) + obs(1.5)
    cpu = cpu + np.where(degrade < 1.0, 20.0, 0.0)

    ues[outage] = 0.0
    thr[outage] = 0.0
    prb[outage] = rng.uniform(0.0, 0.5)
    ul[outage] = 0.0
    cpu[outage] = 5.0 + obs(0.5)[outage]

    values = np.empty((n, len(KPI_NAMES)), dtype=np.float32)
    values[:, _COL["dl_prb_util"]] = prb
    values[:, _COL["ul_prb_util"]] = ul
    values[:, _COL["dl_throughput_mbps"]] = np.clip(thr, 0.0, None)
    values[:, _COL["active_ues"]] = np.round(np.clip(ues, 0.0, None))
    values[:, _COL["cpu_util"]] = np.clip(cpu, 0.0, 100.0)
    start = np.datetime64(config.start, "m")
    return SiteSeries(site_id, arch.name, start, config.step_minutes, values, labels)


def _weekday(date: str) -> int:
    """Monday = 0, from an ISO date."""
    return int(datetime_minute_of_week(np.array([np.datetime64(date, "D")]))[0] // MINUTES_PER_DAY)
