"""Per-site scaling, fitted on the site's training split only (no look at validation/test)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.models._errors import ModelError

_MIN_STD = 1e-3


@dataclass(frozen=True)
class SiteScaler:
    """Standardises each KPI; a KPI the site does not report scales to a constant 0."""

    mean: NDArray[np.float64]
    std: NDArray[np.float64]
    low: NDArray[np.float64]  # training-split min, for range-relative metrics
    high: NDArray[np.float64]

    @classmethod
    def fit(cls, train_values: NDArray[np.floating[Any]]) -> SiteScaler:
        if train_values.ndim != 2 or train_values.shape[0] < 2:
            raise ModelError(f"need a (steps>=2, kpis) training split, got {train_values.shape}")
        v = train_values.astype(np.float64)
        present = ~np.isnan(v).all(axis=0)
        mean = np.zeros(v.shape[1])
        std = np.ones(v.shape[1])
        low = np.zeros(v.shape[1])
        high = np.ones(v.shape[1])
        if present.any():
            cols = v[:, present]
            mean[present] = np.nanmean(cols, axis=0)
            std[present] = np.maximum(np.nanstd(cols, axis=0), _MIN_STD)
            low[present] = np.nanmin(cols, axis=0)
            high[present] = np.nanmax(cols, axis=0)
        return cls(mean, std, low, high)

    @property
    def range(self) -> NDArray[np.float64]:
        return np.maximum(self.high - self.low, _MIN_STD)

    def transform(self, values: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        z = (values.astype(np.float64) - self.mean) / self.std
        return np.nan_to_num(z, nan=0.0).astype(np.float32)

    def inverse(
        self, scaled: NDArray[np.floating[Any]], columns: tuple[int, ...]
    ) -> NDArray[np.float64]:
        idx = list(columns)
        return scaled.astype(np.float64) * self.std[idx] + self.mean[idx]

    def to_dict(self) -> dict[str, list[float]]:
        return {k: getattr(self, k).tolist() for k in ("mean", "std", "low", "high")}

    @classmethod
    def from_dict(cls, data: dict[str, list[float]]) -> SiteScaler:
        try:
            arrays = [np.asarray(data[k], dtype=np.float64) for k in ("mean", "std", "low", "high")]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"bad scaler record: {exc}") from exc
        return cls(*arrays)
