"""Forecasts that need no learning: the bar every trained model must clear."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray


def persistence(
    values: NDArray[np.floating[Any]],
    ends: NDArray[np.int64],
    horizon: int,
    columns: tuple[int, ...],
) -> NDArray[np.float64]:
    """Tomorrow looks like now: the last observed value for every horizon step."""
    last = values[ends][:, list(columns)].astype(np.float64)
    return np.repeat(last[:, None, :], horizon, axis=1)


def seasonal(
    values: NDArray[np.floating[Any]],
    ends: NDArray[np.int64],
    horizon: int,
    columns: tuple[int, ...],
    period: int,
) -> NDArray[np.float64]:
    """The value one period (a day or a week) before each target step."""
    idx = ends[:, None] + np.arange(1, horizon + 1)[None, :] - period
    if idx.size and idx.min() < 0:
        raise ValueError(f"not enough history for a {period}-step season")
    out: NDArray[np.float64] = values[idx][..., list(columns)].astype(np.float64)
    return out


def actuals(
    values: NDArray[np.floating[Any]],
    ends: NDArray[np.int64],
    horizon: int,
    columns: tuple[int, ...],
) -> NDArray[np.float64]:
    idx = ends[:, None] + np.arange(1, horizon + 1)[None, :]
    out: NDArray[np.float64] = values[idx][..., list(columns)].astype(np.float64)
    return out
