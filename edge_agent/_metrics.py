"""Prometheus metrics and the ``/healthz`` + ``/metrics`` HTTP endpoint.

Each agent owns its registry (no process-global state), so tests can run several.
Names follow the fleet's one scheme (docs/monitoring.md): ``fedge_agent_`` first, the unit
last (``_seconds``, ``_bytes``, ``_timestamp_seconds``; prometheus_client adds ``_total``
to counters), labels only with a bounded set of values; the site is the scrape target's
label, never one of these.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from fedge.edge_agent._errors import AgentError

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class AgentMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.messages_in = Counter(
            "fedge_agent_messages_in", "Messages received", ["kind"], registry=r
        )
        self.messages_out = Counter(
            "fedge_agent_messages_out", "Messages published", ["kind"], registry=r
        )
        self.rejected = Counter(
            "fedge_agent_messages_rejected", "KPI messages dead-lettered", ["reason"], registry=r
        )
        self.redelivered = Counter(
            "fedge_agent_messages_redelivered",
            "Broker redeliveries of already stored samples",
            registry=r,
        )
        self.inference = Histogram(
            "fedge_agent_inference_seconds",
            "ONNX Runtime call duration (one batch)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch = Histogram(
            "fedge_agent_batch_seconds",
            "Validate+infer+commit+publish duration of one batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.model_info = Gauge(
            "fedge_agent_model_info", "Serving model (1 on its version)", ["version"], registry=r
        )
        self.verdicts = Counter(
            "fedge_agent_model_verdicts", "Candidate model verdicts", ["outcome"], registry=r
        )
        self.alerts = Counter("fedge_agent_alerts", "Anomaly alerts", ["severity"], registry=r)
        self.errors = Counter(
            "fedge_agent_errors",
            "Unexpected failures contained to one message or batch (the agent kept running)",
            ["stage"],
            registry=r,
        )
        self.store_bytes = Gauge("fedge_agent_store_bytes", "SQLite store size on disk", registry=r)
        self.connected = Gauge(
            "fedge_agent_broker_connected", "1 while the MQTT session is up", registry=r
        )
        self.connects = Counter(
            "fedge_agent_broker_connects", "Successful MQTT connections", registry=r
        )
        self.supernode_up = Gauge(
            "fedge_agent_supernode_up", "1 while flower-supernode runs", registry=r
        )
        self.supernode_restarts = Counter(
            "fedge_agent_supernode_restarts",
            "flower-supernode restarts after it exited",
            registry=r,
        )
        self.uplink_rows = Counter(
            "fedge_agent_uplink_rows",
            "Outbox rows the coordinator acknowledged (sent) or refused (a 4xx)",
            ["kind", "outcome"],
            registry=r,
        )
        self.uplink_requests = Counter(
            "fedge_agent_uplink_requests",
            "Requests to the coordinator by call and outcome",
            ["call", "outcome"],
            registry=r,
        )
        self.uplink_backlog = Gauge(
            "fedge_agent_uplink_backlog", "Outbox rows waiting for the coordinator", registry=r
        )
        self.uplink_refused = Gauge(
            "fedge_agent_uplink_refused", "Outbox rows the coordinator refused (kept)", registry=r
        )
        self.uplink_last_success = Gauge(
            "fedge_agent_uplink_last_success_timestamp_seconds",
            "Unix time of the last request the coordinator answered",
            registry=r,
        )
        self._version: str | None = None

    def set_model(self, version: str | None) -> None:
        if self._version is not None:
            self.model_info.remove(self._version)
        self._version = version
        if version is not None:
            self.model_info.labels(version).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer:
    """``GET /healthz`` (JSON, 503 when the worker loop stalls) and ``GET /metrics``."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: AgentMetrics,
        health: Callable[[], tuple[bool, dict[str, object]]],
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, outer.metrics.render(), CONTENT_TYPE_LATEST)
                elif self.path == "/healthz":
                    ok, body = outer.health()
                    self._send(200 if ok else 503, json.dumps(body).encode(), "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.metrics = metrics
        self.health = health
        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise AgentError(f"metrics endpoint {host}:{port}: {exc.strerror or exc}") from exc
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fedge-http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Heartbeat:
    """The worker loop beats; health fails if it has not beaten for ``stale_s``."""

    def __init__(self, stale_s: float = 10.0) -> None:
        self.stale_s = stale_s
        self.last = time.monotonic()

    def beat(self) -> None:
        self.last = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self.last < self.stale_s
