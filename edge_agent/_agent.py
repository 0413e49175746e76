"""The agent: the broker link's thread turns each read's messages into stored samples,
forecasts and alerts.

Per batch: validate every message (bad ones go to the dead-letter topic), run one
batched inference for the cells whose step completed, commit samples and forecasts in
one transaction, then acknowledge to the broker and publish. Acknowledging only after
the commit is what makes "acknowledged" mean "durable".

One message can never stop the agent: a KPI that fails in any unexpected way is
dead-lettered (reason ``internal``) and a model that fails to open, load or score is a
rejected verdict, both acknowledged and counted in ``fedge_agent_errors``. Unacknowledged,
the broker would redeliver it on every restart. Only a store failure ends the run.

Sealed models are judged on the uplink's thread (``_uplink``), which also owns the
coordinator link: this thread hands the bytes over and never waits on the network. What
other threads publish or acknowledge on the broker comes back here through a queue.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fedge.core import TARGET_KPIS
from fedge.edge_agent._anomaly import RESOLVED, Alert
from fedge.edge_agent._broker import Inbound, MqttLink
from fedge.edge_agent._config import AgentConfig, read_password
from fedge.edge_agent._errors import AgentError, KpiRejected, StoreError
from fedge.edge_agent._forecast import ForecastEngine
from fedge.edge_agent._kpi import KpiSample, OrderGuard, Reason, parse_kpi
from fedge.edge_agent._lifecycle import ModelManager
from fedge.edge_agent._metrics import AgentMetrics, HealthServer, Heartbeat
from fedge.edge_agent._store import ForecastRow, Store
from fedge.edge_agent._supernode import SupernodeSupervisor
from fedge.edge_agent._uplink import SiteStatus, Uplink

if TYPE_CHECKING:
    from fedge.edge_agent._actions import ActionPoller

log = logging.getLogger("fedge.agent")

DEADLETTER_PAYLOAD_CHARS = 256
#: Longest failure text put in a dead letter or verdict.
REASON_CHARS = 300
_TICK_S = 1.0
#: How long a thread may hold the GIL while another waits (CPython's default: 5 ms).
GIL_SWITCH_S = 0.0005


class Agent:
    def __init__(self, config: AgentConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.metrics = AgentMetrics()
        self.store = Store(
            config.store.path,
            synchronous=config.store.synchronous,
            step_seconds=config.step_seconds,
            outbox=config.coordinator is not None,
        )
        self.models = ModelManager(self.store, config.model)
        self.models.load_serving()
        self.metrics.set_model(self.version)
        self.engine = ForecastEngine(
            self.store, config.step_seconds, config.anomaly, min_history=config.model.min_history
        )
        self.guard = OrderGuard(config.ingest.reorder_tolerance_steps)
        self._inbound: list[Inbound] = []  # read from the broker, not yet processed
        # MQTT work other threads hand to the broker link's thread (paho is driven there)
        self._handoff: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.alert_counts: dict[str, int] = {}
        self.supernode_state = "absent" if config.federation is None else "starting"
        self.heartbeat = Heartbeat()
        self.kpi_topic = config.topic("kpi")
        self.model_topic = config.topic("model")
        # the coordinator link and the model judge: a thread of their own
        self.uplink: Uplink | None = None
        if config.security is not None:
            self.uplink = Uplink(
                config,
                self.models,
                self.metrics,
                publish=self.hand_publish,
                ack=lambda m: self._handoff.put(lambda: self.link.ack(m)),
                status=self._site_status,
                online=lambda: self._status("online"),
                clock=clock,
            )
        self.actions = self._action_poller()
        subs = [self.kpi_topic] + ([self.model_topic] if self.uplink is not None else [])
        self.link = MqttLink(
            config,
            self._inbound.append,
            subscriptions=subs,
            online_status=lambda: self._status("online"),
            offline_status=self._status("offline"),
            on_state=self._on_link_state,
            on_poll=self._poll,
            password=read_password(config),
        )
        self.http: HealthServer | None = None
        self.supervisor: SupernodeSupervisor | None = None
        if config.federation is not None:
            self.supervisor = SupernodeSupervisor(
                config.federation,
                config.store.path,
                config.store.path.parent / "supernode.log",
                on_state=self._on_supernode,
                on_restart=self.metrics.supernode_restarts.inc,
            )
        self._kpi_in = self.metrics.messages_in.labels("kpi")
        self._model_in = self.metrics.messages_in.labels("model")
        self._last_tick = 0.0
        self._last_retention = 0.0

    def _on_supernode(self, up: bool) -> None:
        self.metrics.supernode_up.set(int(up))
        self.supernode_state = "running" if up else "restarting"

    def _site_status(self) -> SiteStatus:
        return SiteStatus(dict(self.alert_counts), self.supernode_state)

    def hand_publish(self, topic: str, payload: bytes, retain: bool) -> None:
        """Publish from any thread: queued for the broker link's thread."""
        self._handoff.put(lambda: self.link.publish(topic, payload, retain=retain))

    def _action_poller(self) -> ActionPoller | None:
        """The action poller (its own thread) when the coordinator link is configured."""
        if self.uplink is None or self.uplink.client is None:
            return None
        from fedge.edge_agent._actions import ActionPoller
        from fedge.security import SecurityError, SitePublicKeys

        sec, link = self.config.security, self.config.coordinator
        assert sec is not None and link is not None
        try:
            keys = SitePublicKeys.from_bytes(sec.coordinator_keys.read_bytes())
        except (SecurityError, OSError) as exc:
            raise AgentError(f"security.coordinator_keys: {exc}") from exc
        return ActionPoller(
            client=self.uplink.client,
            coordinator_keys=keys,
            site_id=self.config.site,
            store_path=self.config.store.path,
            publish=self.hand_publish,
            topic=self.config.topic("action"),
            clock=self.clock,
            wait_s=link.action_wait_s,
        )

    @property
    def version(self) -> str | None:
        return None if self.models.serving is None else self.models.serving.version

    def _status(self, state: str) -> bytes:
        return json.dumps(
            {
                "v": 1,
                "state": state,
                "site": self.config.site,
                "model_version": self.version,
                "pid": os.getpid(),
                "ts": round(self.clock(), 3),
            }
        ).encode()

    def _on_link_state(self, up: bool) -> None:
        self.metrics.connected.set(int(up))
        if up:
            self.metrics.connects.inc()

    def health(self) -> tuple[bool, dict[str, object]]:
        ok = self.heartbeat.alive()
        return ok, {
            "status": "ok" if ok else "stalled",
            "broker_connected": self.link.connected,
            "model_version": self.version,
            "supernode_pid": None if self.supervisor is None else self.supervisor.pid,
            "uplink": None if self.uplink is None else self.uplink.state(),
        }

    # the loop ---------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; a store error ends the run (nothing unsafe is acked)."""
        # The uplink's thread judges candidate models in Python and numpy while the broker
        # link's thread forecasts: at the default 5 ms switch interval a KPI could wait a
        # whole interval for the GIL, the size of the agent's latency target.
        sys.setswitchinterval(GIL_SWITCH_S)
        if self.config.metrics is not None:
            self.http = HealthServer(
                self.config.metrics.host, self.config.metrics.port, self.metrics, self.health
            )
            self.http.start()
        self.store.start_checkpointer()
        if self.supervisor is not None:
            self.supervisor.start()
        if self.uplink is not None:
            self.uplink.start()
        if self.actions is not None:
            self.actions.start()
        # Everything loaded so far (numpy, onnxruntime, paho, the model) lives as long as the
        # process: out of the cyclic collector, so a full collection is not a 20-40 ms stall.
        gc.collect()
        gc.freeze()
        self.link.start()  # from here on the agent's work runs on the link's thread
        try:
            while not stop.wait(0.2) and not self.link.finished:
                pass
        finally:
            self.link.stop()
            if self.actions is not None:
                self.actions.stop()
            if self.uplink is not None:
                self.uplink.stop()
            if self.supervisor is not None:
                self.supervisor.stop()
            if self.http is not None:
                self.http.stop()
            self.store.close()
        if self.link.failure is not None:
            raise self.link.failure

    def _poll(self) -> None:
        """Between two reads from the broker: process what arrived, then housekeeping."""
        if self._inbound:
            inbound = self._inbound.copy()
            self._inbound.clear()  # the link appends to this very list
            size = self.config.ingest.max_batch
            for start in range(0, len(inbound), size):
                self.process(inbound[start : start + size])
        while True:
            try:
                handed = self._handoff.get_nowait()
            except queue.Empty:
                break
            handed()
        self._tick()

    def _tick(self) -> None:
        now = time.monotonic()
        if now - self._last_tick < _TICK_S:
            return
        self._last_tick = now
        self.heartbeat.beat()
        # a model judged right now holds the lock: its swap is the uplink's, look next tick
        if self.models.lock.acquire(blocking=False):
            try:
                serving = self.store.serving()
                if serving is not None and serving.version != self.version:
                    log.warning(
                        "serving model changed in the store (rollback?): now %s", serving.version
                    )
                    self.models.load_serving()
                    self.metrics.set_model(self.version)
            finally:
                self.models.lock.release()
        if now - self._last_retention >= self.config.store.housekeeping_s:
            self._last_retention = now
            cfg = self.config.store
            self.store.enforce_retention(
                self.clock(), cfg.max_age_days * 86_400, int(cfg.max_mb * 1e6)
            )
        self.metrics.store_bytes.set(self.store.size_bytes())

    # one batch --------------------------------------------------------------------------------

    def process(self, batch: list[Inbound]) -> None:
        started = time.perf_counter()
        now = self.clock()
        samples: list[KpiSample] = []
        forecasts: list[ForecastRow] = []
        alerts: list[Alert] = []
        dead: list[bytes] = []
        models: list[Inbound] = []
        pending: list[str] = []
        for msg in batch:
            if msg.topic == self.model_topic:
                models.append(msg)
                continue
            try:
                accepted = self._accept(msg, now, dead)
            except StoreError:
                raise
            except Exception as exc:  # a bug must cost this message, not the agent
                dead.append(self._dead_letter(msg, self._internal("validate", exc), now))
                continue
            if accepted is None:
                continue
            sample, newest = accepted
            if newest and sample.cell in pending:
                forecasts += self._forecast(pending)
                pending = []
            self.guard.accept(sample)
            samples.append(sample)
            alert = self._observe(sample, newest)
            if alert is not None:
                alerts.append(alert)
            if newest:
                pending.append(sample.cell)
        if pending:
            forecasts += self._forecast(pending)
        self._kpi_in.inc(len(batch) - len(models))
        if models:
            self._model_in.inc(len(models))
        if samples or forecasts:
            self.store.commit_batch(samples, forecasts, now)
            if forecasts and self.uplink is not None:
                self.uplink.notify()  # sent within the uplink's batching window
        for msg in batch:
            if msg.topic != self.model_topic:
                self.link.ack(msg)
        self._publish(forecasts, alerts, dead)
        self.metrics.batch.observe(time.perf_counter() - started)
        for msg in models:  # judged on the uplink's thread, acknowledged once judged
            if self.uplink is not None:
                self.uplink.submit(msg)
            else:
                self.link.ack(msg)

    def _accept(self, msg: Inbound, now: float, dead: list[bytes]) -> tuple[KpiSample, bool] | None:
        ingest = self.config.ingest
        try:
            sample = parse_kpi(
                msg.payload,
                max_bytes=ingest.max_payload_bytes,
                step_seconds=self.config.step_seconds,
                now=now,
                max_future_s=ingest.max_future_s,
            )
        except KpiRejected as exc:
            dead.append(self._dead_letter(msg, exc, now))
            return None
        if not self.guard.knows(sample.cell):
            self.guard.seed(
                sample.cell, self.store.recent_steps(sample.cell, self.guard.tolerance + 1)
            )
        try:
            newest = self.guard.check(sample)
        except KpiRejected as exc:
            if (
                msg.dup
                and exc.reason in (Reason.DUPLICATE, Reason.OUT_OF_ORDER)
                and self.store.sample(sample.cell, sample.step) == sample.values
            ):
                self.metrics.redelivered.inc()  # a redelivery of what we already committed
                return None
            dead.append(self._dead_letter(msg, exc, now))
            return None
        return sample, newest

    def _internal(self, stage: str, exc: Exception) -> KpiRejected:
        """An unexpected failure, logged with its traceback and counted by stage."""
        log.error("unexpected failure (%s), contained: %r", stage, exc, exc_info=exc)
        self.metrics.errors.labels(stage).inc()
        return KpiRejected(Reason.INTERNAL, f"{type(exc).__name__}: {exc}"[:REASON_CHARS])

    def _observe(self, sample: KpiSample, newest: bool) -> Alert | None:
        """Score a stored sample; a failure costs its alert, never the sample."""
        try:
            return self.engine.observe(sample, newest)
        except StoreError:
            raise
        except Exception as exc:  # anomaly scoring is advisory
            self._internal("observe", exc)
            return None

    def _dead_letter(self, msg: Inbound, exc: KpiRejected, now: float) -> bytes:
        self.metrics.rejected.labels(exc.reason).inc()
        text = msg.payload[: DEADLETTER_PAYLOAD_CHARS * 4].decode("utf-8", errors="replace")
        return json.dumps(
            {
                "v": 1,
                "reason": str(exc.reason),
                "detail": exc.detail,
                "topic": msg.topic,
                "received_at": round(now, 3),
                "payload": text[:DEADLETTER_PAYLOAD_CHARS],
                "payload_bytes": len(msg.payload),
                "truncated": len(text) > DEADLETTER_PAYLOAD_CHARS
                or len(msg.payload) > DEADLETTER_PAYLOAD_CHARS * 4,
            }
        ).encode()

    def _forecast(self, cells: list[str]) -> list[ForecastRow]:
        serving = self.models.serving
        if serving is None:
            return []
        started = time.perf_counter()
        try:
            rows = self.engine.forecast(cells, serving)
        except StoreError:
            raise
        except Exception as exc:  # the samples are still stored; these cells skip a forecast
            self._internal("forecast", exc)
            return []
        self.metrics.inference.observe(time.perf_counter() - started)
        return rows

    def _publish(
        self, forecasts: list[ForecastRow], alerts: list[Alert], dead: list[bytes]
    ) -> None:
        step_s = self.config.step_seconds
        by_cell: dict[tuple[str, int], list[ForecastRow]] = {}
        for row in forecasts:
            by_cell.setdefault((row.cell, row.made_step), []).append(row)
        # counted before they leave: whoever receives one sees it in the metrics already
        self.metrics.messages_out.labels("forecast").inc(len(by_cell))
        self.metrics.messages_out.labels("alert").inc(len(alerts))
        self.metrics.messages_out.labels("deadletter").inc(len(dead))
        topic = self.config.topic("forecast")
        for (cell, made), rows in by_cell.items():
            body: dict[str, Any] = {
                "v": 1,
                "cell": cell,
                "step_ts": made * step_s,
                "model_version": rows[0].model_version,
                "forecast": [
                    {
                        "ts": r.step * step_s,
                        **dict(zip(TARGET_KPIS, (round(v, 4) for v in r.values), strict=True)),
                    }
                    for r in rows
                ],
            }
            self.link.publish(topic, json.dumps(body).encode())
        topic = self.config.topic("alert")
        for a in alerts:
            body = {
                "v": 1,
                "cell": a.cell,
                "ts": a.ts,
                "severity": a.severity,
                "state": a.state,
                "since": a.since_ts,
                "until": a.until_ts,
                "model_version": self.version,
                "kpis": [
                    {
                        "name": k.name,
                        "actual": k.actual,
                        "forecast": round(k.forecast, 4),
                        "z": round(k.z, 2),
                    }
                    for k in a.kpis
                ],
            }
            if a.state != RESOLVED:  # an episode counts when it opens and when it escalates
                self.metrics.alerts.labels(a.severity).inc()
                self.alert_counts[a.severity] = self.alert_counts.get(a.severity, 0) + 1
            self.link.publish(topic, json.dumps(body).encode())
        topic = self.config.topic("deadletter")
        for payload in dead:
            self.link.publish(topic, payload)
