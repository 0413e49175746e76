"""The horizon is asked in minutes and refused before anything trains when the sites'
step cannot reach it exactly."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fedge.simulation._config import SimulationConfig, preset
from fedge.simulation._errors import SimulationError
from fedge.simulation._generator import GeneratorConfig


def test_the_default_is_an_hour_of_five_minute_steps() -> None:
    config = preset("demo")
    assert config.horizon_minutes == 60 and config.horizon_steps(5) == 12
    assert config.horizon_steps(2) == 30


@pytest.mark.parametrize(
    ("minutes", "step", "message"),
    [(12, 5, "not a whole number of 5-min steps"), (2, 5, "shorter than one 5-min step")],
)
def test_a_horizon_the_generator_step_cannot_reach_is_refused(
    minutes: int, step: int, message: str
) -> None:
    with pytest.raises(SimulationError, match=message):
        SimulationConfig(horizon_minutes=minutes, generator=GeneratorConfig(step_minutes=step))


def test_an_imported_files_step_is_checked_when_it_is_known() -> None:
    config = replace(preset("demo"), data_path="cells.csv", horizon_minutes=15)
    with pytest.raises(SimulationError, match="not a whole number of 2-min steps"):
        config.horizon_steps(2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lookback": 0}, "lookback must be >= 1"),
        ({"hidden": (0, 4)}, "hidden must be two positive sizes"),
        ({"beta_under": -1.0}, "positive and finite"),
    ],
)
def test_a_forecaster_that_cannot_be_built_is_refused(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(SimulationError, match=message):
        replace(preset("demo"), **change)  # type: ignore[arg-type]
