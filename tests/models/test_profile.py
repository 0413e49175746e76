from __future__ import annotations

import numpy as np
import pytest

from fedge.models import ForecastSpec, ModelError, SiteProfile, prepare_site
from fedge.simulation import TARGET_INDEX, GeneratorConfig, SiteGenerator

SPD = 288  # 5-minute steps


def _week_minutes(days: int) -> np.ndarray:
    return (np.arange(days * SPD, dtype=np.int64) * 5) % (7 * 1440)


def test_profile_is_the_bucket_mean_per_day_type() -> None:
    mow = _week_minutes(14)
    weekend = mow // 1440 >= 5
    hour = (mow % 1440) / 60.0
    z = np.stack([np.where(weekend, 1.0, hour), -hour, np.zeros_like(hour)], axis=1)
    prof = SiteProfile.fit(z, mow, SPD)
    assert prof.table.shape == (2, SPD, 3)
    np.testing.assert_allclose(prof.table[0, :, 0], np.arange(SPD) * 5 / 60.0, atol=1e-6)
    np.testing.assert_allclose(prof.table[1, :, 0], 1.0)
    np.testing.assert_allclose(prof.table[1, :, 1], -np.arange(SPD) * 5 / 60.0, atol=1e-6)


def test_features_look_ahead_across_midnight_and_into_the_weekend() -> None:
    table = np.zeros((2, SPD, 3), dtype=np.float32)
    table[0, :, 0] = np.arange(SPD)  # weekday: step of day
    table[1, :, 0] = 1000 + np.arange(SPD)  # weekend
    prof = SiteProfile(table)
    friday_2355 = np.array([4 * 1440 + 1435])
    f = prof.features(friday_2355, horizon=2)
    assert f.shape == (1, 9)
    # now: Friday's last step; +1 and +2 steps: Saturday's first two
    assert f[0, 0] == SPD - 1 and f[0, 3] == 1000 and f[0, 6] == 1001
    sunday_2355 = np.array([6 * 1440 + 1435])
    assert prof.features(sunday_2355, horizon=1)[0, 3] == 0  # wraps to Monday 00:00


def test_missing_values_and_empty_buckets() -> None:
    mow = _week_minutes(3)  # Monday to Wednesday: no weekend seen
    z = np.ones((len(mow), 3))
    z[:SPD, 1] = np.nan  # a missing day does not count
    z[SPD:, 1] = 2.0
    prof = SiteProfile.fit(z, mow, SPD)
    np.testing.assert_allclose(prof.table[:, :, 1], 2.0)
    np.testing.assert_allclose(prof.table[1], prof.table[0])  # weekend falls back to all days
    assert SiteProfile.from_dict(prof.to_dict()).table.tolist() == prof.table.tolist()


def test_bad_profiles_raise_model_error() -> None:
    with pytest.raises(ModelError, match="profile table"):
        SiteProfile(np.zeros((3, SPD, 3), dtype=np.float32))
    with pytest.raises(ModelError, match="NaN"):
        SiteProfile(np.full((2, SPD, 3), np.nan, dtype=np.float32))
    with pytest.raises(ModelError, match="site profile record"):
        SiteProfile.from_dict({"tables": []})
    with pytest.raises(ModelError, match="one minute per step"):
        SiteProfile.fit(np.zeros((10, 3)), np.zeros(9, dtype=np.int64), SPD)
    with pytest.raises(ModelError, match="steps_per_day"):
        SiteProfile.fit(np.zeros((10, 3)), np.zeros(10, dtype=np.int64), 0)


def test_spec_counts_profile_inputs() -> None:
    assert ForecastSpec(horizon=3).n_features == 5 + 4 + 3 * 4
    assert ForecastSpec(horizon=3, site_profile=False).n_features == 9
    assert ForecastSpec.from_dict({"lookback": 12, "horizon": 3}).site_profile
    spec = ForecastSpec(horizon=2)
    assert ForecastSpec.from_dict(spec.to_dict()) == spec


def test_prepared_windows_carry_the_profile_ahead_of_each_step() -> None:
    site = SiteGenerator(GeneratorConfig(num_sites=1, days=8)).site(0)
    spec = ForecastSpec(horizon=3)
    p = prepare_site(
        site.values, site.minute_of_week(), site.steps_per_day, spec, TARGET_INDEX, 2, 2
    )
    assert p.x_train.shape[2] == spec.n_features
    assert p.profile is not None
    end = 100  # the window ending at step 100 + lookback - 1
    last = end + spec.lookback - 1
    want = p.profile.features(site.minute_of_week()[[last]], spec.horizon)[0]
    np.testing.assert_allclose(p.x_train[end, -1, 9:], want)
