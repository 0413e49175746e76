"""When the uplink sends: a batching window after new forecasts, at once while a backlog
drains, never inside a back-off, and a slow sweep for rows nothing announced."""

from __future__ import annotations

import math

import pytest

from fedge.edge_agent import ConfigError
from fedge.edge_agent._uplink import UploadSchedule

WINDOW, SWEEP = 0.2, 30.0


def test_rows_left_by_an_earlier_run_go_at_once() -> None:
    assert UploadSchedule(WINDOW, SWEEP, now=100.0).due == 100.0


def test_new_rows_go_one_window_after_they_landed_and_later_ones_ride_along() -> None:
    plan = UploadSchedule(WINDOW, SWEEP, now=0.0)
    plan.sent(0.0, more=False)
    assert plan.due == SWEEP  # nothing announced: only the sweep
    plan.landed(10.0)
    assert plan.due == pytest.approx(10.0 + WINDOW)
    plan.landed(10.1)  # inside the window: the same upload carries it
    plan.landed(10.15)
    assert plan.due == pytest.approx(10.0 + WINDOW)
    plan.sent(10.2, more=False)
    assert plan.due == pytest.approx(10.2 + SWEEP)
    plan.landed(10.25)  # rows stored while that upload was in flight
    assert plan.due == pytest.approx(10.25 + WINDOW)


def test_a_backlog_drains_batch_after_batch() -> None:
    plan = UploadSchedule(WINDOW, SWEEP, now=0.0)
    plan.sent(1.0, more=True)
    assert plan.due == 1.0
    plan.landed(1.0)  # landing rows do not delay a batch that is due now
    assert plan.due == 1.0


def test_rows_landing_during_a_back_off_wait_for_its_end() -> None:
    plan = UploadSchedule(WINDOW, SWEEP, now=0.0)
    plan.back_off(8.0)
    assert plan.due == 8.0
    plan.landed(1.0)
    assert plan.due == 8.0
    plan.sent(8.0, more=False)  # the coordinator answered again
    plan.landed(9.0)
    assert plan.due == pytest.approx(9.0 + WINDOW)


@pytest.mark.parametrize("window", [0.0, -0.2, math.nan, math.inf])
def test_a_window_that_is_not_a_positive_time_is_refused(window: float) -> None:
    with pytest.raises(ConfigError, match="upload_interval_s: must be > 0"):
        UploadSchedule(window, SWEEP, now=0.0)


@pytest.mark.parametrize("sweep", [0.1, math.nan])
def test_a_sweep_shorter_than_the_window_is_refused(sweep: float) -> None:
    with pytest.raises(ConfigError, match="sweep: at least the window"):
        UploadSchedule(WINDOW, sweep, now=0.0)
