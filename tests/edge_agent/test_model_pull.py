"""Model rollout to a real agent from a real coordinator: the version promoted there is
pulled, judged by the shadow gate on the uplink's thread (never the broker's), served,
and its verdict posted; a version already judged is not pulled again."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import pytest

from fedge.edge_agent import Agent
from tests.edge_agent.conftest import (
    STEP,
    Client,
    Models,
    Mosquitto,
    RunningAgent,
    now_step,
    seed_history,
    write_config,
)
from tests.edge_agent.conftest import site_values as values_of
from tests.edge_agent.test_uplink import (
    CoordinatorProcess,
    make_site,
    site_client,
    uplink_of,
    wait_until,
)


def _requests(agent: Agent, call: str, outcome: str) -> float:
    for metric in agent.metrics.uplink_requests.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels == {
                "call": call,
                "outcome": outcome,
            }:
                return sample.value
    return 0.0


def _polls(agent: Agent) -> float:
    """Model polls the coordinator answered (a bundle, 304 or 404)."""
    return sum(_requests(agent, "model", outcome) for outcome in ("200", "304", "404"))


def _promote(coordinator: CoordinatorProcess, onnx: bytes) -> str:
    admin = coordinator.admin()
    body = {"onnx_base64": base64.b64encode(onnx).decode(), "note": "candidate"}
    model_id = admin.post_json("/api/v1/models", body)["id"]
    admin.post_json(f"/api/v1/models/{model_id}/promote", {})
    return f"v{model_id}"


def _site_row(coordinator: CoordinatorProcess, version: str, site_id: str) -> dict[str, Any]:
    viewer = coordinator.admin()
    rollout = next(r for r in viewer.get_json("/api/v1/rollouts") if r["version"] == version)
    detail = viewer.get_json(f"/api/v1/rollouts/{rollout['id']}")
    row: dict[str, Any] = next(s for s in detail["sites"] if s["site_id"] == site_id)
    return row


@pytest.mark.slow
def test_a_promoted_model_is_pulled_judged_off_the_broker_thread_served_and_reported(
    tmp_path: Path, broker: Mosquitto, tiny_models: Models, caplog: pytest.LogCaptureFixture
) -> None:
    coordinator = CoordinatorProcess(tmp_path / "coordinator")
    coordinator.root.mkdir()
    values, _ = values_of(days=4)
    with coordinator.running():
        site = make_site(
            tmp_path / "site", broker.url, coordinator, tiny_models,
            model_poll_s=0.3, upload_interval_s=0.3,
        )  # fmt: skip
        last = now_step() - 10
        seed_history(site.store, ["a", "b"], values[:-6], last)
        caplog.set_level(logging.WARNING, logger="fedge.agent.uplink")
        with site_client(broker, site) as client, RunningAgent(site.config) as agent:
            initial = agent.version
            assert initial is not None and initial.startswith("initial-")
            wait_until(
                "a first model poll is answered", lambda: _requests(agent, "model", "404") >= 1
            )
            version = _promote(coordinator, tiny_models.good.read_bytes())
            verdict = client.get("verdict", timeout=60)
            assert verdict["version"] == version and verdict["accepted"] is True, verdict
            assert agent.version == version
            assert agent.store.serving() is not None
            wait_until(
                "the verdict reaches the coordinator",
                lambda: _site_row(coordinator, version, site.site_id)["verdict"] is not None,
            )
            row = _site_row(coordinator, version, site.site_id)
            wait_until("the next poll is a 304", lambda: _requests(agent, "model", "304") >= 1)
            client.kpi("a", float((last + 1) * STEP), values[-5])
            forecast = client.get("forecast")
            metrics = agent.metrics.render().decode()
            assert uplink_of(agent).state()["backlog"] is not None
    assert row["verdict"] == "accepted" and row["windows"] == verdict["windows"] > 0
    assert row["candidate_score"] == pytest.approx(verdict["candidate_score"])
    assert forecast["model_version"] == version
    assert 'fedge_agent_model_verdicts_total{outcome="accepted"} 1.0' in metrics
    judged = [r for r in caplog.records if r.getMessage().startswith(f"model {version} accepted")]
    assert [r.threadName for r in judged] == ["fedge-uplink"]


@pytest.mark.slow
def test_a_rejected_version_is_reported_once_and_the_serving_model_stays(
    tmp_path: Path, broker: Mosquitto, tiny_models: Models
) -> None:
    coordinator = CoordinatorProcess(tmp_path / "coordinator")
    coordinator.root.mkdir()
    values, _ = values_of(days=4)
    with coordinator.running():
        site = make_site(
            tmp_path / "site", broker.url, coordinator, tiny_models,
            model_poll_s=0.3, upload_interval_s=0.3,
        )  # fmt: skip
        seed_history(site.store, ["a", "b"], values[:-6], now_step() - 10)
        with site_client(broker, site) as client, RunningAgent(site.config) as agent:
            initial = agent.version
            version = _promote(coordinator, tiny_models.bad.read_bytes())
            verdict = client.get("verdict", timeout=60)
            assert verdict["version"] == version and verdict["accepted"] is False
            assert "worse than serving" in verdict["reason"]
            wait_until(
                "the verdict reaches the coordinator",
                lambda: _site_row(coordinator, version, site.site_id)["verdict"] is not None,
            )
            polls = _polls(agent)
            wait_until("three more polls", lambda: _polls(agent) >= polls + 3)
            assert agent.version == initial
            rejected = agent.metrics.render().decode()
    assert 'fedge_agent_model_verdicts_total{outcome="rejected"} 1.0' in rejected


def test_a_model_from_the_broker_is_judged_on_the_uplink_thread(
    tmp_path: Path,
    broker: Mosquitto,
    client: Client,
    tiny_models: Models,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without a coordinator link too: the broker thread only hands the sealed model over;
    the verdict is published and the KPIs around it are stored and forecast."""
    from fedge.core import ModelBundle
    from fedge.security import ContentType, OneShotSealer, SiteIdentity, save_identity

    site, coordinator = SiteIdentity.generate(), SiteIdentity.generate()
    save_identity(tmp_path / "site.key", site, b"site-kek-bytes", log2_n=10)
    kek = tmp_path / "kek"
    kek.write_bytes(b"site-kek-bytes")
    kek.chmod(0o600)
    (tmp_path / "coordinator.pub").write_bytes(coordinator.public_keys().to_bytes())
    values, _ = values_of(days=4)
    last = now_step() - 10
    seed_history(tmp_path / "agent.db", ["a"], values[:-6], last)
    config = write_config(
        tmp_path,
        broker.url,
        model={"initial": str(tiny_models.good)},
        security={
            "key_file": str(tmp_path / "site.key"),
            "kek_file": str(kek),
            "coordinator_keys": str(tmp_path / "coordinator.pub"),
        },
    )
    bundle = ModelBundle("v7", tiny_models.good.read_bytes()).encode()
    envelope = OneShotSealer(coordinator).seal(site.public_keys(), bundle, ContentType.GLOBAL_MODEL)
    caplog.set_level(logging.WARNING, logger="fedge.agent.uplink")
    with RunningAgent(config) as agent:
        assert agent.uplink is not None and agent.uplink.client is None
        client.kpi("a", float((last + 1) * STEP), values[-5])
        client.publish("model", envelope)
        client.kpi("a", float((last + 2) * STEP), values[-4])
        verdict = client.get("verdict")
        made = [client.get("forecast")["step_ts"] for _ in range(2)]
        served = agent.version
    assert verdict["version"] == "v7" and verdict["accepted"] is True, verdict
    assert served == "v7"
    assert made == [(last + 1) * STEP, (last + 2) * STEP]
    judged = [r for r in caplog.records if r.getMessage().startswith("model v7 accepted")]
    assert [r.threadName for r in judged] == ["fedge-uplink"]


