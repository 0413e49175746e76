"""Zero acknowledged loss: across a broker restart, and across kill -9 of the agent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedge.edge_agent import Store
from tests.edge_agent.conftest import (
    STEP,
    Client,
    Models,
    Mosquitto,
    RunningAgent,
    agent_env,
    kpi_payload,
    now_step,
    seed_history,
    site_values,
    write_config,
)

pytestmark = pytest.mark.slow


def wait_for(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def stored(db: Path) -> dict[tuple[str, int], tuple[float | None, ...]]:
    store = Store(db)
    try:
        out = {}
        for cell in store.cells():
            steps, values = store.history(cell, 0, 2**62)
            for s, v in zip(steps, values, strict=True):
                out[(cell, int(s))] = tuple(None if np.isnan(x) else float(x) for x in v)
        return out
    finally:
        store.close()


def plan(cells: int, steps: int, first: int) -> list[tuple[str, int, np.ndarray]]:
    values, _ = site_values(days=2)
    return [
        (f"cell-{c:03d}", first + k, values[(c * 7 + k) % len(values)])
        for k in range(steps)
        for c in range(cells)
    ]


def test_broker_restart_with_messages_published_while_the_agent_is_away(
    tmp_path: Path, broker: Mosquitto, tiny_models: Models
) -> None:
    values, _ = site_values()
    first = now_step() - 200
    cells = [f"cell-{c:03d}" for c in range(4)]
    seed_history(tmp_path / "agent.db", cells, values[:300], first - 1)
    cfg = write_config(
        tmp_path,
        broker.url,
        broker={"reconnect_min_s": 3.0, "reconnect_max_s": 6.0},
        model={"initial": str(tiny_models.good)},
    )
    before = plan(4, 5, first)
    after = plan(4, 50, first + 5)
    with RunningAgent(cfg) as agent:
        client = Client(broker.port)
        for cell, step, v in before:
            client.kpi(cell, step * STEP, v)
        client.collect("forecast", len(before))
        client.close()
        broker.stop()
        broker.start()  # same port; the persisted session keeps the agent's subscription
        client = Client(broker.port)
        for cell, step, v in after:
            client.kpi(cell, step * STEP, v)
        connects_while_publishing = agent.metrics.registry.get_sample_value(
            "fedge_agent_broker_connects_total"
        )
        forecasts = client.collect("forecast", len(after), timeout=120)
        client.close()
    assert connects_while_publishing == 1, "the agent reconnected before we published"
    assert agent.metrics.registry.get_sample_value("fedge_agent_broker_connects_total") == 2
    rows = stored(tmp_path / "agent.db")
    for cell, step, v in before + after:
        assert rows[(cell, step)] == tuple(float(x) for x in v)
    assert {(f["cell"], f["step_ts"] // STEP) for f in forecasts} == {(c, s) for c, s, _ in after}


def test_kill_9_and_restart_loses_nothing_acknowledged(
    tmp_path: Path, broker: Mosquitto, tiny_models: Models
) -> None:
    values, _ = site_values()
    first = now_step() - 200
    cells = [f"cell-{c:03d}" for c in range(30)]
    seed_history(tmp_path / "agent.db", cells, values[:100], first - 1)
    cfg = write_config(tmp_path, broker.url, model={"initial": str(tiny_models.good)})
    messages = plan(30, 80, first)  # enough that the kill lands mid-stream
    seeded = len(stored(tmp_path / "agent.db"))
    client = Client(broker.port)

    def start() -> subprocess.Popen[bytes]:
        log = (tmp_path / "agent.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "fedge", "agent", "run", "--config", str(cfg)],
            stdout=log, stderr=subprocess.STDOUT, env=agent_env(), start_new_session=True,
        )  # fmt: skip
        while True:
            status = client.get("status", timeout=60)
            if status["state"] == "online" and status["pid"] == proc.pid:
                return proc

    proc = start()
    try:
        infos = [
            client.client.publish(f"{client.base}/kpi", kpi_payload(c, s * STEP, v), qos=1)
            for c, s, v in messages
        ]
        wait_for(lambda: len(stored(tmp_path / "agent.db")) >= seeded + 150, 60, "some progress")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        for info in infos:
            info.wait_for_publish(timeout=30)  # every message is acknowledged by the broker
        killed_at = len(stored(tmp_path / "agent.db")) - seeded
        proc = start()
        wait_for(
            lambda: len(stored(tmp_path / "agent.db")) >= seeded + len(messages), 120, "all samples"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        client.close()
    assert killed_at < len(messages), "the kill came too late to test anything"
    rows = stored(tmp_path / "agent.db")
    assert len(rows) == seeded + len(messages)
    for cell, step, v in messages:
        assert rows[(cell, step)] == tuple(float(x) for x in v)
    log = (tmp_path / "agent.log").read_text()
    assert "Traceback" not in log


def test_a_store_failure_ends_the_run_and_the_kpi_is_not_acknowledged(
    tmp_path: Path, broker: Mosquitto, client: Client, tiny_models: Models
) -> None:
    """The agent's work runs on the broker link's thread: a store error there must still
    end ``run`` with the error, before the KPI is acknowledged (the broker redelivers)."""
    import sqlite3

    from fedge.edge_agent import StoreError

    values, _ = site_values()
    last = now_step() - 40
    db = tmp_path / "agent.db"
    seed_history(db, ["cell-a"], values[:-20], last)
    cfg = write_config(tmp_path, broker.url, model={"initial": str(tiny_models.good)})
    running = RunningAgent(cfg)
    agent = running.__enter__()
    with sqlite3.connect(db) as side:
        side.execute("ALTER TABLE samples RENAME TO samples_away")
    client.kpi("cell-a", (last + 1) * STEP, values[-20])
    running.thread.join(30)
    assert agent.link.finished and not running.thread.is_alive()
    with pytest.raises(StoreError, match="samples"):
        running.__exit__(None, None, None)
    with sqlite3.connect(db) as side:
        side.execute("ALTER TABLE samples_away RENAME TO samples")
    with RunningAgent(cfg):  # same client id and persistent session: redelivered
        forecast = client.get("forecast")
    assert forecast["step_ts"] == (last + 1) * STEP
    assert ("cell-a", last + 1) in stored(db)
