"""The generator's real-data hardness options: each does what it says, and off changes nothing."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedge.core import ANOMALY_OUTAGE
from fedge.simulation import (
    KPI_NAMES,
    DataError,
    GeneratorConfig,
    SiteGenerator,
    SiteSeries,
    archive_sites,
)

PRB, UES, THR = (KPI_NAMES.index(k) for k in ("dl_prb_util", "active_ues", "dl_throughput_mbps"))
BASE = GeneratorConfig(num_sites=10, days=14, anomalies_per_week=0)


def test_demo_data_are_pinned() -> None:
    """The demo preset's sites, as generated before the hardness options existed."""
    gen = SiteGenerator(GeneratorConfig(num_sites=30, days=14))
    pinned = {
        0: ([211849.817, 81280.0, 245277.791, 517359.0, 164888.627], "c85c0f4f11f736b7"),
        4: ([120839.724, 49986.187, 151952.559, 351013.0, 106341.654], "bf4a3f5e2d757afc"),
        13: ([178853.266, 82350.215, 228932.756, 334870.0, 144205.554], "e871a62600595e45"),
        29: ([178252.574, 84298.695, 398274.302, 504565.0, 144915.345], "6a46e02efe61c718"),
    }
    for index, (sums, labels) in pinned.items():
        s = gen.site(index)
        np.testing.assert_allclose(s.values.astype(np.float64).sum(axis=0), sums, rtol=1e-6)
        assert hashlib.sha256(s.anomalies.tobytes()).hexdigest()[:16] == labels
        assert s.steps == 14 * 288


def test_options_leave_the_other_kpis_and_labels_of_untouched_steps_alone() -> None:
    # Each option has its own stream: turning bursts on moves no anomaly and no calendar.
    plain = SiteGenerator(replace(BASE, anomalies_per_week=2.0)).site(4)
    bursty = SiteGenerator(replace(BASE, anomalies_per_week=2.0, bursts_per_day=4.0)).site(4)
    np.testing.assert_array_equal(plain.anomalies, bursty.anomalies)
    assert plain.events is not None and bursty.events is not None
    np.testing.assert_array_equal(plain.events, bursty.events)
    assert not np.array_equal(plain.values, bursty.values)


def test_venue_events_are_on_the_calendar_and_other_sites_have_an_empty_one() -> None:
    gen = SiteGenerator(BASE)
    venue, home = gen.site(4), gen.site(0)
    assert venue.archetype == "event_venue" and home.archetype == "residential"
    assert venue.events is not None and home.events is not None
    assert venue.events.any() and not home.events.any()
    # Calendar steps are the evening surges: busier than the same clock time elsewhere.
    ues = venue.values[:, UES]
    assert ues[venue.events].mean() > 1.5 * ues[~venue.events].mean()


def test_surges_lift_load_several_fold_on_calendar_days() -> None:
    cfg = replace(BASE, num_sites=6, surge_share=1.0, surges_per_week=1.0, surge_factor=5.0)
    plain, surged = SiteGenerator(replace(cfg, surge_share=0.0)), SiteGenerator(cfg)
    for i in range(cfg.num_sites):
        a, b = plain.site(i), surged.site(i)
        assert b.events is not None and a.events is not None
        new = b.events & ~a.events
        assert new.any(), "a surge site has at least one event"
        runs = np.flatnonzero(np.diff(np.concatenate([[0], new.astype(np.int8), [0]])))
        for start, end in zip(runs[::2], runs[1::2], strict=True):
            hours = (end - start) * 5 / 60
            assert 2.0 <= hours <= 5.0  # 2-4 hours plus the ramps
        ratio = b.values[new, UES].sum() / max(a.values[new, UES].sum(), 1.0)
        assert ratio > 2.0
        assert (b.anomalies == a.anomalies).all()  # surges are not anomalies
        np.testing.assert_array_equal(a.values[~b.events], b.values[~b.events])


