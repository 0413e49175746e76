"""Model inputs from a site's KPIs: scaled KPIs plus time encodings (``fedge.core``), cut
into windows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.core import time_features
from fedge.models._errors import ModelError
from fedge.models._profile import SiteProfile
from fedge.models._scaling import SiteScaler
from fedge.models._spec import ForecastSpec


def site_features(
    values: NDArray[np.floating[Any]],
    minute_of_week: NDArray[np.integer[Any]],
    scaler: SiteScaler,
    profile: SiteProfile | None = None,
    horizon: int = 0,
) -> NDArray[np.float32]:
    """Scaled KPIs, time encodings and, with a profile, the site's typical shape ahead."""
    parts = [scaler.transform(values), time_features(minute_of_week)]
    if profile is not None:
        parts.append(profile.features(minute_of_week, horizon))
    return np.concatenate(parts, axis=1)


def fit_profile(
    values: NDArray[np.floating[Any]],
    minute_of_week: NDArray[np.integer[Any]],
    steps_per_day: int,
    scaler: SiteScaler,
    target_columns: tuple[int, ...],
) -> SiteProfile:
    """The profile of ``values`` (a training split or recent history) in scaled units."""
    z = (np.asarray(values, dtype=np.float64) - scaler.mean) / scaler.std
    return SiteProfile.fit(z[:, list(target_columns)], minute_of_week, steps_per_day)


def windows(
    features: NDArray[np.float32],
    targets: NDArray[np.float32],
    ends: NDArray[np.int64],
    spec: ForecastSpec,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Inputs ``features[e-L+1 .. e]`` and targets ``targets[e+1 .. e+H]`` for each end ``e``."""
    if ends.size and (ends.min() < spec.lookback - 1 or ends.max() + spec.horizon >= len(features)):
        raise ModelError("window ends out of range for this series")
    offs = np.arange(-spec.lookback + 1, 1)
    x = features[ends[:, None] + offs[None, :]]
    hor = np.arange(1, spec.horizon + 1)
    y = targets[ends[:, None] + hor[None, :]]
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


@dataclass(frozen=True)
class PreparedSite:
    """A site cut into train/validation/test windows, scaled with train-only statistics."""

    scaler: SiteScaler
    target_columns: tuple[int, ...]
    profile: SiteProfile | None
    x_train: NDArray[np.float32]
    y_train: NDArray[np.float32]
    x_val: NDArray[np.float32]
    y_val: NDArray[np.float32]
    x_test: NDArray[np.float32]
    y_test: NDArray[np.float32]
    test_ends: NDArray[np.int64]
    val_ends: NDArray[np.int64]


def split_bounds(steps: int, steps_per_day: int, val_days: int, test_days: int) -> tuple[int, int]:
    """First validation step and first test step: the held-out days are the final ones."""
    test_start = steps - test_days * steps_per_day
    val_start = test_start - val_days * steps_per_day
    if val_start < 2 * steps_per_day:
        raise ModelError(
            f"series of {steps / steps_per_day:.1f} days is too short for {val_days} validation "
            f"and {test_days} test days plus 2 training days"
        )
    return val_start, test_start


def prepare_site(
    values: NDArray[np.floating[Any]],
    minute_of_week: NDArray[np.integer[Any]],
    steps_per_day: int,
    spec: ForecastSpec,
    target_columns: tuple[int, ...],
    val_days: int,
    test_days: int,
) -> PreparedSite:
    val_start, test_start = split_bounds(len(values), steps_per_day, val_days, test_days)
    scaler = SiteScaler.fit(values[:val_start])
    profile = (
        fit_profile(
            values[:val_start], minute_of_week[:val_start], steps_per_day, scaler, target_columns
        )
        if spec.site_profile
        else None
    )
    feats = site_features(values, minute_of_week, scaler, profile, spec.horizon)
    targ = feats[:, list(target_columns)]
    lb, hz = spec.lookback, spec.horizon
    # A window belongs to the split its first target falls in; training targets stay
    # strictly before validation, so no held-out value shapes the fitted weights.
    train_ends = np.arange(lb - 1, val_start - hz, dtype=np.int64)
    val_ends = np.arange(val_start - 1, test_start - hz, dtype=np.int64)
    test_ends = np.arange(test_start - 1, len(values) - hz, dtype=np.int64)
    x_tr, y_tr = windows(feats, targ, train_ends, spec)
    x_va, y_va = windows(feats, targ, val_ends, spec)
    x_te, y_te = windows(feats, targ, test_ends, spec)
    return PreparedSite(
        scaler, target_columns, profile, x_tr, y_tr, x_va, y_va, x_te, y_te, test_ends, val_ends
    )
