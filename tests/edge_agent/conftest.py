"""Real parts for the agent tests: a Mosquitto on a free loopback port, tiny trained ONNX
models (torch runs in the test process only), simulated history, an MQTT test client."""

from __future__ import annotations

import getpass
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fedge.edge_agent import Agent, KpiSample, Store, load_config
from tests.support.ports import free_port, wait_for_port

MOSQUITTO = Path("/usr/sbin/mosquitto")
STEP = 300
SITE = "gnb-test"


class Mosquitto:
    """One broker process with on-disk persistence, restartable on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"user {getpass.getuser()}\n"  # as root it would drop to 'mosquitto' and not persist
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 200000\n"
            "max_inflight_messages 0\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            f"log_dest file {workdir}/mosquitto.log\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(MOSQUITTO), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        wait_for_port(self.port, timeout=20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # saves the persistence file
            self.proc.wait(timeout=20)
        self.proc = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    if not MOSQUITTO.exists():
        pytest.skip("mosquitto is not installed (deploy/system-deps.sh installs it)")
    b = Mosquitto(tmp_path / "mosquitto")
    b.start()
    try:
        yield b
    finally:
        b.stop()


class Client:
    """A test-side MQTT client: publishes KPIs with QoS 1, collects what the agent sends."""

    def __init__(self, port: int, site: str = SITE, prefix: str = "fedge/v1") -> None:
        self.base = f"{prefix}/{site}"
        self.queues: dict[str, queue.Queue[dict[str, Any]]] = {}
        self.raw: dict[str, queue.Queue[bytes]] = {}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{free_port()}")
        self.client.on_message = self._on_message
        connected = threading.Event()
        self.client.on_connect = lambda *a: connected.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert connected.wait(20), "test client could not connect"
        for kind in ("forecast", "alert", "deadletter", "status", "verdict"):
            self.queues[kind] = queue.Queue()
            self.raw[kind] = queue.Queue()
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.subscribe(f"{self.base}/#", qos=1)
        assert subscribed.wait(20)

    def _on_message(self, c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        kind = msg.topic.rsplit("/", 1)[-1]
        if kind in self.queues:
            self.raw[kind].put(bytes(msg.payload))
            self.queues[kind].put(json.loads(msg.payload))

    def publish(self, kind: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(f"{self.base}/{kind}", payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=20)
        assert info.is_published()

    def kpi(self, cell: str, ts: float, values: Any) -> None:
        self.publish("kpi", kpi_payload(cell, ts, values))

    def get(self, kind: str, timeout: float = 30.0) -> dict[str, Any]:
        return self.queues[kind].get(timeout=timeout)

    def collect(self, kind: str, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        out: list[dict[str, Any]] = []
        while len(out) < count:
            out.append(self.queues[kind].get(timeout=max(deadline - time.monotonic(), 0.01)))
        return out

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def kpi_payload(cell: str, ts: float, values: Any) -> bytes:
    names = ("dl_prb_util", "ul_prb_util", "dl_throughput_mbps", "active_ues", "cpu_util")
    kpis = {
        n: (None if v is None or np.isnan(v) else float(v))
        for n, v in zip(names, values, strict=True)
    }
    return json.dumps({"v": 1, "cell": cell, "ts": ts, "kpis": kpis}).encode()


@dataclass(frozen=True)
class Models:
    good: Path
    bad: Path


def _train(seed: int, path: Path, epochs: int, corrupt: bool = False) -> Path:
    import torch

    from fedge.models import ForecastSpec, LoadForecaster, export_onnx, prepare_site, train_epochs
    from fedge.simulation import GeneratorConfig, SiteGenerator

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    spec = ForecastSpec(lookback=12, horizon=1, hidden=(16, 8))
    model = LoadForecaster(spec)
    if epochs:
        gen = SiteGenerator(GeneratorConfig(num_sites=2, days=10, seed=seed))
        xs, ys = [], []
        for i in range(2):
            s = gen.site(i)
            p = prepare_site(s.values, s.minute_of_week(), s.steps_per_day, spec, (0, 2, 3), 1, 1)
            xs.append(p.x_train)
            ys.append(p.y_train)
        train_epochs(model, np.concatenate(xs), np.concatenate(ys), epochs=epochs,
                     batch_size=128, learning_rate=0.01, seed=seed)  # fmt: skip
    if corrupt:
        with torch.no_grad():
            model.head.bias.add_(3.0)  # forecasts three standard deviations too high
    return export_onnx(model, path)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    d = tmp_path_factory.mktemp("models")
    return Models(
        good=_train(1, d / "good.onnx", 4), bad=_train(1, d / "bad.onnx", 4, corrupt=True)
    )


def site_values(days: int = 6, seed: int = 3, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from fedge.simulation import GeneratorConfig, SiteGenerator

    s = SiteGenerator(GeneratorConfig(num_sites=index + 1, days=days, seed=seed)).site(index)
    return s.values, s.anomalies


def now_step() -> int:
    return int(time.time() // STEP)


def seed_history(store_path: Path, cells: list[str], values: np.ndarray, last_step: int) -> None:
    """Write ``values`` as each cell's history ending at ``last_step`` (as if received)."""
    store = Store(store_path, step_seconds=STEP)
    first = last_step - len(values) + 1
    samples = [
        KpiSample(cell, float((first + i) * STEP), first + i,
                  tuple(None if np.isnan(v) else float(v) for v in values[i]))
        for cell in cells
        for i in range(len(values))
    ]  # fmt: skip
    store.commit_batch(samples, [], time.time())
    store.close()


def write_config(tmp: Path, broker_url: str, **sections: dict[str, Any]) -> Path:
    """An agent.toml with test defaults; ``sections`` override or add tables."""
    base: dict[str, dict[str, Any]] = {
        "agent": {"site": SITE, "step_seconds": STEP},
        "broker": {"url": broker_url, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
        "store": {"path": str(tmp / "agent.db")},
        "model": {"dir": str(tmp / "models")},
        "metrics": {"enabled": False},
    }
    for name, table in sections.items():
        base.setdefault(name, {}).update(table)
    lines = []
    for name, table in base.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items() if not isinstance(v, dict)]
        for sub, inner in table.items():
            if isinstance(inner, dict):
                lines.append(f"[{name}.{sub}]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in inner.items()]
    path = tmp / "agent.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class RunningAgent:
    """An in-process agent on its own thread (the subprocess form is in the kill -9 test)."""

    def __init__(self, config: Path) -> None:
        self.agent = Agent(load_config(config))
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.agent.run(self.stop)
        except BaseException as exc:  # surfaced by close()
            self.error = exc

    def __enter__(self) -> Agent:
        self.thread.start()
        assert self.agent.link.wait_connected(20), self.agent.link.last_error
        return self.agent

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


@pytest.fixture
def client(broker: Mosquitto) -> Iterator[Client]:
    c = Client(broker.port)
    try:
        yield c
    finally:
        c.close()


def agent_env() -> dict[str, str]:
    return {**os.environ, "FLWR_TELEMETRY_ENABLED": "0", "RAY_USAGE_STATS_ENABLED": "0"}