def test_short_histories_spread_and_end_together() -> None:
    cfg = replace(BASE, num_sites=20, days=21, min_days=7)
    sites = list(SiteGenerator(cfg))
    days = {s.steps // 288 for s in sites}
    assert min(days) >= 7 and max(days) <= 21 and len(days) >= 5
    end = np.datetime64("2026-03-02T00:00") + np.timedelta64(21 * 1440, "m")
    full = SiteGenerator(replace(cfg, min_days=None))
    for i, s in enumerate(sites):
        assert s.timestamps()[-1] + np.timedelta64(5, "m") == end
        assert s.events is not None and len(s.events) == s.steps
        # A late cell's series is the tail of what it would have had.
        np.testing.assert_array_equal(s.values, full.site(i).values[-s.steps :])


def test_scale_spread_covers_orders_of_magnitude() -> None:
    cfg = replace(BASE, num_sites=30, days=7, scale_spread=2.0)
    flat = SiteGenerator(replace(cfg, scale_spread=0.0))
    # UEs follow load linearly (PRB saturates): their ratio is the site's traffic scale.
    scale = np.array(
        [s.values[:, UES].mean() / flat.site(i).values[:, UES].mean() for i, s in
         enumerate(SiteGenerator(cfg))]
    )  # fmt: skip
    assert np.log10(scale.max() / scale.min()) > 1.2
    assert scale.max() < 10**0.5 * 1.05 and scale.min() > 10**-1.5 * 0.8
    assert np.median(scale) < 1.0  # most cells are quieter than their archetype
    # The quietest cell is noisy: step-to-step jumps large next to its mean (count noise).
    quiet = int(np.argmin(scale))
    spread, plain = SiteGenerator(cfg).site(quiet), flat.site(quiet)

    def jumpiness(values: np.ndarray) -> float:
        return float(np.abs(np.diff(values[:, PRB])).mean() / values[:, PRB].mean())

    assert jumpiness(spread.values) > 2 * jumpiness(plain.values)


def test_bursts_are_short_heavy_tailed_and_unlabelled() -> None:
    cfg = replace(BASE, num_sites=4, days=7, bursts_per_day=6.0, burst_alpha=1.2)
    for i in range(cfg.num_sites):
        a = SiteGenerator(replace(cfg, bursts_per_day=0.0)).site(i).values[:, UES]
        s = SiteGenerator(cfg).site(i)
        b = s.values[:, UES]
        lift = b / np.maximum(a, 1.0)
        assert (lift > 1.5).sum() >= 10
        assert lift.max() > 3.0  # a heavy tail: some bursts are several-fold
        assert not s.anomalies.any()


def test_idle_nights_and_gaps_are_zeros() -> None:
    cfg = replace(BASE, num_sites=3, days=7, idle_night_share=1.0)
    for s in SiteGenerator(cfg):
        hour = (s.minute_of_week() % 1440) / 60
        night = (hour >= 2) & (hour < 3.5)  # inside every drawn window, clock offset too
        assert (s.values[night, UES] == 0).all() and (s.values[night, THR] == 0).all()
        assert (s.values[(hour >= 10) & (hour < 20), UES] > 0).mean() > 0.95
        assert not s.anomalies.any()  # sleeping is scheduled, not an anomaly
    gapped = SiteGenerator(replace(BASE, num_sites=3, days=14, gaps_per_week=2.0))
    seen = 0
    for s in gapped:
        out = s.anomalies == ANOMALY_OUTAGE
        seen += int(out.any())
        assert (s.values[out] == 0).all()  # every KPI, CPU too
    assert seen >= 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_days": 0}, "min_days"),
        ({"min_days": 15}, "min_days"),
        ({"scale_spread": -0.5}, "scale_spread"),
        ({"scale_spread": 5.0}, "scale_spread"),
        ({"bursts_per_day": -1.0}, "bursts_per_day"),
        ({"bursts_per_day": float("nan")}, "bursts_per_day"),
        ({"burst_alpha": 0.0}, "burst_alpha"),
        ({"idle_night_share": 1.5}, "idle_night_share"),
        ({"gaps_per_week": -0.1}, "gaps_per_week"),
        ({"surge_share": -0.1}, "surge_share"),
        ({"surges_per_week": -2.0}, "surges_per_week"),
        ({"surge_factor": 0.5}, "surge_factor"),
    ],
)
def test_bad_hardness_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DataError, match=message):
        GeneratorConfig(num_sites=2, days=14, **kwargs)  # type: ignore[arg-type]


def test_hard_settings_round_trip_through_a_site_spec() -> None:
    from fedge.simulation import open_sites

    cfg = replace(BASE, min_days=7, scale_spread=1.5, surge_share=0.5, gaps_per_week=1.0)
    src = open_sites({"kind": "generator", **cfg.to_dict()})
    np.testing.assert_array_equal(src.site(3).values, SiteGenerator(cfg).site(3).values)


def test_an_archive_keeps_each_sites_length_start_and_calendar(tmp_path: Path) -> None:
    cfg = replace(BASE, num_sites=5, days=14, min_days=7, surge_share=1.0)
    sites = list(SiteGenerator(cfg))
    archive = archive_sites(sites, tmp_path / "sites")
    for i, s in enumerate(sites):
        back = archive.site(i)
        assert back.start == s.start and back.steps == s.steps
        assert back.events is not None and s.events is not None
        np.testing.assert_array_equal(back.events, s.events)
    bare = SiteSeries("x", "agent", sites[0].start, 5, sites[0].values, sites[0].anomalies)
    assert archive_sites([bare], tmp_path / "bare").site(0).events is None
    with pytest.raises(ValueError, match="one flag per step"):
        replace(bare, events=np.zeros(3, dtype=bool))
