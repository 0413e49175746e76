"""Offline replay of a labelled series through the agent's own forecast and alert path.

This is how the docs and the benchmark measure alert precision/recall on the
simulation's labelled anomalies: the same ``ForecastEngine`` and detector the live agent
runs, fed one step at a time, with a scratch store.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.edge_agent._config import AnomalyConfig
from fedge.edge_agent._forecast import ForecastEngine, Serving
from fedge.edge_agent._kpi import KpiSample
from fedge.edge_agent._store import Store


@dataclass(frozen=True)
class AlertScore:
    """Step-level precision/recall, and the share of labelled events alerted at least once."""

    alerts: int
    labelled_steps: int
    precision: float
    recall: float
    events: int
    event_recall: float


def replay_alerts(
    values: NDArray[np.floating[Any]],
    serving: Serving,
    anomaly: AnomalyConfig,
    *,
    step_seconds: int = 300,
    warmup: int = 0,
) -> NDArray[np.bool_]:
    """Whether an alert episode is open at each step from ``warmup`` on (earlier steps
    only prime): True from the step its alert is sent up to the step before it resolves,
    so ``score_alert_events`` counts each episode once."""
    fired = np.zeros(len(values), dtype=bool)
    first = 1_700_000_000 // step_seconds
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "replay.db", step_seconds=step_seconds)
        try:
            engine = ForecastEngine(store, step_seconds, anomaly)
            prime = [_sample(values[i], first + i, step_seconds) for i in range(warmup)]
            store.commit_batch(prime, [], time.time())
            for i in range(warmup, len(values)):
                sample = _sample(values[i], first + i, step_seconds)
                engine.observe(sample, True)
                fired[i] = engine.detector.episode(sample.cell) is not None
                rows = engine.forecast([sample.cell], serving)
                store.commit_batch([sample], rows, time.time())
        finally:
            store.close()
    return fired


def _sample(row: NDArray[np.floating[Any]], step: int, step_seconds: int) -> KpiSample:
    vals = tuple(None if np.isnan(v) else float(v) for v in row)
    return KpiSample("replay", float(step * step_seconds), step, vals)


def score_alerts(fired: NDArray[np.bool_], labels: NDArray[np.integer[Any]]) -> AlertScore:
    truth = labels != 0
    hits = int((fired & truth).sum())
    edges = np.flatnonzero(np.diff(np.concatenate([[0], truth.astype(np.int8), [0]])))
    events = list(zip(edges[::2], edges[1::2], strict=True))
    caught = sum(bool(fired[a:b].any()) for a, b in events)
    return AlertScore(
        alerts=int(fired.sum()),
        labelled_steps=int(truth.sum()),
        precision=hits / max(int(fired.sum()), 1),
        recall=hits / max(int(truth.sum()), 1),
        events=len(events),
        event_recall=caught / max(len(events), 1),
    )
