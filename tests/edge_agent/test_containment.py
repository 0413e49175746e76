"""One message never stops the agent: hostile KPIs and sealed models that lie are
dead-lettered or rejected with a reason, acknowledged, counted, and the rest is served."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedge.core import ModelBundle
from fedge.edge_agent import Agent, Inbound, Store, load_config, parse_kpi
from fedge.edge_agent import _agent as agent_module
from fedge.models import ForecastSpec
from fedge.security import ContentType, OneShotSealer, SiteIdentity, save_identity
from tests.edge_agent.conftest import (
    STEP,
    Client,
    Models,
    Mosquitto,
    RunningAgent,
    kpi_payload,
    now_step,
    seed_history,
    site_values,
    write_config,
)
from tests.edge_agent.hostile import batch_of_one, spec_of, with_spec

KEK = b"test key-encryption key"


def counter(agent: Agent, name: str, label: str) -> dict[str, float]:
    return {
        s.labels[label]: s.value
        for m in agent.metrics.registry.collect()
        if m.name == name
        for s in m.samples
        if s.name.endswith("_total")
    }


def test_the_overflowing_and_the_deep_kpi_are_dead_lettered_and_acknowledged(
    tmp_path: Path, broker: Mosquitto, client: Client, tiny_models: Models
) -> None:
    """Unacknowledged, either would come back on every restart: the second run must see
    only what is published after the first one stopped."""
    values, _ = site_values()
    last = now_step() - 40
    seed_history(tmp_path / "agent.db", ["c"], values[:-5], last)
    cfg = write_config(tmp_path, broker.url, model={"initial": str(tiny_models.good)})
    overflow = b'{"v": 1, "cell": "c", "ts": 1' + b"0" * 400 + b', "kpis": {}}'
    deep = b'{"v": 1, "cell": "c", "ts": 1, "kpis": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    with RunningAgent(cfg):
        client.publish("kpi", overflow)
        client.publish("kpi", deep)
        client.kpi("c", (last + 1) * STEP, values[-5])
        letters = client.collect("deadletter", 2)
        assert client.get("forecast")["step_ts"] == (last + 1) * STEP
    assert [x["reason"] for x in letters] == ["out_of_range", "too_deep"]
    assert letters[0]["payload_bytes"] == 442
    with RunningAgent(cfg):
        client.kpi("c", (last + 2) * STEP, values[-4])
        assert client.get("forecast")["step_ts"] == (last + 2) * STEP
        assert client.queues["deadletter"].empty()  # the forecast came after any redelivery


def test_an_unexpected_failure_in_one_kpi_is_dead_lettered_and_the_others_stored(
    tmp_path: Path,
    broker: Mosquitto,
    client: Client,
    tiny_models: Models,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing(payload: bytes, **kwargs: float) -> object:
        if b'"boom"' in payload:
            raise RuntimeError("a bug in validation")
        return parse_kpi(payload, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(agent_module, "parse_kpi", failing)
    values, _ = site_values()
    last = now_step() - 40
    seed_history(tmp_path / "agent.db", ["c"], values[:-5], last)
    cfg = write_config(tmp_path, broker.url, model={"initial": str(tiny_models.good)})
    boom = json.dumps({"v": 1, "cell": "boom", "ts": 1, "kpis": {}}).encode()
    with RunningAgent(cfg) as agent:
        client.kpi("c", (last + 1) * STEP, values[-5])
        client.publish("kpi", boom)
        client.kpi("c", (last + 2) * STEP, values[-4])
        letter = client.get("deadletter")
        forecasts = client.collect("forecast", 2)
        errors = counter(agent, "fedge_agent_errors", "stage")
        rejected = counter(agent, "fedge_agent_messages_rejected", "reason")
    assert (
        letter["reason"] == "internal" and "RuntimeError: a bug in validation" in letter["detail"]
    )
    assert [f["step_ts"] for f in forecasts] == [(last + 1) * STEP, (last + 2) * STEP]
    assert errors == {"validate": 1.0} and rejected == {"internal": 1.0}
    store = Store(tmp_path / "agent.db")
    try:
        assert store.sample("c", last + 1) is not None and store.sample("c", last + 2) is not None
    finally:
        store.close()


def test_a_failing_forecast_costs_the_forecast_not_the_samples(
    tmp_path: Path, tiny_models: Models
) -> None:
    """A served model that fails on a batch of two cells: both samples are still stored."""
    spec = ForecastSpec.from_dict(spec_of(tiny_models.good.read_bytes()))
    one = tmp_path / "one.onnx"
    one.write_bytes(batch_of_one(spec))
    values, _ = site_values()
    last = now_step() - 40
    seed_history(tmp_path / "agent.db", ["a", "b"], values[:-5], last)
    cfg = load_config(write_config(tmp_path, "mqtt://127.0.0.1:1", model={"initial": str(one)}))
    agent = Agent(cfg)
    try:
        topic = cfg.topic("kpi")
        batch = [
            Inbound(topic, kpi_payload(cell, (last + 1) * STEP, values[-5]), i, 1, False, 0)
            for i, cell in enumerate(("a", "b"), start=1)
        ]
        agent.process(batch)
        assert counter(agent, "fedge_agent_errors", "stage") == {"forecast": 1.0}
        assert agent.store.sample("a", last + 1) is not None
        assert agent.store.sample("b", last + 1) is not None
        agent.process(  # alone, a cell still gets its forecast from the same model
            [Inbound(topic, kpi_payload("a", (last + 2) * STEP, values[-4]), 3, 1, False, 0)]
        )
        assert len(agent.store.forecasts_for("a", last + 2)) == 1
    finally:
        agent.store.close()


def test_a_failing_anomaly_score_costs_the_alert_not_the_sample(
    tmp_path: Path, tiny_models: Models, monkeypatch: pytest.MonkeyPatch
) -> None:
    values, _ = site_values()
    last = now_step() - 40
    seed_history(tmp_path / "agent.db", ["a"], values[:-5], last)
    cfg = load_config(
        write_config(tmp_path, "mqtt://127.0.0.1:1", model={"initial": str(tiny_models.good)})
    )
    agent = Agent(cfg)
    try:

        def broken(*args: object) -> None:
            raise FloatingPointError("a bug in scoring")

        monkeypatch.setattr(agent.engine.detector, "score", broken)
        topic = cfg.topic("kpi")
        for step, mid in ((last + 1, 1), (last + 2, 2)):
            payload = kpi_payload("a", step * STEP, values[step - last - 6])
            agent.process([Inbound(topic, payload, mid, 1, False, 0)])
        assert counter(agent, "fedge_agent_errors", "stage") == {"observe": 1.0}
        assert agent.store.sample("a", last + 2) is not None
        assert len(agent.store.forecasts_for("a", last + 2)) == 1
    finally:
        agent.store.close()


def test_a_sealed_model_whose_spec_lies_is_rejected_acknowledged_and_not_redelivered(
    tmp_path: Path, broker: Mosquitto, client: Client, tiny_models: Models
) -> None:
    site, coordinator = SiteIdentity.generate(), SiteIdentity.generate()
    save_identity(tmp_path / "site.key", site, KEK, log2_n=10)
    kek = tmp_path / "kek"
    kek.write_bytes(KEK)
    kek.chmod(0o600)
    (tmp_path / "coordinator.pub").write_bytes(coordinator.public_keys().to_bytes())
    values, _ = site_values(days=4)
    last = now_step() - 40
    seed_history(tmp_path / "agent.db", ["a", "b"], values[:-30], last)
    cfg = write_config(
        tmp_path,
        broker.url,
        model={"initial": str(tiny_models.good)},
        security={
            "key_file": str(tmp_path / "site.key"),
            "kek_file": str(kek),
            "coordinator_keys": str(tmp_path / "coordinator.pub"),
        },
    )
    good = tiny_models.good.read_bytes()
    lying = with_spec(good, {**spec_of(good), "lookback": 24})

    def sealed(version: str, onnx: bytes) -> bytes:
        bundle = ModelBundle(version, onnx).encode()
        return OneShotSealer(coordinator).seal(site.public_keys(), bundle, ContentType.GLOBAL_MODEL)

    with RunningAgent(cfg) as agent:
        client.publish("model", sealed("v-lying", lying))
        verdict = client.get("verdict")
        client.kpi("a", (last + 1) * STEP, values[-30])
        assert client.get("forecast")["model_version"] == agent.version
        verdicts = counter(agent, "fedge_agent_model_verdicts", "outcome")
    assert verdict["version"] == "v-lying" and verdict["accepted"] is False
    assert "graph input axis 1 is 12, the forecast spec says 24" in verdict["reason"]
    assert verdicts == {"rejected": 1.0}
    with RunningAgent(cfg):
        client.publish("model", sealed("v-marker", with_spec(good, None)))
        after = client.get("verdict")  # a redelivered v-lying would come first
    assert after["version"] == "v-marker" and "no forecast spec metadata" in after["reason"]
    store = Store(tmp_path / "agent.db")
    try:
        record = store.model("v-lying")
        assert record is not None and record.state == "rejected"
    finally:
        store.close()


def test_an_unexpected_failure_judging_a_model_is_a_verdict(
    tmp_path: Path,
    broker: Mosquitto,
    client: Client,
    tiny_models: Models,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    site, coordinator = SiteIdentity.generate(), SiteIdentity.generate()
    save_identity(tmp_path / "site.key", site, KEK, log2_n=10)
    kek = tmp_path / "kek"
    kek.write_bytes(KEK)
    kek.chmod(0o600)
    (tmp_path / "coordinator.pub").write_bytes(coordinator.public_keys().to_bytes())
    cfg = write_config(
        tmp_path,
        broker.url,
        model={"initial": str(tiny_models.good)},
        security={
            "key_file": str(tmp_path / "site.key"),
            "kek_file": str(kek),
            "coordinator_keys": str(tmp_path / "coordinator.pub"),
        },
    )
    bundle = ModelBundle("v2", tiny_models.good.read_bytes()).encode()
    envelope = OneShotSealer(coordinator).seal(site.public_keys(), bundle, ContentType.GLOBAL_MODEL)
    with RunningAgent(cfg) as agent:

        def broken(*args: object) -> None:
            raise KeyError("a bug in the gate")

        monkeypatch.setattr(agent.models, "consider", broken)
        client.publish("model", envelope)
        verdict = client.get("verdict")
        errors = counter(agent, "fedge_agent_errors", "stage")
    assert verdict["accepted"] is False and "KeyError" in verdict["reason"]
    assert errors == {"model": 1.0}
