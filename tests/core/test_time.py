"""The shared calendar: the step grid and timestamps agree, and the encodings are smooth."""

from __future__ import annotations

import numpy as np

from fedge.core import (
    MINUTES_PER_DAY,
    MINUTES_PER_WEEK,
    datetime_minute_of_week,
    day_type,
    minute_of_week,
    step_minute_of_week,
    step_of_day,
    time_features,
)

STEP = 300


def test_monday_midnight_is_minute_zero() -> None:
    monday = np.array([np.datetime64("2024-01-01T00:00")])  # a Monday
    assert datetime_minute_of_week(monday).tolist() == [0]
    thursday_epoch = minute_of_week(np.array([0]))
    assert thursday_epoch.tolist() == [3 * MINUTES_PER_DAY]


def test_the_agents_step_grid_matches_timestamps() -> None:
    start = np.datetime64("2025-03-07T13:05")
    times = start + np.arange(3 * 288) * np.timedelta64(5, "m")
    steps = times.astype("datetime64[s]").astype(np.int64) // STEP
    np.testing.assert_array_equal(step_minute_of_week(steps, STEP), datetime_minute_of_week(times))


def test_day_type_and_step_of_day() -> None:
    friday_2355 = 4 * MINUTES_PER_DAY + 1435
    saturday_0000 = 5 * MINUTES_PER_DAY
    sunday_2355 = 6 * MINUTES_PER_DAY + 1435
    mow = np.array([0, friday_2355, saturday_0000, sunday_2355])
    assert day_type(mow).tolist() == [0, 0, 1, 1]
    assert step_of_day(mow, 288).tolist() == [0, 287, 0, 287]
    assert day_type(mow + MINUTES_PER_WEEK).tolist() == [0, 0, 1, 1]  # next week: the same


def test_time_features_are_unit_circles_smooth_across_the_week() -> None:
    mow = np.arange(0, MINUTES_PER_WEEK, 5)
    f = time_features(mow)
    assert f.shape == (len(mow), 4) and f.dtype == np.float32
    np.testing.assert_allclose(f[:, 0] ** 2 + f[:, 1] ** 2, 1.0, atol=1e-6)
    np.testing.assert_allclose(f[:, 2] ** 2 + f[:, 3] ** 2, 1.0, atol=1e-6)
    # Sunday 23:55 sits next to Monday 00:00, not a week away
    assert np.abs(f[-1] - f[0]).max() < 0.03  # 5 minutes: 2*pi*5/1440 on the daily circle
    # noon and midnight are opposite on the daily circle
    noon = time_features(np.array([720]))[0]
    np.testing.assert_allclose(noon[:2], [0.0, -1.0], atol=1e-6)
