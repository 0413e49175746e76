"""Seedable synthetic gNB telemetry, generated lazily one site at a time.

Nothing is precomputed for the fleet: site ``i`` is a pure function of ``(seed, i)``, so
10,000 registered sites cost nothing until a site is asked for, and every worker that
asks gets the same series.

The options under "real-data hardness" (all off by default) bring in what real LTE cells
show and the plain archetypes do not: calendar surges (match days), short and uneven
histories, traffic scales orders of magnitude apart, heavy-tailed bursts, cells that
sleep at night and counter gaps. Each option draws from its own random stream, so
turning one on leaves everything else about a site as it was, and with all of them off
a seed gives the same series as before they existed.
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
    # Real-data hardness (module docstring); the defaults leave the archetypes' data alone.
    min_days: int | None = None  # sites hold min_days..days of history, all ending together
    scale_spread: float = 0.0  # orders of magnitude between quietest and busiest (count noise)
    bursts_per_day: float = 0.0  # heavy-tailed bursts of 2-10 min, per site and day
    burst_alpha: float = 1.5  # Pareto tail index of a burst's size (smaller: heavier)
    idle_night_share: float = 0.0  # share of sites whose cell sleeps at night (zero traffic)
    gaps_per_week: float = 0.0  # counter gaps (every KPI 0, labelled outage), per site and week
    surge_share: float = 0.0  # share of sites with calendar events (match days)
    surges_per_week: float = 1.0  # calendar events per surge site and week
    surge_factor: float = 4.0  # a surge lifts load up to this multiple, for 2-4 hours

    def __post_init__(self) -> None:
        if self.num_sites < 1:
            raise DataError(f"num_sites must be >= 1, got {self.num_sites}")
        if self.days < 1:
            raise DataError(f"days must be >= 1, got {self.days}")
        if self.step_minutes < 1 or 1440 % self.step_minutes:
            raise DataError(f"step_minutes must divide a day (1440 min), got {self.step_minutes}")
        if self.anomalies_per_week < 0:
            raise DataError("anomalies_per_week must be >= 0")
        if self.min_days is not None and not 1 <= self.min_days <= self.days:
            raise DataError(f"min_days must be within 1..days ({self.days}), got {self.min_days}")
        if not 0.0 <= self.scale_spread <= 4.0:
            raise DataError(
                f"scale_spread must be 0..4 orders of magnitude, got {self.scale_spread}"
            )
        for name in ("bursts_per_day", "gaps_per_week", "surges_per_week"):
            if not getattr(self, name) >= 0.0:
                raise DataError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.burst_alpha > 0.0:
            raise DataError(f"burst_alpha must be > 0, got {self.burst_alpha}")
        for name in ("idle_night_share", "surge_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise DataError(f"{name} must be within 0..1, got {getattr(self, name)}")
        if not self.surge_factor >= 1.0:
            raise DataError(f"surge_factor must be >= 1, got {self.surge_factor}")
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
            _Streams(self.config.seed, index),
        )

    def __iter__(self) -> Iterator[SiteSeries]:
        return (self.site(i) for i in range(self.config.num_sites))


class _Streams:
    """One random stream per hardness option, apart from the site's own stream."""

    def __init__(self, seed: int, index: int) -> None:
        self._key = (seed, index)

    def __call__(self, option: int) -> np.random.Generator:
        return np.random.default_rng([*self._key, 0x4A5D, option])


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
    streams: _Streams,
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

    # Scheduled events: evening surges on known days (venues mostly), part of normal load,
    # and on the site's calendar (the steps within two widths of the bump's centre).
    calendar = np.zeros(n, dtype=bool)
    n_events = rng.poisson(arch.events_per_week * config.days / 7.0)
    for ev_day in rng.choice(config.days, size=min(n_events, config.days), replace=False):
        centre, width = rng.uniform(19.5, 21.5), rng.uniform(1.0, 1.6)
        d = np.abs(hours - centre)
        bump = rng.uniform(0.5, 0.75) * np.exp(-0.5 * (d / width) ** 2)
        demand = demand + np.where(day == ev_day, bump, 0.0)
        calendar |= (day == ev_day) & (d < 2.0 * width)

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
    if config.surge_share > 0:
        demand = demand * _surges(config, streams(1), day, hours, calendar)
    if config.bursts_per_day > 0:
        demand = demand * _bursts(config, streams(2), n)
    scale = 1.0
    if config.scale_spread > 0:
        scale = _traffic_scale(config.scale_spread, streams(3))
        demand = demand * scale

    max_ues = rng.uniform(*arch.max_ues)
    bandwidth_mbps = float(rng.choice([150.0, 300.0, 700.0], p=[0.3, 0.45, 0.25]))
    efficiency = rng.uniform(0.7, 1.1)
    ul_ratio = rng.uniform(0.3, 0.5)

    def obs(scale: float) -> NDArray[np.float64]:
        return rng.normal(0.0, scale, n)

    ues = max_ues * demand * (1.0 + obs(0.03))
    prb = 100.0 * (1.0 - np.exp(-1.6 * demand)) / (1.0 - np.exp(-1.6))
    prb = prb * np.where(degrade < 1.0, 1.15, 1.0) * (1.0 + obs(0.02))
    if config.scale_spread > 0:
        # Small cells are noisy: a few UEs come and go, and their load with them.
        count = streams(7)
        ues = count.poisson(np.clip(ues, 0.0, None)).astype(np.float64)
        prb = prb * (1.0 + count.normal(0.0, min(0.03 / np.sqrt(scale), 0.5), n))
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

    if config.idle_night_share > 0:
        idle = _night_idle(config.idle_night_share, streams(4), hours)
        ues[idle], thr[idle], prb[idle], ul[idle] = 0.0, 0.0, 0.0, 0.0
        cpu[idle] = np.minimum(cpu[idle], 6.0)
    if config.gaps_per_week > 0:
        gap = _gaps(config, streams(5), n)
        for kpi in (ues, thr, prb, ul, cpu):
            kpi[gap] = 0.0
        labels[gap] = ANOMALY_OUTAGE

    values = np.empty((n, len(KPI_NAMES)), dtype=np.float32)
    values[:, _COL["dl_prb_util"]] = prb
    values[:, _COL["ul_prb_util"]] = ul
    values[:, _COL["dl_throughput_mbps"]] = np.clip(thr, 0.0, None)
    values[:, _COL["active_ues"]] = np.round(np.clip(ues, 0.0, None))
    values[:, _COL["cpu_util"]] = np.clip(cpu, 0.0, 100.0)
    start = np.datetime64(config.start, "m")
    if config.min_days is not None:
        # A cell that came on air later: its last days only, ending with the others'.
        late = config.days - int(streams(6).integers(config.min_days, config.days + 1))
        start = start + np.timedelta64(late * MINUTES_PER_DAY, "m")
        keep = slice(late * spd, None)
        values, labels, calendar = values[keep], labels[keep], calendar[keep]
    return SiteSeries(
        site_id, arch.name, start, config.step_minutes, values, labels, events=calendar
    )


