"""One site's telemetry: the unit every loader, model and evaluation works on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedge.core import KPI_NAMES, MINUTES_PER_DAY, datetime_minute_of_week


@dataclass(frozen=True)
class SiteSeries:
    """A site's KPIs on a regular time grid.

    ``values`` is (steps, len(KPI_NAMES)) in original units; a KPI the site does not report
    is all-NaN. ``anomalies`` holds the labelled anomaly code per step (0 where unlabelled).
    ``events`` marks the steps of known calendar events (a match, a concert): load the
    site expects and schedules for, so not an anomaly; None where no calendar is known.
    """

    site_id: str
    archetype: str
    start: np.datetime64
    step_minutes: int
    values: NDArray[np.float32]
    anomalies: NDArray[np.int8]
    events: NDArray[np.bool_] | None = None

    def __post_init__(self) -> None:
        if self.values.ndim != 2 or self.values.shape[1] != len(KPI_NAMES):
            raise ValueError(f"values must be (steps, {len(KPI_NAMES)}), got {self.values.shape}")
        if self.anomalies.shape != (self.values.shape[0],):
            raise ValueError("anomalies must have one label per step")
        if self.events is not None and self.events.shape != self.anomalies.shape:
            raise ValueError("events must have one flag per step")

    @property
    def steps(self) -> int:
        return int(self.values.shape[0])

    @property
    def steps_per_day(self) -> int:
        return MINUTES_PER_DAY // self.step_minutes

    def timestamps(self) -> NDArray[np.datetime64]:
        step = np.timedelta64(self.step_minutes, "m")
        return self.start + np.arange(self.steps) * step

    def minute_of_week(self) -> NDArray[np.int64]:
        """Minutes since Monday 00:00, the basis of the time-of-day/day-of-week encodings."""
        return datetime_minute_of_week(self.timestamps())
