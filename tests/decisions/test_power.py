"""The carrier power model: EARTH by default, an operator's figures validated."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedge.decisions import (
    ACTIVE,
    CAP_OFF,
    EARTH_MACRO,
    SLEEP,
    DecisionData,
    DecisionError,
    PowerModel,
)
from fedge.simulation._energy_env import hindsight_bound, site_power, wake_power


def test_earth_macro_is_the_default() -> None:
    assert (EARTH_MACRO.p0_w, EARTH_MACRO.delta_p, EARTH_MACRO.pmax_w) == (130.0, 4.7, 20.0)
    assert EARTH_MACRO.sleep_w == 75.0 and EARTH_MACRO.full_w == pytest.approx(224.0)
    np.testing.assert_allclose(EARTH_MACRO.carrier(np.array([-1.0, 0.5, 2.0])), [130, 177, 224])


@pytest.mark.parametrize(
    ("figures", "message"),
    [
        ({"sleep_w": 131.0}, "between 0 and its idle power"),
        ({"sleep_w": -1.0}, "between 0 and its idle power"),
        ({"p0_w": 0.0}, "P0 > 0"),
        ({"pmax_w": -5.0}, "Pmax > 0"),
        ({"delta_p": -0.1}, "Δp >= 0"),
        ({"p0_w": float("nan")}, "finite"),
        ({"sleep_w": float("inf")}, "finite"),
        ({"delta_p": "4.7"}, "finite"),
    ],
)
def test_bad_figures_are_refused(figures: dict[str, object], message: str) -> None:
    with pytest.raises(DecisionError, match=message):
        replace(EARTH_MACRO, **figures)  # type: ignore[arg-type]


def test_sites_draw_what_the_model_says() -> None:
    model = PowerModel(p0_w=100.0, delta_p=2.0, pmax_w=10.0, sleep_w=5.0, source="test")
    modes = np.array([ACTIVE, CAP_OFF, SLEEP])
    used = np.array([0.5, 0.25, 0.0])
    # Active: two carriers at half load; capacity off: one at half load plus one asleep.
    np.testing.assert_allclose(site_power(modes, used, model), [2 * 110.0, 110.0 + 5.0, 10.0])
    woken = wake_power(np.array([SLEEP]), np.array([ACTIVE]), model)
    assert woken[0] == pytest.approx(2 * (120.0 - 5.0) * 1.0 / 15.0)


def test_a_deeper_sleep_raises_the_energy_ceiling(data: DecisionData) -> None:
    starts = data.block_starts("test")
    earth = hindsight_bound(data, starts)
    deep = hindsight_bound(replace(data, power=replace(EARTH_MACRO, sleep_w=10.0)), starts)
    assert earth is not None and deep is not None
    assert deep["energy_saved_pct"] > earth["energy_saved_pct"] > 0
