"""``fedge fleet status``: once, as JSON, or live (``--watch``) with a bounded count; bad
refresh settings are refused before anything is read."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedge.simulation._fleet import FleetError, FleetSpec, _new_state
from fedge.simulation._fleet_cli import status_command


def _stopped_fleet(root: Path) -> Path:
    """A fleet directory as ``up`` leaves it before starting anything: nothing runs."""
    root.mkdir(parents=True)
    _new_state(root, FleetSpec(2)).save()
    return root


@pytest.mark.parametrize("every", [0.0, -1.0, math.nan, math.inf, 3601.0])
def test_a_bad_refresh_interval_is_refused(tmp_path: Path, every: float) -> None:
    with pytest.raises(FleetError, match=r"--watch: between 0\.1 and 3600 seconds"):
        status_command(_stopped_fleet(tmp_path / "fleet"), watch=every)


def test_a_count_needs_watch_and_at_least_one_refresh(tmp_path: Path) -> None:
    root = _stopped_fleet(tmp_path / "fleet")
    for watch, count in ((None, 2), (1.0, 0), (1.0, -3)):
        with pytest.raises(FleetError, match="--count"):
            status_command(root, watch=watch, count=count)
    with pytest.raises(FleetError, match="--json and --watch"):
        status_command(root, as_json=True, watch=1.0)


def test_watch_on_a_directory_that_is_not_a_fleet_fails_at_once(tmp_path: Path) -> None:
    with pytest.raises(FleetError, match="not a fleet directory"):
        status_command(tmp_path, watch=0.1, count=1000)


def test_watch_redraws_the_tables_each_refresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _stopped_fleet(tmp_path / "fleet")
    status_command(root, watch=0.1, count=3)
    out = capsys.readouterr().out
    # not a terminal: each refresh printed under its own time, nothing overwritten
    assert out.count(f"fleet {root}\n") == 3
    assert out.count("read 20") == 3
    assert out.count("last forecast") == 3
