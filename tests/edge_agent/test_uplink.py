"""The uplink against a real coordinator process and a real broker: forecasts and actuals
made while the coordinator is down reach it exactly once when it comes back."""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedge.core import CoordinatorClient
from fedge.edge_agent import Agent, AgentError, load_config
from fedge.edge_agent._site_cli import enroll_site
from fedge.edge_agent._store import ForecastRow, Store
from fedge.edge_agent._uplink import Uplink, describe_link
from fedge.security import SiteIdentity
from tests.edge_agent.conftest import (
    STEP,
    Client,
    Models,
    Mosquitto,
    RunningAgent,
    now_step,
    seed_history,
    site_values,
    write_config,
)
from tests.support.ports import free_port, service, wait_for_port

FEDGE = str(Path(sys.executable).with_name("fedge"))
KEK = b"uplink-test-kek"


class CoordinatorProcess:
    """``fedge coordinator serve`` on a fixed free port, started and stopped at will; its
    SQLite database outlives each run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.runs = 0
        self.env = {
            **os.environ,
            "FLWR_TELEMETRY_ENABLED": "0",
            "RAY_USAGE_STATS_ENABLED": "0",
            "FEDGE_COORDINATOR_DATABASE_URL": f"sqlite:///{root / 'c.db'}",
            "FEDGE_COORDINATOR_MODEL_STORE": str(root / "models"),
            "FEDGE_COORDINATOR_IDENTITY_FILE": str(root / "coordinator.key"),
            "XDG_STATE_HOME": str(root / "state"),
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextmanager
    def running(self) -> Iterator[None]:
        self.runs += 1
        cmd = [FEDGE, "coordinator", "serve", "--port", str(self.port)]
        with service(cmd, self.root / f"coordinator-{self.runs}.log", self.env):
            wait_for_port(self.port, timeout=90)
            yield

    def admin(self) -> CoordinatorClient:
        from fedge.coordinator import DEV_ADMIN_KEY

        return CoordinatorClient(self.url, api_key=DEV_ADMIN_KEY)

    def viewer(self) -> CoordinatorClient:
        key = self.admin().post_json("/api/v1/keys", {"name": "viewer", "role": "viewer"})
        return CoordinatorClient(self.url, api_key=key["key"])

    def token(self) -> str:
        token: str = self.admin().post_json("/api/v1/enrollment/tokens", {})["token"]
        return token

    def actuals(self, site_id: str) -> list[tuple[str, int]]:
        """The actuals the coordinator stored (no API lists them): read from its database."""
        with sqlite3.connect(self.root / "c.db") as db:
            rows = db.execute(
                "SELECT cell, step FROM actuals WHERE site_id=? ORDER BY cell, step", (site_id,)
            ).fetchall()
        return [(str(c), int(s)) for c, s in rows]


@dataclass
class Site:
    config: Path
    site_id: str
    store: Path


def make_site(
    tmp: Path, broker_url: str, coordinator: CoordinatorProcess, models: Models, **link: Any
) -> Site:
    """An enrolled site (the coordinator must be running) with history to forecast from."""
    from fedge.security import SiteIdentity, save_identity

    tmp.mkdir(parents=True, exist_ok=True)
    kek = tmp / "kek"
    kek.write_bytes(KEK)
    kek.chmod(0o600)
    save_identity(tmp / "site.key", SiteIdentity.generate(), KEK, log2_n=10)
    config = write_config(
        tmp,
        broker_url,
        model={"initial": str(models.good)},
        security={
            "key_file": str(tmp / "site.key"),
            "kek_file": str(kek),
            "coordinator_keys": str(tmp / "coordinator.pub"),
        },
        coordinator={"url": coordinator.url, "timeout_s": 5.0, **link},
    )
    enrolled = enroll_site(coordinator.url, coordinator.token(), config)
    return Site(config, enrolled.site_id, tmp / "agent.db")


def wait_until(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def feed(client: Client, cells: list[str], values: np.ndarray, first: int) -> int:
    """Publish ``values`` as each cell's KPIs from step ``first``; the messages sent."""
    for i, row in enumerate(values):
        for cell in cells:
            client.kpi(cell, float((first + i) * STEP), row)
    return len(values) * len(cells)


