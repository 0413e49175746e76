"""Event-level scoring of alerts against labelled anomalies: what an operator sees.

An operator judges alerts, not steps: one alert for a 40-minute outage is right, and a
second alert during it adds nothing. The definitions (``docs/agent.md``, "Alert quality"):

* an **event** is a run of consecutive steps with the same non-zero label (two anomalies
  of different kinds back to back are two events);
* an **alert** is a run of consecutive alerting steps (an alert episode the agent keeps
  open over several steps counts once, and so does a detector that fires on every step of
  a deviation);
* an alert is **true** if any of its steps lies inside an event or within ``tolerance``
  steps of one (the onset step of an outage is often forecast before the drop is seen,
  and the recovery step deviates too); otherwise it is false;
* **precision** = true alerts / alerts; **recall** = events touched by at least one true
  alert / events; **false alerts per site-day** = false alerts / scored site-days.

Numpy only, so the agent's package can hold it; the simulation and benchmarks call it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedge.edge_agent._errors import AgentError


class AlertScoreError(AgentError, ValueError):
    """The alert and label arrays cannot be scored together."""


@dataclass(frozen=True)
class AlertEventScore:
    """Counts behind event precision and recall; ``+`` adds sites together."""

    alerts: int
    true_alerts: int
    events: int
    caught_events: int
    site_days: float

    @property
    def false_alerts(self) -> int:
        return self.alerts - self.true_alerts

    @property
    def precision(self) -> float:
        """True alerts / alerts; 1.0 when there are no alerts (nothing was wrong)."""
        return self.true_alerts / self.alerts if self.alerts else 1.0

    @property
    def recall(self) -> float:
        """Events with a true alert / events; 1.0 when there are no events."""
        return self.caught_events / self.events if self.events else 1.0

    @property
    def false_per_site_day(self) -> float:
        return self.false_alerts / self.site_days if self.site_days else 0.0

    def __add__(self, other: AlertEventScore) -> AlertEventScore:
        return AlertEventScore(
            self.alerts + other.alerts,
            self.true_alerts + other.true_alerts,
            self.events + other.events,
            self.caught_events + other.caught_events,
            self.site_days + other.site_days,
        )

    def as_dict(self) -> dict[str, float | int]:
        return {
            "alerts": self.alerts,
            "true_alerts": self.true_alerts,
            "false_alerts": self.false_alerts,
            "events": self.events,
            "caught_events": self.caught_events,
            "site_days": round(self.site_days, 3),
            "event_precision": round(self.precision, 3),
            "event_recall": round(self.recall, 3),
            "false_per_site_day": round(self.false_per_site_day, 3),
        }


def _runs(mask: NDArray[np.bool_]) -> NDArray[np.int64]:
    """(start, stop) of each run of True, stop exclusive."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return edges.reshape(-1, 2).astype(np.int64)


def label_events(labels: NDArray[np.integer[Any]]) -> NDArray[np.int64]:
    """(start, stop) of each event: a run of one non-zero label value, stop exclusive."""
    lab = np.asarray(labels).astype(np.int64)
    if not len(lab):
        return np.zeros((0, 2), dtype=np.int64)
    change = np.flatnonzero(np.diff(lab)) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [len(lab)]])
    keep = lab[starts] != 0
    return np.stack([starts[keep], stops[keep]], axis=1).astype(np.int64)


def score_alert_events(
    alerting: NDArray[np.bool_],
    labels: NDArray[np.integer[Any]],
    *,
    steps_per_day: int = 288,
    tolerance: int = 1,
) -> AlertEventScore:
    """Score one site's alerts (True where an alert is open, per step) against its labels.

    Score sites one at a time and add the results: concatenating sites would join an
    alert at the end of one site to one at the start of the next.
    """
    fired = np.asarray(alerting)
    lab = np.asarray(labels)
    if fired.ndim != 1 or lab.ndim != 1:
        raise AlertScoreError("alerts and labels must be one-dimensional (one site)")
    if fired.shape != lab.shape:
        raise AlertScoreError(f"{len(fired)} alert steps but {len(lab)} labels")
    if fired.dtype != np.bool_:
        raise AlertScoreError(f"alerts must be booleans, got {fired.dtype}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise AlertScoreError(f"labels must be integers, got {lab.dtype}")
    if tolerance < 0:
        raise AlertScoreError(f"tolerance must be >= 0, got {tolerance}")
    if steps_per_day < 1:
        raise AlertScoreError(f"steps_per_day must be >= 1, got {steps_per_day}")
    n = len(fired)
    alerts = _runs(fired)
    events = label_events(lab)
    # widened spans of adjacent events overlap: one alert between them may catch both
    caught = np.zeros(len(events), dtype=bool)
    true_alerts = 0
    if len(events):
        lo = np.maximum(events[:, 0] - tolerance, 0)
        hi = np.minimum(events[:, 1] + tolerance, n)
        for a, b in alerts:
            hit = (lo < b) & (hi > a)  # the alert run overlaps the widened event
            if hit.any():
                true_alerts += 1
                caught |= hit
    return AlertEventScore(
        alerts=len(alerts),
        true_alerts=true_alerts,
        events=len(events),
        caught_events=int(caught.sum()),
        site_days=n / steps_per_day,
    )


def total_alert_score(scores: Iterable[AlertEventScore]) -> AlertEventScore:
    """The sum of per-site scores (an empty fleet scores nothing)."""
    out = AlertEventScore(0, 0, 0, 0, 0.0)
    for s in scores:
        out = out + s
    return out