def _surges(
    config: GeneratorConfig,
    rng: np.random.Generator,
    day: NDArray[np.int64],
    hours: NDArray[np.float64],
    calendar: NDArray[np.bool_],
) -> NDArray[np.float64]:
    """Match days: load several-fold for 2-4 hours, weekends likelier; marks ``calendar``.

    A surge site has at least one event; the calendar is known ahead (fixtures are
    published), which is what sets a surge apart from an anomaly.
    """
    mult = np.ones(len(day))
    if rng.random() >= config.surge_share or config.surges_per_week == 0:
        return mult
    weight = np.where((np.arange(config.days) + _weekday(config.start)) % 7 >= 5, 3.0, 1.0)
    count = min(max(1, int(rng.poisson(config.surges_per_week * config.days / 7.0))), config.days)
    ramp = 0.4  # hours: the crowd arrives and leaves
    for ev_day in rng.choice(config.days, size=count, replace=False, p=weight / weight.sum()):
        begin, length = rng.uniform(13.0, 20.0), rng.uniform(2.0, 4.0)
        factor = rng.uniform((1.0 + config.surge_factor) / 2.0, config.surge_factor)
        rise = np.clip((hours - (begin - ramp)) / ramp, 0.0, 1.0)
        fall = np.clip((begin + length + ramp - hours) / ramp, 0.0, 1.0)
        shape = np.where(day == ev_day, np.minimum(rise, fall), 0.0)
        mult = mult * (1.0 + (factor - 1.0) * shape)
        calendar |= shape > 0
    return mult


def _bursts(config: GeneratorConfig, rng: np.random.Generator, n: int) -> NDArray[np.float64]:
    """Short heavy-tailed bursts (unlabelled: real cells have them on ordinary days)."""
    mult = np.ones(n)
    for _ in range(int(rng.poisson(config.bursts_per_day * config.days))):
        length = max(1, round(rng.uniform(2.0, 10.0) / config.step_minutes))
        s = int(rng.integers(0, max(1, n - length)))
        size = min(float(rng.pareto(config.burst_alpha)), 20.0)
        mult[s : s + length] *= 1.0 + 0.5 * size
    return mult


def _traffic_scale(spread: float, rng: np.random.Generator) -> float:
    """Log-normal scale, ``spread`` orders of magnitude wide: most cells quieter than the
    archetype's, a few busier (those saturate, as busy real cells do)."""
    log10 = np.clip(rng.normal(-spread / 4.0, spread / 4.0), -0.75 * spread, 0.25 * spread)
    return float(10.0**log10)


def _night_idle(
    share: float, rng: np.random.Generator, hours: NDArray[np.float64]
) -> NDArray[np.bool_]:
    """Cells put to sleep in the small hours carry no traffic (not an anomaly: scheduled)."""
    if rng.random() >= share:
        return np.zeros(len(hours), dtype=bool)
    start, end = rng.uniform(0.0, 1.5), rng.uniform(4.0, 5.5)
    out: NDArray[np.bool_] = (hours >= start) & (hours < end)
    return out


def _gaps(config: GeneratorConfig, rng: np.random.Generator, n: int) -> NDArray[np.bool_]:
    """Collection gaps exported as zeros: 30 min to 6 h with nothing reported."""
    gap = np.zeros(n, dtype=bool)
    for _ in range(int(rng.poisson(config.gaps_per_week * config.days / 7.0))):
        length = max(1, round(rng.uniform(30.0, 360.0) / config.step_minutes))
        s = int(rng.integers(0, max(1, n - length)))
        gap[s : s + length] = True
    return gap


def _weekday(date: str) -> int:
    """Monday = 0, from an ISO date."""
    return int(datetime_minute_of_week(np.array([np.datetime64(date, "D")]))[0] // MINUTES_PER_DAY)
