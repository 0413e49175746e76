from __future__ import annotations

import numpy as np
import pytest

from fedge.core import ANOMALY_DEGRADATION, ANOMALY_OUTAGE, ANOMALY_SPIKE
from fedge.simulation import (
    ARCHETYPE_NAMES,
    KPI_NAMES,
    DataError,
    GeneratorConfig,
    SiteGenerator,
    SiteSeries,
)

PRB = KPI_NAMES.index("dl_prb_util")


def hourly_profile(values: np.ndarray, mow: np.ndarray, weekend: bool) -> np.ndarray:
    day = mow // 1440
    mask = (day >= 5) if weekend else (day < 5)
    hours = (mow % 1440) // 60
    return np.array([values[mask & (hours == h), PRB].mean() for h in range(24)])


def test_same_seed_same_site_and_different_seed_differs() -> None:
    a = SiteGenerator(GeneratorConfig(num_sites=5, days=7, seed=3)).site(2)
    b = SiteGenerator(GeneratorConfig(num_sites=5, days=7, seed=3)).site(2)
    c = SiteGenerator(GeneratorConfig(num_sites=5, days=7, seed=4)).site(2)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.anomalies, b.anomalies)
    assert not np.allclose(a.values, c.values)


def test_site_does_not_depend_on_fleet_size() -> None:
    # Lazy per-site generation: site i is a function of (seed, i) only.
    small = SiteGenerator(GeneratorConfig(num_sites=10, days=7)).site(7)
    huge = SiteGenerator(GeneratorConfig(num_sites=10_000, days=7)).site(7)
    np.testing.assert_array_equal(small.values, huge.values)


def test_ten_thousand_sites_cost_nothing_until_asked() -> None:
    gen = SiteGenerator(GeneratorConfig(num_sites=10_000, days=28))
    last = gen.site(9_999)
    assert last.site_id == "site-09999"
    assert last.values.shape == (28 * 288, len(KPI_NAMES))


def test_every_archetype_in_twenty_sites_and_kpis_in_range() -> None:
    gen = SiteGenerator(GeneratorConfig(num_sites=20, days=14))
    sites = list(gen)
    assert {s.archetype for s in sites} == set(ARCHETYPE_NAMES)
    for s in sites:
        assert np.isfinite(s.values).all()
        assert (s.values >= 0).all()
        for name in ("dl_prb_util", "ul_prb_util", "cpu_util"):
            assert s.values[:, KPI_NAMES.index(name)].max() <= 100.0


def test_archetype_shapes() -> None:
    gen = SiteGenerator(GeneratorConfig(num_sites=10, days=14, anomalies_per_week=0))
    by_arch: dict[str, SiteSeries] = {}
    for s in gen:
        by_arch.setdefault(s.archetype, s)
    res, bus, hub = by_arch["residential"], by_arch["business"], by_arch["transport_hub"]
    res_wd = hourly_profile(res.values, res.minute_of_week(), weekend=False)
    bus_wd = hourly_profile(bus.values, bus.minute_of_week(), weekend=False)
    bus_we = hourly_profile(bus.values, bus.minute_of_week(), weekend=True)
    hub_wd = hourly_profile(hub.values, hub.minute_of_week(), weekend=False)
    assert 18 <= int(np.argmax(res_wd)) <= 22  # residential peaks in the evening
    assert 9 <= int(np.argmax(bus_wd)) <= 17  # business peaks in office hours
    assert bus_wd[9:17].mean() > 2 * bus_we[9:17].mean()  # and empties at weekends
    morning, midday = hub_wd[7:9].mean(), hub_wd[11:15].mean()
    assert morning > 1.3 * midday  # transport hubs peak at commute time
    for s in (res, bus):
        assert hourly_profile(s.values, s.minute_of_week(), False)[3] < 0.5 * res_wd.max()


def test_sites_are_non_iid() -> None:
    sites = list(SiteGenerator(GeneratorConfig(num_sites=10, days=7)))
    means = np.array([s.values.mean(axis=0) for s in sites])
    # Sites differ in scale by much more than noise: the federation sees non-IID data.
    thr = KPI_NAMES.index("dl_throughput_mbps")
    assert means[:, thr].max() > 2 * means[:, thr].min()


def test_labelled_anomalies_leave_their_mark() -> None:
    gen = SiteGenerator(GeneratorConfig(num_sites=20, days=28, anomalies_per_week=3))
    kinds: set[int] = set()
    ues = KPI_NAMES.index("active_ues")
    for s in gen:
        kinds |= set(np.unique(s.anomalies).tolist())
        out = s.anomalies == ANOMALY_OUTAGE
        if out.any():
            assert (s.values[out, ues] == 0).all()
    assert {ANOMALY_OUTAGE, ANOMALY_SPIKE, ANOMALY_DEGRADATION} <= kinds


def test_step_is_configurable() -> None:
    s = SiteGenerator(GeneratorConfig(num_sites=1, days=2, step_minutes=15)).site(0)
    assert s.steps == 2 * 96 and s.steps_per_day == 96


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_sites": 0}, "num_sites"),
        ({"days": 0}, "days"),
        ({"step_minutes": 7}, "divide a day"),
        ({"step_minutes": 0}, "divide a day"),
        ({"anomalies_per_week": -1.0}, "anomalies_per_week"),
        ({"start": "yesterday"}, "ISO date"),
    ],
)
def test_bad_generator_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DataError, match=message):
        GeneratorConfig(**kwargs)  # type: ignore[arg-type]


def test_site_index_out_of_range() -> None:
    with pytest.raises(DataError, match="outside"):
        SiteGenerator(GeneratorConfig(num_sites=3, days=2)).site(3)
