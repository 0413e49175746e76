"""The calendar every layer shares: minute of the week and its smooth encodings.

Minute 0 of the week is Monday 00:00 UTC. Training (from a series' timestamps), the agent
(from its step grid) and the decision observations must agree on this exactly, or a model
sees another time of day than the one it was trained on.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

MINUTES_PER_DAY: Final = 1440
MINUTES_PER_WEEK: Final = 7 * MINUTES_PER_DAY
# 1970-01-01 was a Thursday: three days after a Monday.
_EPOCH_WEEKDAY_MINUTES: Final = 3 * MINUTES_PER_DAY
_WEEKEND_FIRST_DAY: Final = 5  # Saturday

TIME_FEATURE_NAMES: Final = ("tod_sin", "tod_cos", "dow_sin", "dow_cos")


def minute_of_week(epoch_minutes: NDArray[np.integer[Any]]) -> NDArray[np.int64]:
    """Minutes since Monday 00:00 UTC of each time given in minutes since the Unix epoch."""
    minutes = np.asarray(epoch_minutes, dtype=np.int64)
    out: NDArray[np.int64] = (minutes + _EPOCH_WEEKDAY_MINUTES) % MINUTES_PER_WEEK
    return out


def step_minute_of_week(steps: NDArray[np.integer[Any]], step_seconds: int) -> NDArray[np.int64]:
    """Minute of the week of grid steps ``steps`` (step ``k`` starts at ``k * step_seconds``)."""
    return minute_of_week(np.asarray(steps, dtype=np.int64) * step_seconds // 60)


def datetime_minute_of_week(times: NDArray[np.datetime64]) -> NDArray[np.int64]:
    """Minute of the week of numpy datetimes (UTC)."""
    return minute_of_week(np.asarray(times).astype("datetime64[m]").astype(np.int64))


def day_type(minute_of_week: NDArray[np.integer[Any]]) -> NDArray[np.int64]:
    """0 on weekdays, 1 on Saturday and Sunday."""
    day = np.asarray(minute_of_week, dtype=np.int64) % MINUTES_PER_WEEK // MINUTES_PER_DAY
    return (day >= _WEEKEND_FIRST_DAY).astype(np.int64)


def step_of_day(minute_of_week: NDArray[np.integer[Any]], steps_per_day: int) -> NDArray[np.int64]:
    """Index of the grid step within its day, for ``steps_per_day`` steps a day."""
    mow = np.asarray(minute_of_week, dtype=np.int64)
    out: NDArray[np.int64] = (mow % MINUTES_PER_DAY) * steps_per_day // MINUTES_PER_DAY
    return out


def time_features(minute_of_week: NDArray[np.integer[Any]]) -> NDArray[np.float32]:
    """sin/cos of time of day and of day of week (``TIME_FEATURE_NAMES``): smooth across
    midnight and Sunday. One row per time, float32."""
    mow = np.asarray(minute_of_week)
    tod = 2 * np.pi * (mow % MINUTES_PER_DAY) / float(MINUTES_PER_DAY)
    dow = 2 * np.pi * mow / float(MINUTES_PER_WEEK)
    return np.stack([np.sin(tod), np.cos(tod), np.sin(dow), np.cos(dow)], axis=-1).astype(
        np.float32
    )
