"""3GPP TR 38.864 power model and multi-depth sleep: known answers, feasibility, ceilings."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fedge.core import POWER_MODES, UnknownModeError, mode_index
from fedge.decisions import (
    ACTIVE,
    CAP_OFF,
    EARTH_MACRO,
    ENERGY_OBS_NAMES,
    LIGHT,
    MICRO,
    MODES,
    SLEEP,
    TR38864,
    DecisionData,
    DecisionError,
    DecisionInputError,
    TR38864Model,
    energy_obs,
    feasible_modes,
    power_model,
)
from fedge.simulation._energy_env import (
    BLOCK_S,
    EnergySavingEnv,
    always_on,
    ceiling_ratios,
    executable,
    hindsight_bound,
    hindsight_candidates,
    resolve,
    rollout,
    site_power,
    wake_power,
)

W = 0.8  # watts per relative unit: Active DL at full load = EARTH's 224 W carrier


def test_the_mode_vocabulary_keeps_the_old_modes_and_refuses_unknown_ones() -> None:
    assert POWER_MODES[:3] == ("active", "capacity_off", "deep_sleep") and MODES == POWER_MODES
    assert (ACTIVE, CAP_OFF, SLEEP, LIGHT, MICRO) == (0, 1, 2, 3, 4)
    assert mode_index("light_sleep") == LIGHT and mode_index("deep_sleep") == SLEEP
    for bad in ("hibernate", "", None, 3):
        with pytest.raises(UnknownModeError, match="one of"):
            mode_index(bad)
    assert EARTH_MACRO.modes == POWER_MODES[:3] and TR38864.modes == POWER_MODES


def test_the_agent_accepts_the_new_modes_and_refuses_unknown_ones() -> None:
    from fedge.edge_agent import ActionFormatError
    from fedge.edge_agent._actions import parse_action

    body = {
        "action_id": 1,
        "site_id": "ab" * 16,
        "kind": "strategic",
        "mode": "light_sleep",
        "shares": None,
        "decided_at": 1.0,
        "valid_until": 2.0,
        "policy_version": "v",
        "source": "federated_forecast",
        "decision_id": None,
    }
    assert parse_action(json.dumps(body).encode()).mode == "light_sleep"
    with pytest.raises(ActionFormatError, match="mode"):
        parse_action(json.dumps({**body, "mode": "hibernate"}).encode())


def test_tr38864_table_figures() -> None:
    m = TR38864
    assert (m.deep, m.light, m.micro, m.active_dl, m.active_ul) == (1, 25, 55, 280, 110)
    assert (m.deep_ms, m.light_ms, m.micro_ms) == (50, 6, 0)
    assert (m.deep_energy, m.light_energy, m.micro_energy) == (1000, 90, 0)
    assert m.full_w == pytest.approx(280 * W) == pytest.approx(EARTH_MACRO.full_w)
    # Awake: Active DL for the carried share of the time, micro sleep for the rest.
    np.testing.assert_allclose(
        m.carrier(np.array([-1.0, 0.0, 0.5, 1.0, 2.0])),
        np.array([55.0, 55.0, 55 + 225 * 0.5, 280.0, 280.0]) * W,
    )
    np.testing.assert_allclose(
        m.asleep_w()[[CAP_OFF, SLEEP, LIGHT, MICRO]], np.array([1.0, 1.0, 25.0, 55.0]) * W
    )
    np.testing.assert_allclose(
        m.transition_s()[[SLEEP, LIGHT, MICRO]], [0.050, 0.006, 0.0], rtol=0, atol=1e-12
    )
    # Relative units x ms -> J: 1000 x 0.8 W x 1 ms = 0.8 J.
    np.testing.assert_allclose(m.transition_j()[[SLEEP, LIGHT, MICRO]], [0.8, 0.072, 0.0])


def test_tr38864_site_power_per_mode() -> None:
    modes = np.array([ACTIVE, CAP_OFF, SLEEP, LIGHT, MICRO])
    used = np.array([0.3, 0.3, 0.0, 0.0, 0.0])
    # Active: 2 x (55 + 225 x 0.3); capacity off: one carrier at 0.6 plus one in deep
    # sleep; asleep: 2 x the state's power. Relative units, then 0.8 W each.
    expected = np.array([2 * 122.5, 55 + 225 * 0.6 + 1, 2 * 1, 2 * 25, 2 * 55]) * W
    np.testing.assert_allclose(site_power(modes, used, TR38864), expected)


def test_tr38864_load_scaling_formula_with_an_operators_p3_and_a() -> None:
    m = TR38864Model(p3=100.0, a=0.3, s_a=0.5, s_p=0.5, eta=1.0)
    # P3 + s_a (P4 - P3) [A + (s_f s_p / eta)(1 - A)] = 100 + 0.5 x 180 x (0.3 + 0.4 x 0.7)
    assert m.dl_relative(0.8) == pytest.approx(152.2)
    assert m.dl_relative(1.0) == pytest.approx(100 + 90 * (0.3 + 0.35))
    ref = TR38864Model(p3=100.0, a=0.3)
    assert ref.dl_relative(1.0) == pytest.approx(280.0) and ref.full_w == pytest.approx(224.0)
    assert ref.dl_relative(0.0) == pytest.approx(100 + 180 * 0.3)


@pytest.mark.parametrize(
    ("figures", "message"),
    [
        ({"s_a": 0.5}, "could not be verified"),
        ({"s_p": 0.5}, "could not be verified"),
        ({"light": 60.0}, "must rise"),
        ({"deep": -1.0}, "must rise"),
        ({"micro": 300.0}, "must rise"),
        ({"deep_ms": -1.0}, "transition times"),
        ({"light_energy": -5.0}, "transition energies"),
        ({"watts_per_unit": 0.0}, "watts_per_unit"),
        ({"eta": 0.0}, "η > 0"),
        ({"deep": float("nan")}, "finite"),
        ({"active_dl": "280"}, "finite"),
        ({"a": 1.5, "p3": 10.0}, "A must be"),
        ({"p3": 500.0, "a": 0.1}, "P3 must be"),
    ],
)
def test_bad_tr38864_figures_are_refused(figures: dict[str, object], message: str) -> None:
    with pytest.raises(DecisionError, match=message):
        replace(TR38864, **figures)  # type: ignore[arg-type]


def test_power_model_by_name() -> None:
    assert power_model("tr38864") is TR38864 and power_model("earth") is EARTH_MACRO
    for bad in ("nope", "EARTH", ""):
        with pytest.raises(DecisionError, match="unknown power model"):
            power_model(bad)


def test_a_sleep_is_entered_only_when_its_wake_up_fits_the_block() -> None:
    assert feasible_modes(TR38864, BLOCK_S).all()
    assert feasible_modes(EARTH_MACRO, BLOCK_S).tolist() == [True, True, True, False, False]
    # A 20 ms block: deep sleep (50 ms, and so a capacity carrier off) does not fit,
    # light (6 ms) and micro sleep (0 ms) do.
    short = feasible_modes(TR38864, 0.020)
    assert short.tolist() == [True, False, False, True, True]
    asked = np.array([ACTIVE, CAP_OFF, SLEEP, LIGHT, MICRO])
    assert executable(asked, TR38864, 0.020).tolist() == [ACTIVE, ACTIVE, ACTIVE, LIGHT, MICRO]
    # Under EARTH there is no light or micro sleep: asked for, the site stays active.
    assert executable(asked, EARTH_MACRO).tolist() == [ACTIVE, CAP_OFF, SLEEP, ACTIVE, ACTIVE]
    with pytest.raises(DecisionInputError, match="modes must be"):
        executable(np.array([5]), TR38864)


def test_a_deep_sleep_that_cannot_wake_within_the_block_is_never_in_force(
    data: DecisionData,
) -> None:
    slow = replace(TR38864, deep_ms=20 * 60 * 1000.0)  # waking takes 20 minutes
    d = replace(data, power=slow)
    out = resolve(
        np.array([[SLEEP, CAP_OFF, LIGHT, ACTIVE]]),
        np.zeros((1, 4, 3)),
        np.zeros((1, 4), dtype=np.int64),
        power=slow,
    )
    assert out.modes.tolist() == [[ACTIVE, ACTIVE, LIGHT, ACTIVE]]

    def deep(obs: np.ndarray, sites: np.ndarray) -> np.ndarray:
        return np.full(len(obs), SLEEP, dtype=np.int64)

    trace = rollout(d, d.block_starts("test"), deep)
    assert (trace.modes == ACTIVE).all()
    env = EnergySavingEnv(d, "train")
    env.reset(seed=0)
    env.step(SLEEP)
    assert env._modes[0, 0] == ACTIVE


def test_tr38864_wake_up_pays_the_transition_energy() -> None:
    prev = np.array([SLEEP, LIGHT, SLEEP, ACTIVE, CAP_OFF, MICRO])
    now = np.array([ACTIVE, ACTIVE, LIGHT, SLEEP, ACTIVE, ACTIVE])
    extra = wake_power(prev, now, TR38864)
    # Deep -> active wakes two carriers from deep sleep (0.8 J each) over a 900 s block;
    # light -> active two from light (0.072 J); deep -> light leaves deep sleep twice;
    # going to sleep costs nothing here; capacity off -> active wakes one carrier.
    expected = np.array([2 * 0.8, 2 * 0.072, 2 * 0.8, 0.0, 0.8, 0.0]) / 900.0
    np.testing.assert_allclose(extra, expected)


def test_the_previous_mode_is_seen_as_active_off_or_asleep(data: DecisionData) -> None:
    sites = data.clusters[:1]
    t = int(data.block_starts("test")[0])
    modes = np.zeros_like(sites)
    i = ENERGY_OBS_NAMES.index("prev_active")
    for prev_mode, hot in ((ACTIVE, 0), (CAP_OFF, 1), (SLEEP, 2), (LIGHT, 2), (MICRO, 2)):
        prev = np.full_like(sites, prev_mode)
        obs = energy_obs(data, sites, t, 0, modes, prev)[0]
        assert obs[i : i + 3].tolist() == [float(j == hot) for j in range(3)]


def test_the_ceiling_is_recomputed_for_each_model(data: DecisionData) -> None:
    starts = data.block_starts("test")
    tr = replace(data, power=TR38864)
    earth, tr_bound = hindsight_bound(data, starts), hindsight_bound(tr, starts)
    assert earth is not None and tr_bound is not None
    assert earth["power_model"] == "earth" and tr_bound["power_model"] == "tr38864"
    assert earth["energy_saved_pct"] != tr_bound["energy_saved_pct"]
    # Deep sleep is the cheapest sleep that fits: the lighter ones cannot beat it.
    assert tr_bound["modes_tried"] == ["active", "capacity_off", "deep_sleep"]
    # Without deep sleep (it no longer fits), light sleep is the best sleep and the
    # ceiling falls.
    no_deep = replace(tr, power=replace(TR38864, deep_ms=20 * 60 * 1000.0))
    assert hindsight_candidates(no_deep.power).tolist() == [ACTIVE, LIGHT]
    lower = hindsight_bound(no_deep, starts)
    assert lower is not None and lower["energy_saved_pct"] < tr_bound["energy_saved_pct"]
    # An idle cluster: every carrier in deep sleep (1) against micro sleep (55).
    idle = replace(tr, load=np.zeros_like(data.load))
    bound = hindsight_bound(idle, starts)
    assert bound is not None
    assert bound["energy_saved_pct"] == pytest.approx(100 * (1 - 1 / 55), abs=1e-3)
    # Under TR 38.864 always-on is no ceiling violation and saves nothing.
    base = rollout(tr, starts, always_on).summary()
    assert base["energy_saved_pct"] == 0.0 and base["qos_violation_rate"] == 0.0
    assert set(base["mode_share"]) == set(POWER_MODES)


def test_ceiling_ratios() -> None:
    energy = {
        "hindsight_bound": {"energy_saved_pct": 20.0},
        "dqn": {"energy_saved_pct": 19.0},
        "always_on": {"energy_saved_pct": 0.0},
    }
    ceiling_ratios(energy)
    assert energy["dqn"]["ratio_to_ceiling"] == 0.95
    assert energy["always_on"]["ratio_to_ceiling"] == 0.0
    assert "ratio_to_ceiling" not in energy["hindsight_bound"]


def test_the_env_offers_the_models_modes(data: DecisionData) -> None:
    tr = EnergySavingEnv(replace(data, power=TR38864), "train")
    earth = EnergySavingEnv(data, "train")
    assert tr.num_modes == 5 and earth.num_modes == 3
    assert tr.action_space.contains(np.int64(4)) and not earth.action_space.contains(np.int64(3))
    tr.reset(seed=1)
    earth.reset(seed=1)
    tr.step(LIGHT)
    with pytest.raises(DecisionInputError):
        earth.step(LIGHT)
    with pytest.raises(DecisionInputError):
        tr.step(5)


def test_training_under_another_model_refuses_forecasts_made_for_other_settings(
    data: DecisionData, tmp_path: Path
) -> None:
    from fedge.simulation._decision_train import DECISION_PRESETS, train

    smoke = replace(DECISION_PRESETS["smoke"], power=TR38864)
    with pytest.raises(DecisionError, match="another headroom or cluster"):
        train(replace(smoke, headroom=0.9), tmp_path, forecast=data)
    with pytest.raises(DecisionError, match="another headroom or cluster"):
        train(replace(smoke, cluster_size=2), tmp_path, forecast=data)


def test_the_report_shows_every_power_model_and_its_ceiling() -> None:
    from fedge.simulation._decision_report import decision_html

    def method(saved: float, ratio: float | None = None) -> dict[str, object]:
        r: dict[str, object] = {"energy_saved_pct": saved, "qos_violation_rate": 0.001}
        r["reward"] = -0.5
        if ratio is not None:
            r["ratio_to_ceiling"] = ratio
        return r

    energy = {
        "dqn": method(12.0, 0.8),
        "threshold": {**method(9.0, 0.6), "thresholds": {}},
        "always_on": method(0.0, 0.0),
        "hindsight_bound": {"energy_saved_pct": 15.0},
    }
    slices = {"ppo": {"sla_satisfaction": 0.9, "reserved_prb_pct": 80.0, "reward": 1.0}}
    section = {
        "energy": energy,
        "slices": slices,
        "latency_us": {"p50": 1.0, "p99": 2.0},
        "power_model": TR38864.describe(),
        "power_models": {
            "tr38864": {"energy": energy, "power_model": TR38864.describe()},
            "earth": {"energy": {"dqn": method(5.0)}, "power_model": EARTH_MACRO.describe()},
        },
    }
    page = decision_html({"decisions": section})
    assert "3GPP TR 38.864" in page and "deep/light/micro sleep 1.0/25.0/55.0" in page
    assert "<td>tr38864</td><td>dqn</td><td>12.0%</td><td>15.0%</td><td>80%</td>" in page
    assert "<td>earth</td><td>dqn</td><td>5.0%</td><td>-</td><td>-</td>" in page
