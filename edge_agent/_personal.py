"""The agent's personalisation: each cell's calibration of the served global model.

The federated model fits the fleet; a cell unlike the majority gets a linear correction of
its forecasts (``fedge.models.OutputCalibration``: closed-form asymmetric ridge, numpy,
no torch), fitted on the cell's own stored KPIs. A calibration belongs to one model
version: when a new global version arrives it is fitted again for the candidate and for
the serving model on the same days, so the shadow gate compares the personalised
candidate with the personalised current model (docs/agent.md, "Personalisation"). The
fitted calibrations of the model that serves are kept in the store, so a restart serves
the same forecasts.
"""

from __future__ import annotations

import json
import logging

import numpy as np
from numpy.typing import NDArray

from fedge.edge_agent._forecast import Features, Predictor
from fedge.edge_agent._store import Store
from fedge.models import ModelError, OutputCalibration, fit_output_calibration

log = logging.getLogger("fedge.agent.personal")

#: Where a version's calibrations are kept (``Store.put_state``).
STATE_PREFIX = "personal."
#: Most windows a cell's calibration is fitted on: a longer history is sampled evenly
#: (neighbouring windows overlap all but one step, so every few carry the information),
#: which bounds the judging thread's work per cell whatever the step.
MAX_FIT_WINDOWS = 700


def fit_windows(
    d: Features, lookback: int, horizon: int, inputs: NDArray[np.float32]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Windows of the fitting days (every target of each of the next ``horizon`` steps
    reported, all before the shadow days) and their targets."""
    observed = d.observed
    if observed is None:
        observed = np.zeros(len(d.features), dtype=bool)
        observed[d.valid_ends + 1] = True
    last = d.shadow_from - 1 - horizon  # the latest end whose targets precede the shadow days
    ends = np.arange(lookback - 1, last + 1, dtype=np.int64)
    if len(ends):
        hor = np.arange(1, horizon + 1)
        ends = ends[observed[ends[:, None] + hor[None, :]].all(axis=1)]
    if len(ends) > MAX_FIT_WINDOWS:  # evenly, newest kept: the holdout is the newest share
        ends = ends[::-1][:: -(-len(ends) // MAX_FIT_WINDOWS)][::-1]
    offs = np.arange(-lookback + 1, 1)
    x = inputs[ends[:, None] + offs[None, :]]
    y = d.targets[ends[:, None] + np.arange(1, horizon + 1)[None, :]]
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def fit_cells(model: Predictor, data: list[Features]) -> dict[str, OutputCalibration]:
    """Each cell's calibration of ``model`` on its fitting days; a cell whose held-out
    windows the model already forecasts as well, or with too few windows, gets none."""
    spec = model.spec
    out: dict[str, OutputCalibration] = {}
    for d in data:
        if not d.cell or d.shadow_from <= 0:
            continue
        inputs = d.inputs(spec)
        if inputs is None:
            continue
        x, y = fit_windows(d, spec.lookback, spec.horizon, inputs)
        if not len(x):
            continue
        pred = model.predict(x)
        cal = fit_output_calibration(x, pred, y.astype(np.float32), spec)
        if cal is not None:
            out[d.cell] = cal
    return out


def save_personal(store: Store, version: str, personal: dict[str, OutputCalibration]) -> None:
    body = {"v": 1, "cells": {c: p.to_dict() for c, p in sorted(personal.items())}}
    store.put_state(STATE_PREFIX + version, json.dumps(body).encode())


def load_personal(store: Store, version: str, model: Predictor) -> dict[str, OutputCalibration]:
    """The stored calibrations of ``version``; a record that does not fit the model (or is
    unreadable) is dropped with a warning and the cell serves the global forecast."""
    raw = store.get_state(STATE_PREFIX + version)
    if raw is None:
        return {}
    try:
        cells = json.loads(raw)["cells"]
        if not isinstance(cells, dict):
            raise TypeError("cells is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("personalisation of %s unreadable, not used: %s", version, exc)
        return {}
    out: dict[str, OutputCalibration] = {}
    for cell, record in cells.items():
        try:
            cal = OutputCalibration.from_dict(record)
        except ModelError as exc:
            log.warning("personalisation of %s for cell %s not used: %s", version, cell, exc)
            continue
        if cal.spec != model.spec:
            log.warning("personalisation of %s for %s: fitted for another spec", version, cell)
            continue
        out[str(cell)] = cal
    return out


__all__ = ["fit_cells", "fit_windows", "load_personal", "save_personal"]