@contextmanager
def site_client(broker: Mosquitto, site: Site) -> Iterator[Client]:
    """The RAN side of the enrolled site: its topics carry the site id."""
    client = Client(broker.port, site=site.site_id)
    try:
        yield client
    finally:
        client.close()


def uplink_of(agent: Agent) -> Uplink:
    assert agent.uplink is not None
    return agent.uplink


@pytest.mark.slow
def test_what_is_made_while_the_coordinator_is_down_arrives_exactly_once(
    tmp_path: Path, broker: Mosquitto, tiny_models: Models
) -> None:
    coordinator = CoordinatorProcess(tmp_path / "coordinator")
    coordinator.root.mkdir()
    with coordinator.running():
        site = make_site(
            tmp_path / "site", broker.url, coordinator, tiny_models,
            upload_interval_s=0.1, health_interval_s=0.5, model_poll_s=60, batch_max=7,
        )  # fmt: skip
        viewer = coordinator.viewer()
    cells = ["a", "b"]
    values, _ = site_values(days=3)
    live = 12
    last = now_step() - live - 2
    seed_history(site.store, cells, values[: -live - 1], last)
    running = RunningAgent(site.config)
    uplink = uplink_of(running.agent)
    uplink.backoff_max_s = 1.0  # the coordinator comes back in seconds, not minutes
    with site_client(broker, site) as client, running as agent:
        feed(client, cells, values[-live:], last + 1)
        forecasts = client.collect("forecast", live * len(cells))
        assert {f["cell"] for f in forecasts} == set(cells)
        made = agent.store.outbox_counts()[0]
        assert made == 2 * live * len(cells)  # one forecast (horizon 1) and one actual each
        wait_until("the backlog is counted", lambda: uplink.state()["backlog"] == made)
        state = uplink.state()
        assert state["last_success"] is None and "unreachable" in str(state["last_error"])
        with coordinator.running():
            wait_until("the backlog drains", lambda: uplink.state()["backlog"] == 0)
            stored = viewer.get_json(f"/api/v1/forecasts?site_id={site.site_id}&limit=5000")
            health = uplink.health_report()
            wait_until("a health report is sent", lambda: _sent(agent, "health") >= 1)
            ok, shown = agent.health()  # the agent's /healthz
            checked = describe_link(load_config(site.config))  # `fedge agent check`
        metrics = agent.metrics.render().decode()
    keys = sorted((f["cell"], f["step"], f["made_step"]) for f in stored)
    expected = sorted(
        (cell, step + 1, step) for cell in cells for step in range(last + 1, last + live + 1)
    )
    assert keys == expected  # every forecast, each once
    assert {f["model_version"] for f in stored} == {agent.version}
    assert coordinator.actuals(site.site_id) == sorted(
        (cell, step) for cell in cells for step in range(last + 1, last + live + 1)
    )
    assert 'fedge_agent_uplink_rows_total{kind="forecast",outcome="sent"} 24.0' in metrics
    assert 'fedge_agent_uplink_rows_total{kind="actual",outcome="sent"} 24.0' in metrics
    assert health["backlog"] == 0 and health["supernode"] == "absent"
    link = shown["uplink"]
    assert ok and isinstance(link, dict) and link["backlog"] == 0 and link["refused"] == 0
    assert isinstance(link["last_success"], float)
    assert checked.startswith(f"{coordinator.url} (key matches), backlog 0, refused 0")
    errors = health["errors"]
    assert isinstance(errors, list) and {e["cell"] for e in errors} == set(cells)
    assert {e["horizon_steps"] for e in errors} == {1}
    assert all(e["count"] == live - 1 for e in errors)  # the first live step had no forecast


