"""Per-cell forecasting state: the lookback window, the cell's scaler, residual anomalies.

Inference is batched across cells: every sample in a broker batch that completes a step
joins one ONNX Runtime call. Scalers are fitted on the cell's own stored history (like
``models.prepare_site`` does on a training split) and refitted as history grows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from fedge.core import (
    KPI_NAMES,
    TARGET_INDEX,
    day_type,
    step_minute_of_week,
    step_of_day,
    time_features,
)
from fedge.edge_agent._anomaly import Alert, ResidualDetector, relative_residual
from fedge.edge_agent._config import AnomalyConfig, ModelConfig
from fedge.edge_agent._kpi import KpiSample
from fedge.edge_agent._store import ForecastRow, Store
from fedge.models import (
    ForecastSpec,
    ModelError,
    OutputCalibration,
    SiteProfile,
    SiteScaler,
    fit_profile,
    site_features,
)

_N = len(KPI_NAMES)
_MAX_SCALER_DAYS = 7
#: Steps of each cell's window kept in memory: the longest lookback a model may have.
WINDOW_STEPS = 64


class Predictor(Protocol):
    """What the agent needs of a model (``models.OnnxForecaster`` is one)."""

    spec: ForecastSpec

    def predict(self, x: NDArray[np.floating[Any]]) -> NDArray[np.float32]: ...


@dataclass
class Serving:
    version: str
    model: Predictor
    # the cells' own calibrations of this model (``[model] personalise``; edge_agent._personal)
    personal: dict[str, OutputCalibration] = field(default_factory=dict)


@dataclass
class CellState:
    window: NDArray[np.float64]  # (capacity, kpis), row -1 is ``newest``
    newest: int
    count: int
    scaler: SiteScaler | None = None
    profile: SiteProfile | None = None  # fitted with the scaler, on the same history
    scaler_samples: int = 0
    pending: dict[int, tuple[float, ...]] = field(default_factory=dict)  # step -> forecast


@dataclass(frozen=True)
class Features:
    """One cell's recent history as model inputs: scaled features and targets.

    Rows from ``shadow_from`` on are the shadow days the gate scores; the rows before
    them are the days a personalisation is fitted on (none unless asked for)."""

    features: NDArray[np.float32]
    targets: NDArray[np.float32]
    valid_ends: NDArray[np.int64]  # ends whose next step is observed (horizon 1)
    minute_of_week: NDArray[np.int64]
    profile: SiteProfile | None
    cell: str = ""
    shadow_from: int = 0
    observed: NDArray[np.bool_] | None = None  # per row: every target KPI reported

    def inputs(self, spec: ForecastSpec) -> NDArray[np.float32] | None:
        """Per-row inputs as ``spec`` reads them; None when it needs a profile there is not."""
        if not spec.site_profile:
            return self.features
        if self.profile is None:
            return None
        extra = self.profile.features(self.minute_of_week, spec.horizon)
        return np.concatenate([self.features, extra], axis=1)


class ForecastEngine:
    def __init__(
        self,
        store: Store,
        step_seconds: int,
        anomaly: AnomalyConfig,
        *,
        min_history: int = 0,
        capacity: int = WINDOW_STEPS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.step_seconds = step_seconds
        self.steps_per_day = 86_400 // step_seconds
        self.min_history = min_history
        self.capacity = capacity
        self.detector = ResidualDetector(anomaly)
        self.cells: dict[str, CellState] = {}
        # time encodings repeat weekly: one lookup table instead of sin/cos per forecast
        self._week = 7 * self.steps_per_day
        week_minutes = step_minute_of_week(np.arange(self._week, dtype=np.int64), step_seconds)
        self._times = time_features(week_minutes)
        # where each step of the week reads a site profile: (day type, step of day)
        self._profile_at = (day_type(week_minutes), step_of_day(week_minutes, self.steps_per_day))
        self._clock = clock

    # cell state ---------------------------------------------------------------------------

    def cell(self, cell: str) -> CellState | None:
        """The cell's state, loaded from the store the first time it is asked for."""
        state = self.cells.get(cell)
        if state is not None:
            return state
        steps = self.store.recent_steps(cell, 1)
        if not steps:
            return None
        newest = steps[0]
        state = CellState(
            self._window_from_store(cell, newest), newest, self.store.sample_count(cell)
        )
        saved = self.store.scaler(cell)
        if saved is not None and "profile" in saved[0]:
            # a scaler stored without its profile (an older agent) is refitted instead
            try:
                state.scaler = SiteScaler.from_dict(saved[0])
                state.profile = SiteProfile.from_dict(saved[0]["profile"])
                state.scaler_samples = saved[1]
            except ModelError:
                state.scaler, state.profile = None, None
        for row in self.store.forecasts_for(cell, newest):
            if row.step == newest + 1:
                state.pending[row.step] = row.values
        self.cells[cell] = state
        self._rebuild_residuals(cell, state)
        return state

    def _window_from_store(self, cell: str, newest: int) -> NDArray[np.float64]:
        window = np.full((self.capacity, _N), np.nan)
        steps, values = self.store.history(cell, newest - self.capacity + 1, newest)
        window[steps - newest + self.capacity - 1] = values
        return window

    def _rebuild_residuals(self, cell: str, state: CellState) -> None:
        if state.scaler is None:
            return
        for _, actual, forecast in self.store.residual_pairs(cell, self.detector.config.window):
            self.detector.residual(cell, self._residual(state.scaler, actual, forecast))

    def _residual(
        self, scaler: SiteScaler, actual: tuple[float | None, ...], forecast: tuple[float, ...]
    ) -> NDArray[np.float64]:
        cols = list(TARGET_INDEX)
        act = np.array([np.nan if actual[i] is None else actual[i] for i in cols], dtype=np.float64)
        fc = np.asarray(forecast[: len(cols)], dtype=np.float64)
        return relative_residual(act, fc, scaler.std[cols], self.detector.config.level_floor)

    def _maybe_refit(self, cell: str, state: CellState, lookback: int) -> None:
        """Fit at lookback, 2x, 4x ... samples until a week, then once a day."""
        need = max(self.min_history, lookback, 2)
        if state.count < need:
            return
        cap = _MAX_SCALER_DAYS * self.steps_per_day
        if state.scaler is not None:
            due = (
                state.count >= 2 * state.scaler_samples
                if state.scaler_samples < cap
                else state.count >= state.scaler_samples + self.steps_per_day
            )
            if not due:
                return
        steps, values = self.store.history(cell, state.newest - cap + 1, state.newest)
        if len(values) < 2:
            return
        scaler = SiteScaler.fit(values)
        mow = step_minute_of_week(steps, self.step_seconds)
        profile = fit_profile(values, mow, self.steps_per_day, scaler, TARGET_INDEX)
        state.scaler, state.profile, state.scaler_samples = scaler, profile, state.count
        self.store.put_scaler(cell, {**scaler.to_dict(), "profile": profile.to_dict()}, state.count)

    # the hot path -------------------------------------------------------------------------

    def observe(self, sample: KpiSample, newest: bool) -> Alert | None:
        """Add an accepted sample to its cell; score it against the forecast made for it."""
        state = self.cells.get(sample.cell) or self.cell(sample.cell)
        row = np.array([np.nan if v is None else v for v in sample.values], dtype=np.float64)
        if state is None:
            window = np.full((self.capacity, _N), np.nan)
            window[-1] = row
            self.cells[sample.cell] = CellState(window, sample.step, 1)
            return None
        state.count += 1
        if newest:
            shift = sample.step - state.newest
            if shift >= self.capacity:
                state.window[:] = np.nan
            else:
                state.window[:-shift] = state.window[shift:]
                state.window[-shift:] = np.nan
            state.window[-1] = row
            state.newest = sample.step
        else:
            pos = self.capacity - 1 - (state.newest - sample.step)
            if pos >= 0:
                state.window[pos] = row
        forecast = state.pending.pop(sample.step, None)
        if forecast is None or state.scaler is None:
            return None
        residual = self._residual(state.scaler, sample.values, forecast)
        return self.detector.score(sample, residual, forecast)

    def forecast(self, cells: list[str], serving: Serving) -> list[ForecastRow]:
        """One batched inference for the cells whose newest step just completed."""
        spec = serving.model.spec
        lb = spec.lookback
        ready: list[tuple[str, CellState]] = []
        for cell in cells:
            state = self.cells[cell]
            self._maybe_refit(cell, state, lb)
            if state.scaler is not None:
                ready.append((cell, state))
        if not ready:
            return []
        # models.site_features, vectorised over the batch's cells (same arithmetic)
        mean = np.stack([s.scaler.mean for _, s in ready])[:, None, :]  # type: ignore[union-attr]
        std = np.stack([s.scaler.std for _, s in ready])[:, None, :]  # type: ignore[union-attr]
        window = np.stack([s.window[-lb:] for _, s in ready])
        scaled = ((window - mean) / std).astype(np.float32)
        scaled[np.isnan(scaled)] = 0.0  # a missing step is the cell's mean
        newest = np.array([s.newest for _, s in ready], dtype=np.int64)
        steps = newest[:, None] + np.arange(-lb + 1, 1, dtype=np.int64)[None, :]
        parts = [scaled, self._times[steps % self._week]]
        if spec.site_profile:
            parts.append(self._profile_features(ready, steps, spec.horizon))
        x = np.concatenate(parts, axis=2)
        pred = serving.model.predict(x)
        if serving.personal:
            for i, (cell, _) in enumerate(ready):
                head = serving.personal.get(cell)
                if head is not None:
                    pred[i : i + 1] = head.apply(x[i : i + 1], pred[i : i + 1])
        pred = pred.astype(np.float64)
        tgt = list(TARGET_INDEX)
        values = np.maximum(pred * std[:, :, tgt] + mean[:, :, tgt], 0.0).tolist()
        rows: list[ForecastRow] = []
        for (cell, state), out in zip(ready, values, strict=True):
            for h in range(spec.horizon):
                rows.append(
                    ForecastRow(
                        cell, state.newest + 1 + h, state.newest, serving.version, tuple(out[h])
                    )
                )
            state.pending = {state.newest + 1: tuple(out[0])}
        return rows

    def _profile_features(
        self, ready: list[tuple[str, CellState]], steps: NDArray[np.int64], horizon: int
    ) -> NDArray[np.float32]:
        """``SiteProfile.features`` for every ready cell at once."""
        tables = np.stack([s.profile.table for _, s in ready])  # type: ignore[union-attr]
        cells = np.arange(len(ready))[:, None]
        kind, step = self._profile_at
        cols = []
        for k in range(horizon + 1):
            at = (steps + k) % self._week
            cols.append(tables[cells, kind[at], step[at]])
        return np.concatenate(cols, axis=2)

    # shadow evaluation data ---------------------------------------------------------------

    def judging_data(self, config: ModelConfig) -> list[Features]:
        """What a candidate is judged on: the shadow days and, when the agent personalises,
        the ``personal_days`` before them that each model's calibration is fitted on."""
        fit_days = config.personal_days if config.personalise else 0.0
        return self.recent_features(config.shadow_days, fit_days=fit_days)

    def recent_features(
        self, days: float, max_cells: int = 32, fit_days: float = 0.0
    ) -> list[Features]:
        """The newest ``days`` of each cell with a scaler, as features and targets, after
        ``fit_days`` more for fitting (``Features.shadow_from`` marks where they end)."""
        out: list[Features] = []
        shadow = max(int(days * self.steps_per_day), 2)
        span = shadow + max(int(fit_days * self.steps_per_day), 0)
        for cell in self.store.cells()[:max_cells]:
            state = self.cell(cell)
            if state is None:
                continue
            if state.scaler is None:
                self._maybe_refit(cell, state, 2)
            if state.scaler is None:
                continue
            first = state.newest - span + 1
            steps, values = self.store.history(cell, first, state.newest)
            if len(steps) < 2:
                continue
            grid = np.arange(steps[0], state.newest + 1, dtype=np.int64)
            full = np.full((len(grid), _N), np.nan)
            full[steps - steps[0]] = values
            mow = step_minute_of_week(grid, self.step_seconds)
            feats = site_features(full, mow, state.scaler)
            targets = feats[:, list(TARGET_INDEX)]
            observed = ~np.isnan(full[:, list(TARGET_INDEX)]).any(axis=1)
            ends = np.flatnonzero(observed[1:]).astype(np.int64)  # end e predicts e+1
            shadow_from = max(0, len(grid) - shadow)
            out.append(
                Features(feats, targets, ends, mow, state.profile, cell, shadow_from, observed)
            )
        return out


def shadow_score(
    model: Predictor,
    data: list[Features],
    beta_under: float,
    beta_over: float,
    personal: Mapping[str, OutputCalibration] | None = None,
) -> tuple[float, int]:
    """Mean asymmetric squared error (scaled units) of one-step forecasts over the shadow
    days; and the count. With ``personal``, a cell's forecasts are its calibration's."""
    spec = model.spec
    lb = spec.lookback
    total, count = 0.0, 0
    for d in data:
        ends = d.valid_ends[(d.valid_ends >= lb - 1) & (d.valid_ends + 1 >= d.shadow_from)]
        if not len(ends):
            continue
        feats = d.inputs(spec)
        if feats is None:
            continue
        offs = np.arange(-lb + 1, 1)
        x = feats[ends[:, None] + offs[None, :]]
        full = model.predict(x)
        head = None if personal is None else personal.get(d.cell)
        if head is not None:
            full = head.apply(x, full)
        pred = full[:, 0, :]
        err = d.targets[ends + 1] - pred
        weight = np.where(err > 0, beta_under, beta_over)
        total += float((weight * err.astype(np.float64) ** 2).sum())
        count += len(ends)
    if count == 0:
        return math.nan, 0
    return total / (count * len(TARGET_INDEX)), count
