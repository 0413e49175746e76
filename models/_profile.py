"""A site's typical daily shape of its target KPIs, as model inputs.

One global model serves sites whose days look very different (a business district
ramps up at 08:00 on weekdays, a residential area in the evening). A site's own mean
weekday and weekend profile, fitted on its training split like the scaler, tells the
shared model what "normal" looks like here over the next steps, which the lookback
hour alone cannot; without it FedAvg trails each site's own model on the
strongly-shaped archetypes (docs/simulation.md, "Results").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.core import MINUTES_PER_DAY, MINUTES_PER_WEEK, day_type, step_of_day
from fedge.models._errors import ModelError

_DAY_TYPES = 2  # weekday, weekend (fedge.core.day_type)


@dataclass(frozen=True)
class SiteProfile:
    """Mean scaled target KPIs per (day type, step of day); shape (2, steps_per_day, targets)."""

    table: NDArray[np.float32]

    def __post_init__(self) -> None:
        t = self.table
        if t.ndim != 3 or t.shape[0] != _DAY_TYPES or t.shape[1] < 1 or t.shape[2] < 1:
            raise ModelError(f"profile table must be (2, steps_per_day, targets), got {t.shape}")
        if not np.isfinite(t).all():
            raise ModelError("profile table holds NaN or Inf")

    @property
    def steps_per_day(self) -> int:
        return int(self.table.shape[1])

    @classmethod
    def fit(
        cls,
        scaled_targets: NDArray[np.floating[Any]],
        minute_of_week: NDArray[np.integer[Any]],
        steps_per_day: int,
    ) -> SiteProfile:
        """Bucket means; an empty bucket takes that step's all-days mean, else 0 (the mean)."""
        z = np.asarray(scaled_targets, dtype=np.float64)
        mow = np.asarray(minute_of_week, dtype=np.int64)
        if z.ndim != 2 or len(z) != len(mow):
            raise ModelError(f"need (steps, targets) values and one minute per step, got {z.shape}")
        if steps_per_day < 1:
            raise ModelError(f"steps_per_day must be positive, got {steps_per_day}")
        step = step_of_day(mow, steps_per_day)
        kind = day_type(mow)
        ok = ~np.isnan(z)
        zz = np.where(ok, z, 0.0)
        sums = np.zeros((_DAY_TYPES, steps_per_day, z.shape[1]))
        counts = np.zeros_like(sums)
        np.add.at(sums, (kind, step), zz)
        np.add.at(counts, (kind, step), ok.astype(np.float64))
        all_days = sums.sum(axis=0) / np.maximum(counts.sum(axis=0), 1.0)
        table = np.where(counts > 0, sums / np.maximum(counts, 1.0), all_days[None])
        return cls(table.astype(np.float32))

    def features(
        self, minute_of_week: NDArray[np.integer[Any]], horizon: int
    ) -> NDArray[np.float32]:
        """Per step: the profile now and at each of the next ``horizon`` steps."""
        mow = np.asarray(minute_of_week, dtype=np.int64)
        ahead = [mow + (k * MINUTES_PER_DAY) // self.steps_per_day for k in range(horizon + 1)]
        cols = [self.lookup(m) for m in ahead]
        return np.concatenate(cols, axis=-1)

    def lookup(self, minute_of_week: NDArray[np.integer[Any]]) -> NDArray[np.float32]:
        mow = np.asarray(minute_of_week, dtype=np.int64) % MINUTES_PER_WEEK
        return self.table[day_type(mow), step_of_day(mow, self.steps_per_day)]

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SiteProfile:
        try:
            return cls(np.asarray(data["table"], dtype=np.float32))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"bad site profile record: {exc}") from exc
