"""Event-level alert scoring on hand-built label and alert arrays."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.edge_agent import AlertEventScore, AlertScoreError, score_alert_events


def arrays(
    n: int, events: list[tuple[int, int, int]], alerts: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros(n, dtype=np.int8)
    for a, b, kind in events:
        labels[a:b] = kind
    fired = np.zeros(n, dtype=bool)
    fired[alerts] = True
    return fired, labels


def test_an_alert_one_step_before_or_after_an_event_is_true_two_steps_is_false() -> None:
    for step, true in ((9, True), (15, True), (8, False), (16, False), (10, True), (14, True)):
        fired, labels = arrays(100, [(10, 15, 1)], [step])
        s = score_alert_events(fired, labels)
        assert (s.true_alerts, s.caught_events) == ((1, 1) if true else (0, 0)), step
        assert s.alerts == 1 and s.events == 1


def test_tolerance_zero_counts_only_alerts_inside_the_event() -> None:
    fired, labels = arrays(100, [(10, 15, 1)], [9])
    assert score_alert_events(fired, labels, tolerance=0).true_alerts == 0


def test_a_run_of_alerting_steps_is_one_alert() -> None:
    fired, labels = arrays(100, [(10, 15, 2)], [11, 12, 13, 14, 15, 16, 17, 40, 41])
    s = score_alert_events(fired, labels)
    assert (s.alerts, s.true_alerts, s.false_alerts) == (2, 1, 1)
    assert s.precision == 0.5 and s.recall == 1.0


def test_two_events_back_to_back_are_two_events() -> None:
    # different kinds touching: two events; one alert at the seam catches both
    fired, labels = arrays(100, [(10, 15, 1), (15, 20, 3)], [15])
    s = score_alert_events(fired, labels)
    assert (s.events, s.caught_events, s.alerts, s.true_alerts) == (2, 2, 1, 1)
    # an alert only in the first: the second is missed
    fired, labels = arrays(100, [(10, 15, 1), (15, 20, 3)], [11])
    s = score_alert_events(fired, labels)
    assert (s.events, s.caught_events) == (2, 1) and s.recall == 0.5
    # one step apart, same kind: still two events; one alert between them catches both
    fired, labels = arrays(100, [(10, 15, 1), (16, 20, 1)], [15])
    s = score_alert_events(fired, labels)
    assert (s.events, s.caught_events, s.true_alerts) == (2, 2, 1)


def test_no_events_and_no_alerts() -> None:
    fired, labels = arrays(576, [], [3, 100, 101])
    s = score_alert_events(fired, labels)
    assert (s.events, s.alerts, s.false_alerts) == (0, 2, 2)
    assert s.recall == 1.0 and s.precision == 0.0
    assert s.site_days == 2.0 and s.false_per_site_day == 1.0
    fired, labels = arrays(288, [(10, 20, 1)], [])
    s = score_alert_events(fired, labels)
    assert (s.events, s.alerts, s.caught_events) == (1, 0, 0)
    assert s.precision == 1.0 and s.recall == 0.0 and s.false_per_site_day == 0.0


def test_events_at_the_edges_of_the_series() -> None:
    fired, labels = arrays(50, [(0, 3, 1), (47, 50, 2)], [0, 49])
    s = score_alert_events(fired, labels)
    assert (s.events, s.caught_events, s.alerts, s.true_alerts) == (2, 2, 2, 2)


def test_sites_add_up() -> None:
    a = score_alert_events(*arrays(288, [(10, 20, 1)], [12, 200]))
    b = score_alert_events(*arrays(288, [(50, 60, 1)], []))
    total = a + b
    assert total == AlertEventScore(2, 1, 2, 1, 2.0)
    assert total.as_dict()["event_recall"] == 0.5
    assert total.as_dict()["false_per_site_day"] == 0.5


@pytest.mark.parametrize(
    ("fired", "labels", "kwargs", "match"),
    [
        (np.zeros(5, bool), np.zeros(6, np.int8), {}, "5 alert steps but 6 labels"),
        (np.zeros((2, 3), bool), np.zeros((2, 3), np.int8), {}, "one-dimensional"),
        (np.zeros(5, np.int8), np.zeros(5, np.int8), {}, "booleans"),
        (np.zeros(5, bool), np.zeros(5, np.float32), {}, "integers"),
        (np.zeros(5, bool), np.zeros(5, np.int8), {"tolerance": -1}, "tolerance"),
        (np.zeros(5, bool), np.zeros(5, np.int8), {"steps_per_day": 0}, "steps_per_day"),
    ],
)
def test_arrays_that_cannot_be_scored_are_refused(
    fired: np.ndarray, labels: np.ndarray, kwargs: dict[str, int], match: str
) -> None:
    with pytest.raises(AlertScoreError, match=match):
        score_alert_events(fired, labels, **kwargs)
