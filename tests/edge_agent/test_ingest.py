"""Through a real Mosquitto: KPIs in, forecasts out; every malformed class dead-lettered."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np

from fedge.edge_agent import Store
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
from tests.edge_agent.test_kpi import CASES, NOW
from tests.support.ports import free_port


def test_kpi_to_forecast_end_to_end_with_metrics_and_health(
    tmp_path: Path, broker: Mosquitto, client: Client, tiny_models: Models
) -> None:
    values, _ = site_values()
    last = now_step() - 40
    seed_history(tmp_path / "agent.db", ["cell-a"], values[:-20], last)
    port = free_port()
    cfg = write_config(
        tmp_path,
        broker.url,
        model={"initial": str(tiny_models.good)},
        metrics={"enabled": True, "port": port},
    )
    with RunningAgent(cfg) as agent:
        assert client.get("status")["state"] == "online"
        for i in range(10):
            client.kpi("cell-a", (last + 1 + i) * STEP + 7, values[-20 + i])
        forecasts = client.collect("forecast", 10)
        version = agent.version
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            health = json.loads(r.read())
    assert version is not None and version.startswith("initial-")
    for i, f in enumerate(forecasts):
        assert f["cell"] == "cell-a" and f["model_version"] == version
        assert f["step_ts"] == (last + 1 + i) * STEP
        (h1,) = f["forecast"]
        assert h1["ts"] == (last + 2 + i) * STEP
        assert set(h1) == {"ts", "dl_prb_util", "dl_throughput_mbps", "active_ues"}
        assert 0 <= h1["dl_prb_util"] <= 150 and np.isfinite(h1["active_ues"])
    assert 'fedge_agent_messages_in_total{kind="kpi"} 10.0' in metrics
    assert 'fedge_agent_messages_out_total{kind="forecast"} 10.0' in metrics
    assert f'fedge_agent_model_info{{version="{version}"}} 1.0' in metrics
    assert "fedge_agent_broker_connected 1.0" in metrics
    assert "fedge_agent_inference_seconds_count" in metrics
    assert health["status"] == "ok" and health["broker_connected"] is True
    assert client.get("status")["state"] == "offline"  # clean stop publishes the retained state
    store = Store(tmp_path / "agent.db")
    try:
        assert store.sample_count("cell-a") == len(values) - 20 + 10
        rows = store.forecasts_for("cell-a", last + 10)
        assert len(rows) == 1 and rows[0].model_version == version
    finally:
        store.close()


def test_every_malformed_class_is_dead_lettered_and_the_loop_survives(
    tmp_path: Path, broker: Mosquitto, client: Client, tiny_models: Models
) -> None:
    values, _ = site_values()
    last = now_step() - 40
    seed_history(tmp_path / "agent.db", ["c"], values[:-5], last)
    cfg = write_config(tmp_path, broker.url, model={"initial": str(tiny_models.good)})
    good = [kpi_payload("c", (last + k) * STEP, values[-5]) for k in (1, 2, 3)]
    bad: list[tuple[bytes, str]] = []
    for case, reason, _ in CASES:
        payload = case
        if isinstance(payload, dict) and payload.get("ts") == NOW - 5:  # the clock is real here
            payload = {**payload, "ts": (last + 2) * STEP}
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        if reason == "future_timestamp":
            raw = kpi_payload("c", (now_step() + 100) * STEP, values[0])
        bad.append((raw, str(reason)))
    nan = json.dumps(json.loads(good[0])).replace('"cpu_util": ', '"cpu_util": NaN, "x": ')
    bad.append((nan.encode(), "non_finite"))
    bad.append((kpi_payload("c", (last + 3) * STEP, values[-4]), "duplicate"))  # conflicting
    bad.append((kpi_payload("c", (last - 30) * STEP, values[-4]), "out_of_order"))
    with RunningAgent(cfg) as agent:
        for payload in good:
            client.publish("kpi", payload)
        client.collect("forecast", 3)
        for payload, _ in bad:
            client.publish("kpi", payload)
        letters = client.collect("deadletter", len(bad))
        client.kpi("c", (last + 4) * STEP, values[-4])  # still alive after all of that
        after = client.get("forecast")
        rejected = {
            s.labels["reason"]: s.value
            for m in agent.metrics.registry.collect()
            if m.name == "fedge_agent_messages_rejected"
            for s in m.samples
            if s.name.endswith("_total")
        }
    assert after["step_ts"] == (last + 4) * STEP
    want = Counter(reason for _, reason in bad)
    assert Counter(letter["reason"] for letter in letters) == want
    assert rejected == {k: float(v) for k, v in want.items()}
    for letter in letters:
        assert letter["topic"].endswith("/kpi") and letter["detail"]
        assert len(letter["payload"]) <= 256
    oversize = next(x for x in letters if x["reason"] == "oversize")
    assert oversize["truncated"] is True and oversize["payload_bytes"] == 5000


def test_mqtt_3_1_1_link_end_to_end(
    tmp_path: Path, broker: Mosquitto, client: Client, tiny_models: Models
) -> None:
    values, _ = site_values()
    last = now_step() - 40
    seed_history(tmp_path / "agent.db", ["c"], values[:-5], last)
    cfg = write_config(
        tmp_path, broker.url, broker={"protocol": "3.1.1"}, model={"initial": str(tiny_models.good)}
    )
    with RunningAgent(cfg) as agent:
        assert agent.link.protocol == "3.1.1"
        client.kpi("c", (last + 1) * STEP, values[-5])
        assert client.get("forecast")["step_ts"] == (last + 1) * STEP


def test_backoff_bounds_and_protocol_fallback_rule() -> None:
    import random

    from fedge.edge_agent import backoff_delay, falls_back

    rng = random.Random(0)
    for attempt in range(40):
        d = backoff_delay(attempt, 0.5, 30.0, rng)
        ceiling = min(30.0, 0.5 * 2**attempt)
        assert ceiling / 2 <= d <= ceiling
    assert falls_back("auto", 0x84) and falls_back("auto", 1)
    assert not falls_back("5", 0x84) and not falls_back("auto", 0x87)