def _tagged(onnx: bytes, tag: str) -> bytes:
    """The same graph and spec under other bytes (one more metadata entry): a new version
    that forecasts exactly as ``onnx`` does."""
    import onnx as onnx_lib

    model = onnx_lib.load_from_string(onnx)
    entry = model.metadata_props.add()
    entry.key, entry.value = "fedge.test_tag", tag
    tagged: bytes = model.SerializeToString()
    return tagged


@pytest.mark.slow
def test_a_fleet_rollback_serves_the_previous_version_again(
    tmp_path: Path, broker: Mosquitto, tiny_models: Models
) -> None:
    coordinator = CoordinatorProcess(tmp_path / "coordinator")
    coordinator.root.mkdir()
    values, _ = values_of(days=4)
    good = tiny_models.good.read_bytes()
    with coordinator.running():
        site = make_site(
            tmp_path / "site", broker.url, coordinator, tiny_models,
            model_poll_s=0.3, upload_interval_s=0.3,
        )  # fmt: skip
        seed_history(site.store, ["a", "b"], values[:-6], now_step() - 10)
        with site_client(broker, site) as client, RunningAgent(site.config) as agent:
            first = _promote(coordinator, _tagged(good, "first"))
            assert client.get("verdict", timeout=60)["accepted"] is True
            second = _promote(coordinator, _tagged(good, "second"))
            assert client.get("verdict", timeout=60)["accepted"] is True
            assert agent.version == second
            coordinator.admin().post_json("/api/v1/models/rollback", {})
            wait_until("the previous version serves again", lambda: agent.version == first)
            wait_until("the next poll is a 304", lambda: _requests(agent, "model", "304") >= 1)
            states = {m.version: m.state for m in agent.store.models()}
            verdicts = agent.metrics.render().decode()
    assert states[first] == "serving" and states[second] == "rolled_back"
    assert 'fedge_agent_model_verdicts_total{outcome="accepted"} 2.0' in verdicts
