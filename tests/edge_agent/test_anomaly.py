"""Alert episodes: persistence, immediate critical, escalation, cool-down, resolution;
the relative residual; and the [anomaly] settings that are refused."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.edge_agent import AnomalyConfig, ConfigError, KpiSample, ResidualDetector, parse_config
from fedge.edge_agent._anomaly import ESCALATED, OPEN, RESOLVED, Alert, relative_residual

FORECAST = (50.0, 100.0, 20.0)
CFG = AnomalyConfig(window=50, min_history=10, z_warning=4, z_critical=8, persistence=2, cooldown=3)


def primed(cfg: AnomalyConfig = CFG) -> tuple[ResidualDetector, list[int]]:
    det = ResidualDetector(cfg)
    for step in range(30):  # median 0, MAD 0.1: z = residual / 0.148
        assert det.score(sample(step), np.full(3, (step % 3 - 1) * 0.1), FORECAST) is None
    return det, [30]


def sample(step: int) -> KpiSample:
    return KpiSample("c", float(step * 300), step, (50.0, None, 100.0, 20.0, 30.0))


def feed(
    det: ResidualDetector, clock: list[int], *residuals: float, kpi: int = 2
) -> list[Alert | None]:
    """One step per value: that residual on one KPI (active UEs), the others quiet."""
    out = []
    for r in residuals:
        row = np.zeros(3)
        row[kpi] = r
        out.append(det.score(sample(clock[0]), row, FORECAST))
        clock[0] += 1
    return out


def test_one_deviating_step_is_not_an_alert_two_in_a_row_open_a_warning() -> None:
    det, clock = primed()
    assert feed(det, clock, 0.9, 0.0) == [None, None]  # z ~ 6.1: alone, no alert
    assert det.episode("c") is None
    first, second = feed(det, clock, 0.9, 0.9)
    assert first is None and second is not None
    assert (second.state, second.severity, second.step) == (OPEN, "warning", clock[0] - 1)
    assert second.since_ts == (clock[0] - 2) * 300.0  # the episode began a step earlier
    assert [k.name for k in second.kpis] == ["active_ues"]
    assert second.kpis[0].actual == 20.0 and second.kpis[0].forecast == 20.0
    assert det.episode("c") is not None


def test_a_critical_step_opens_at_once_and_one_episode_gives_one_alert() -> None:
    det, clock = primed()
    alerts = feed(det, clock, 3.0, 3.0, 0.0, 3.0, 0.0, 0.0)  # a gap shorter than cooldown
    opened = [a for a in alerts if a is not None]
    assert len(opened) == 1 and opened[0].state == OPEN and opened[0].severity == "critical"
    assert det.episode("c") is not None


def test_the_episode_resolves_after_cooldown_quiet_steps_with_its_peak() -> None:
    det, clock = primed()
    start = clock[0]
    alerts = feed(det, clock, 0.9, 0.9, 1.0, 0.0, 0.0, 0.0)
    assert [a.state if a else None for a in alerts] == [None, OPEN, None, None, None, RESOLVED]
    done = alerts[-1]
    assert done is not None and det.episode("c") is None
    assert done.since_ts == start * 300.0 and done.until_ts == (start + 2) * 300.0
    assert done.severity == "warning" and done.kpis[0].z == pytest.approx(1.0 / 0.14826, rel=0.05)
    assert feed(det, clock, 0.9, 0.9)[-1] is not None  # a new episode opens afresh


def test_a_warning_episode_escalates_once() -> None:
    det, clock = primed()
    alerts = feed(det, clock, 0.9, 0.9, 2.0, 3.0, 0.0, 0.0, 0.0)
    states = [(a.state, a.severity) if a else None for a in alerts]
    assert states == [
        None,
        (OPEN, "warning"),
        (ESCALATED, "critical"),
        None,
        None,
        None,
        (RESOLVED, "critical"),
    ]


def test_persistence_one_and_min_kpis() -> None:
    det, clock = primed(AnomalyConfig(window=50, min_history=10, z_warning=4, persistence=1))
    assert feed(det, clock, 0.9)[0] is not None
    det, clock = primed(AnomalyConfig(window=50, min_history=10, z_warning=4, min_kpis=2))
    assert feed(det, clock, 0.9, 0.9, 3.0) == [None, None, None]  # one KPI is not enough
    both = det.score(sample(clock[0]), np.array([2.0, 0.0, 2.0]), FORECAST)
    assert both is not None and {k.name for k in both.kpis} == {
        "dl_prb_util",
        "active_ues",
        "dl_throughput_per_prb",  # PRBs tripled, throughput did not: efficiency fell
    }


def test_throughput_per_prb_is_watched_as_its_own_channel() -> None:
    """A degradation: throughput -30 % while PRB use rises 15 %. Neither KPI alone is far
    out (z about -3 and 1.5); throughput per PRB, which load noise moves much less, is."""
    det = ResidualDetector(AnomalyConfig(window=50, min_history=10, z_warning=5, z_critical=99))
    rng = np.random.default_rng(1)
    for step in range(30):  # load noise moves both KPIs together; a little of their own
        load, own = rng.normal(0, 0.1), rng.normal(0, 0.02)
        assert det.score(sample(step), np.array([load, load + own, load]), FORECAST) is None
    steps = [det.score(sample(30 + i), np.array([0.15, -0.3, 0.0]), FORECAST) for i in (0, 1)]
    alert = steps[1]
    assert steps[0] is None and alert is not None  # two steps: persistence
    assert [k.name for k in alert.kpis] == ["dl_throughput_per_prb"]
    eff = alert.kpis[0]
    assert eff.actual == 100.0 / 50.0 and eff.forecast == 100.0 / 50.0 and eff.z < -3


def test_cells_have_their_own_episodes() -> None:
    det, clock = primed()
    feed(det, clock, 3.0)
    assert det.episode("c") is not None and det.episode("other") is None


def test_the_residual_is_relative_to_the_forecast_with_a_floor() -> None:
    r = relative_residual(
        np.array([0.0, 110.0, 1.0]), np.array([50.0, 100.0, 0.0]), np.array([10.0] * 3), 0.1
    )
    np.testing.assert_allclose(r, [-50 / 51, 10 / 101, 1.0])
    # the same 10% excess is the same residual at any level of load
    busy = relative_residual(np.array([330.0]), np.array([300.0]), np.array([1.0]), 0.0)
    quiet = relative_residual(np.array([11.0]), np.array([10.0]), np.array([1.0]), 0.0)
    np.testing.assert_allclose(busy, quiet)


def config(**anomaly: Any) -> dict[str, Any]:
    return {
        "agent": {"site": "s1"},
        "store": {"path": "a.db"},
        "model": {"dir": "m"},
        "anomaly": anomaly,
    }


def test_the_new_settings_parse(tmp_path: Path) -> None:
    cfg = parse_config(config(persistence=3, cooldown=6, level_floor=0.5), tmp_path).anomaly
    assert (cfg.persistence, cfg.cooldown, cfg.level_floor) == (3, 6, 0.5)
    default = parse_config(config(), tmp_path).anomaly
    assert default == AnomalyConfig()


@pytest.mark.parametrize(
    ("anomaly", "message"),
    [
        ({"persistence": 0}, "anomaly.persistence: must be > 0"),
        ({"persistence": 289}, "anomaly.persistence: at most 288"),
        ({"persistence": 1.5}, "anomaly.persistence: expected int"),
        ({"cooldown": 0}, "anomaly.cooldown: must be > 0"),
        ({"cooldown": 1000}, "anomaly.cooldown: at most 288"),
        ({"level_floor": 0.0}, "anomaly.level_floor: must be > 0"),
        ({"level_floor": "x"}, "anomaly.level_floor: expected float"),
        ({"level_floor": math.inf}, "anomaly.level_floor: must be finite"),
        ({"z_warning": math.nan}, "anomaly.z_warning: must be > 0"),
        ({"z_critical": math.inf}, "anomaly.z_critical: must be finite"),
        ({"cool_down": 3}, "anomaly.cool_down: unknown setting"),
    ],
)
def test_bad_anomaly_settings_are_refused(
    anomaly: dict[str, Any], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config(**anomaly), tmp_path)
    assert message in str(info.value)


def test_the_agent_publishes_episode_states_and_counts_opened_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedge.edge_agent import Agent, load_config
    from tests.edge_agent.conftest import write_config

    agent = Agent(load_config(write_config(tmp_path, "mqtt://127.0.0.1:1")))
    sent: list[tuple[str, bytes]] = []
    monkeypatch.setattr(
        agent.link, "publish", lambda topic, body, *a, **k: sent.append((topic, body))
    )
    try:
        det, clock = primed()
        alerts = [a for a in feed(det, clock, 0.9, 0.9, 2.0, 0.0, 0.0, 0.0) if a is not None]
        agent._publish([], alerts, [])
    finally:
        agent.store.close()
    bodies = [json.loads(body) for topic, body in sent if topic == agent.config.topic("alert")]
    assert [(b["state"], b["severity"]) for b in bodies] == [
        (OPEN, "warning"),
        (ESCALATED, "critical"),
        (RESOLVED, "critical"),
    ]
    assert bodies[0]["since"] == bodies[2]["since"] and bodies[0]["until"] is None
    assert bodies[2]["until"] == bodies[1]["ts"]
    assert agent.alert_counts == {"warning": 1, "critical": 1}  # the resolution is no alert
    total = {
        s.labels["severity"]: s.value
        for m in agent.metrics.registry.collect()
        if m.name == "fedge_agent_alerts"
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert total == {"warning": 1.0, "critical": 1.0}