def _counted(agent: Agent, kind: str, outcome: str) -> float:
    """Outbox rows of ``kind`` the uplink counted as ``outcome`` (sent, refused)."""
    for metric in agent.metrics.uplink_rows.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels == {
                "kind": kind,
                "outcome": outcome,
            }:
                return sample.value
    return 0.0


def _sent_rows(agent: Agent, count: int) -> bool:
    return _counted(agent, "forecast", "sent") == count


def _sent(agent: Agent, call: str) -> float:
    """Requests of ``call`` the coordinator answered with a 2xx."""
    total = 0.0
    for metric in agent.metrics.uplink_requests.collect():
        for sample in metric.samples:
            labels = sample.labels
            if (
                sample.name.endswith("_total")
                and labels["call"] == call
                and labels["outcome"].startswith("2")
            ):
                total += sample.value
    return total


@pytest.mark.slow
def test_a_batch_the_coordinator_refuses_is_kept_and_the_queue_drains(
    tmp_path: Path, broker: Mosquitto, tiny_models: Models
) -> None:
    """A 422 for one batch (a model that forecast NaN): its rows are marked refused and
    counted, kept in the store, and the rows after them still go."""
    coordinator = CoordinatorProcess(tmp_path / "coordinator")
    coordinator.root.mkdir()
    with coordinator.running():
        site = make_site(
            tmp_path / "site", broker.url, coordinator, tiny_models,
            upload_interval_s=0.1, model_poll_s=60,
        )  # fmt: skip
        viewer = coordinator.viewer()
        values, _ = site_values(days=3)
        last = now_step() - 10
        seed_history(site.store, ["good"], values[:-6], last)
        store = Store(site.store, step_seconds=STEP, outbox=True)
        nan = float("nan")
        bad = [
            ForecastRow("good", last - 1 + h, last - 1, "broken", (nan, 1.0, 1.0)) for h in (1, 2)
        ]
        store.commit_batch([], bad, time.time())
        store.close()
        with site_client(broker, site) as client, RunningAgent(site.config) as agent:
            uplink = uplink_of(agent)
            wait_until("the bad batch is refused", lambda: uplink.state()["refused"] == 2)
            for i, row in enumerate(values[-5:-3]):
                client.kpi("good", float((last + 1 + i) * STEP), row)
            client.collect("forecast", 2)
            wait_until("the good rows go", lambda: _counted(agent, "forecast", "sent") == 2)
            wait_until("the backlog is counted", lambda: uplink.state()["backlog"] == 0)
            assert uplink.state()["refused"] == 2
            assert agent.store.outbox_counts() == (0, 2)
            assert len(agent.store.forecasts_for("good", last - 1)) == 2  # kept
            metrics = agent.metrics.render().decode()
        stored = viewer.get_json(f"/api/v1/forecasts?site_id={site.site_id}")
        assert "refused 2" in describe_link(load_config(site.config))
        keys = tmp_path / "site" / "coordinator.pub"
        keys.write_bytes(SiteIdentity.generate().public_keys().to_bytes())
        with pytest.raises(AgentError, match="presents another key than the one stored"):
            describe_link(load_config(site.config))
    assert 'fedge_agent_uplink_rows_total{kind="forecast",outcome="refused"} 2.0' in metrics
    assert sorted((f["cell"], f["made_step"]) for f in stored) == [
        ("good", last + 1),
        ("good", last + 2),
    ]


