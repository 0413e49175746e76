"""Forecast specs from JSON: the class's defaults are the one source for what a spec leaves
out, and what it gets wrong is refused by name."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest

from fedge.models import ForecastSpec, ModelError

ROOT = Path(__file__).resolve().parents[2]


def test_an_empty_spec_is_the_default_forecaster() -> None:
    assert ForecastSpec.from_dict({}) == ForecastSpec()
    assert ForecastSpec.from_dict({}).persistence_skip and ForecastSpec.from_dict({}).site_profile


def test_a_partial_spec_keeps_every_other_default() -> None:
    spec = ForecastSpec.from_dict({"lookback": 24, "horizon": 3})
    assert spec == ForecastSpec(lookback=24, horizon=3)
    assert ForecastSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_the_flower_app_config_trains_the_default_forecaster() -> None:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        config = tomllib.load(handle)["tool"]["flwr"]["app"]["config"]
    assert ForecastSpec.from_dict(json.loads(config["forecast"])) == ForecastSpec()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([12, 3], "JSON object"),
        ("lookback=12", "JSON object"),
        ({"lookbak": 12}, "unknown forecast spec field"),
        ({"lookback": "many"}, "lookback must be an integer"),
        ({"lookback": 12.5}, "lookback must be an integer"),
        ({"lookback": True}, "lookback must be an integer"),
        ({"horizon": 0}, "horizon must be >= 1"),
        ({"hidden": 5}, "hidden must be a list"),
        ({"hidden": [64]}, "hidden must be two positive sizes"),
        ({"hidden": [64, "a"]}, "hidden must be a list"),
        ({"beta_under": "high"}, "beta_under must be a number"),
        ({"beta_over": math.nan}, "positive and finite"),
        ({"beta_over": math.inf}, "positive and finite"),
        ({"persistence_skip": "false"}, "persistence_skip must be true or false"),
        ({"site_profile": 0}, "site_profile must be true or false"),
    ],
)
def test_bad_specs_are_refused_by_name(data: object, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        ForecastSpec.from_dict(data)


def test_horizon_minutes_become_whole_steps() -> None:
    from fedge.models import horizon_steps

    assert horizon_steps(60, 5) == 12
    assert horizon_steps(60, 2) == 30
    assert horizon_steps(5, 5) == 1


@pytest.mark.parametrize(
    ("minutes", "step", "message"),
    [
        (15, 2, "not a whole number of 2-min steps"),
        (3, 5, "shorter than one 5-min step"),
        (0, 5, "shorter than one"),
        (60, 0, "step_minutes must be >= 1"),
        (60.0, 5, "whole number of minutes"),
        (True, 5, "whole number of minutes"),
    ],
)
def test_a_horizon_between_steps_is_refused(minutes: object, step: int, message: str) -> None:
    from fedge.models import horizon_steps

    with pytest.raises(ModelError, match=message):
        horizon_steps(minutes, step)  # type: ignore[arg-type]