@pytest.mark.slow
def test_the_broker_thread_never_waits_on_the_link(
    tmp_path: Path, broker: Mosquitto, tiny_models: Models
) -> None:
    """A coordinator that accepts connections but never answers: KPIs are still stored and
    forecast while the first upload hangs (its timeout is far away)."""
    import socket

    coordinator = CoordinatorProcess(tmp_path / "coordinator")
    coordinator.root.mkdir()
    with coordinator.running():
        site = make_site(
            tmp_path / "site", broker.url, coordinator, tiny_models,
            upload_interval_s=0.1, model_poll_s=60, timeout_s=30.0,
        )  # fmt: skip
    silent = socket.socket()
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    silent.bind(("127.0.0.1", coordinator.port))
    silent.listen(16)
    silent.settimeout(60)
    try:
        values, _ = site_values(days=3)
        last = now_step() - 10
        seed_history(site.store, ["a"], values[:-6], last)
        with site_client(broker, site) as client, RunningAgent(site.config) as agent:
            uplink = uplink_of(agent)
            hanging, _ = silent.accept()  # a first request: never read, never answered
            for i, row in enumerate(values[-5:-1]):
                client.kpi("a", float((last + 1 + i) * STEP), row)
            client.collect("forecast", 4)
            assert agent.store.sample("a", last + 4) is not None
            state = uplink.state()  # that request has not even timed out yet
            assert state["last_success"] is None and state["last_error"] is None
            hanging.close()  # the request fails at once: the agent stops without waiting
    finally:
        silent.close()


@pytest.mark.slow
def test_after_a_key_rotation_the_uplink_signs_with_the_new_key(
    tmp_path: Path, broker: Mosquitto, tiny_models: Models
) -> None:
    """``fedge site rotate`` while the agent runs: the uplink (and the action poller, which
    shares its client) sign with the new key before the old one's grace ends."""
    from fedge.edge_agent._site_cli import rotate_site

    coordinator = CoordinatorProcess(tmp_path / "coordinator")
    coordinator.root.mkdir()
    with coordinator.running():
        site = make_site(
            tmp_path / "site", broker.url, coordinator, tiny_models,
            upload_interval_s=0.1, model_poll_s=0.3,
        )  # fmt: skip
        values, _ = site_values(days=3)
        last = now_step() - 10
        seed_history(site.store, ["a"], values[:-6], last)
        with site_client(broker, site) as client, RunningAgent(site.config) as agent:
            uplink = uplink_of(agent)
            assert uplink.client is not None
            client.kpi("a", float((last + 1) * STEP), values[-5])
            wait_until("a first upload", lambda: _counted(agent, "forecast", "sent") == 1)
            rotate_site(site.config, coordinator.url)
            client.kpi("a", float((last + 2) * STEP), values[-4])
            wait_until(
                "an upload after the rotation", lambda: _counted(agent, "forecast", "sent") == 2
            )
            link = uplink.client
            wait_until("the new key signs", lambda: getattr(link.signer, "generation", 0) == 1)
            client.kpi("a", float((last + 3) * STEP), values[-3])
            wait_until("an upload signed with it", lambda: _counted(agent, "forecast", "sent") == 3)
    assert uplink.state()["last_error"] is None


@pytest.mark.slow
def test_a_new_forecast_is_sent_without_waiting_for_the_sweep(
    tmp_path: Path, broker: Mosquitto, tiny_models: Models
) -> None:
    """The broker thread announces the rows it stored: each forecast goes within the
    batching window, although the outbox sweep would not come for an hour."""
    coordinator = CoordinatorProcess(tmp_path / "coordinator")
    coordinator.root.mkdir()
    with coordinator.running():
        site = make_site(tmp_path / "site", broker.url, coordinator, tiny_models, model_poll_s=60)
        viewer = coordinator.viewer()
        values, _ = site_values(days=3)
        last = now_step() - 10
        seed_history(site.store, ["a"], values[:-6], last)
        running = RunningAgent(site.config)
        uplink = uplink_of(running.agent)
        assert uplink.link is not None and uplink.link.upload_interval_s == 0.2
        uplink.sweep_s = 3600.0
        with site_client(broker, site) as client, running as agent:
            wait_until("the link is up", lambda: uplink.state()["last_success"] is not None)
            for sent in (1, 2):
                client.kpi("a", float((last + sent) * STEP), values[-6 + sent])
                wait_until(f"forecast {sent} is sent", partial(_sent_rows, agent, sent))
        stored = viewer.get_json(f"/api/v1/forecasts?site_id={site.site_id}")
    assert sorted(f["made_step"] for f in stored) == [last + 1, last + 2]
