"""The MQTT link (paho-mqtt 2.x), with fedge-owned reconnection.

paho's own reconnect loop hides how long we back off and when we resubscribe; here one
network thread connects, drives paho, runs the agent's work between reads, and on any
loss waits an exponential, jittered backoff before reconnecting with the same client (so
paho's unacknowledged outgoing QoS 1 messages are resent) and the same persistent
session (so the broker keeps queueing our subscriptions while we are away). Incoming
QoS 1 messages are acknowledged manually, by the agent, only after they are committed
to the store. Every paho call happens on that one thread.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fedge.edge_agent._config import AgentConfig
from fedge.edge_agent._errors import BrokerError

log = logging.getLogger("fedge.agent.broker")

#: CONNACK codes meaning "this broker does not speak MQTT 5": 0x84 (v5), 1 (v3.1.1).
_UNSUPPORTED_PROTOCOL = (0x84, 1)
#: Longest wait for the socket before the agent is polled (its heartbeat and housekeeping).
POLL_S = 0.05


@dataclass(frozen=True, slots=True)
class Inbound:
    topic: str
    payload: bytes
    mid: int
    qos: int
    dup: bool
    generation: int  # which connection delivered it: acks never cross reconnects


class Link(Protocol):
    """What the agent needs of a broker connection (tests may swap in another)."""

    @property
    def connected(self) -> bool: ...

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None: ...

    def ack(self, message: Inbound) -> None: ...


def _no_delay(client: mqtt.Client, userdata: object, sock: object) -> None:
    """Disable Nagle on the broker socket before CONNECT is sent.

    PUBACKs and forecasts are small writes: with Nagle, the second one waits for the
    broker's delayed ACK (up to 40 ms on Linux) or for the next inbound KPI, which made
    latency track the message interval (higher at 100 msg/s than at 1,000 msg/s).
    """
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Exponential backoff with 'equal jitter': between half and all of min(high, low*2^n)."""
    ceiling = min(high, low * (2 ** min(attempt, 30)))
    return float(ceiling / 2 + rng.random() * ceiling / 2)


def falls_back(protocol: str, reason: int) -> bool:
    """In ``auto`` mode a broker refusing MQTT 5 is retried with MQTT 3.1.1."""
    return protocol == "auto" and reason in _UNSUPPORTED_PROTOCOL


class MqttLink:
    """One persistent-session MQTT connection with a last will on the status topic."""

    def __init__(
        self,
        config: AgentConfig,
        on_message: Callable[[Inbound], None],
        *,
        subscriptions: list[str],
        online_status: Callable[[], bytes],
        offline_status: bytes,
        on_state: Callable[[bool], None] = lambda _: None,
        on_poll: Callable[[], None] = lambda: None,
        password: str | None = None,
    ) -> None:
        self.config = config
        self._broker = config.broker
        self._on_message = on_message
        self._subscriptions = subscriptions
        self._online_status = online_status
        self._offline_status = offline_status
        self._on_state = on_state
        self._on_poll = on_poll
        self._password = password
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._down = threading.Event()
        self._finished = threading.Event()
        self.failure: BaseException | None = None  # what ended the network thread, if not stop
        self._thread: threading.Thread | None = None
        self._generation = 0
        self._rng = random.Random()
        self.reconnects = 0
        self.protocol = "5" if self._broker.protocol in ("auto", "5") else "3.1.1"
        self.last_error = ""
        self._client = self._make_client()

    # client construction ------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        v5 = self.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.config.client_id,
            clean_session=None if v5 else False,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        client.max_inflight_messages_set(self._broker.receive_maximum)
        client.max_queued_messages_set(0)
        client.will_set(self.config.topic("status"), self._offline_status, qos=1, retain=True)
        if self._broker.username is not None:
            client.username_pw_set(self._broker.username, self._password)
        tls = self._broker.tls
        if tls is not None:
            try:
                client.tls_set(
                    ca_certs=str(tls.ca_file) if tls.ca_file else None,
                    certfile=str(tls.cert_file) if tls.cert_file else None,
                    keyfile=str(tls.key_file) if tls.key_file else None,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise BrokerError(f"broker TLS setup failed: {exc}") from exc
        client.on_socket_open = _no_delay
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_subscribe = self._handle_subscribe
        return client

    def _connect_properties(self) -> Properties | None:
        if self.protocol != "5":
            return None
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._broker.session_expiry_s
        props.ReceiveMaximum = self._broker.receive_maximum
        return props

    # callbacks (network thread) -------------------------------------------------------------

    def _handle_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused the connection: {reason}"
            code = reason.value
            if falls_back(self._broker.protocol, code) and self.protocol == "5":
                log.warning("broker refuses MQTT 5; falling back to MQTT 3.1.1")
                self.protocol = "3.1.1"
                self._rebuild = True
            client.disconnect()
            return
        self._generation += 1
        self.last_error = ""
        client.subscribe([(topic, 1) for topic in self._subscriptions])
        client.publish(self.config.topic("status"), self._online_status(), qos=1, retain=True)
        self._attempt = 0

    def _handle_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        """Only with the subscriptions granted is the link up (resubscribed after each loss)."""
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            self.last_error = f"broker refused the subscriptions: {', '.join(failed)}"
            log.error("%s", self.last_error)
            client.disconnect()
            return
        self._connected.set()
        self._on_state(True)

    def _handle_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connected.is_set():
            self._connected.clear()
            self._on_state(False)
        self._down.set()

    def _handle_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self._on_message(
            Inbound(
                msg.topic, bytes(msg.payload), msg.mid, msg.qos, bool(msg.dup), self._generation
            )
        )

    # the network thread ---------------------------------------------------------------------

    def start(self) -> None:
        self._attempt = 0
        self._rebuild = False
        self._thread = threading.Thread(target=self._run, name="fedge-mqtt", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # the agent's work runs on this thread: hand it over
            self.failure = exc
        finally:
            self._finished.set()

    def _serve(self) -> None:
        """Connect, drive the connection until it drops, back off; all on this thread.

        paho is driven by hand (``loop``), never by a thread of its own, and the agent's
        work runs here too, between network reads (``on_poll``): a KPI goes from the
        socket to its forecast and PUBACK without a thread hand-off. Handing batches to a
        worker thread cost a queue wake-up and GIL hand-offs both ways, ~1 ms of every
        forecast's latency and most of its tail at 1,000 msg/s. paho never reconnects by
        itself (``reconnect_on_failure=False``); this loop decides when, with its backoff.
        """
        while not self._stop.is_set():
            if self._rebuild:
                self._rebuild = False
                self._client = self._make_client()
                self._attempt = 0
                continue
            self._down.clear()
            try:
                if self.protocol == "5":
                    self._client.connect(
                        self._broker.host,
                        self._broker.port,
                        keepalive=self._broker.keepalive_s,
                        clean_start=False,
                        properties=self._connect_properties(),
                    )
                else:  # 3.1.1: the persistent session is clean_session=False on the client
                    self._client.connect(
                        self._broker.host, self._broker.port, keepalive=self._broker.keepalive_s
                    )
            except (OSError, ssl.SSLError, ValueError) as exc:
                self.last_error = (
                    f"cannot reach broker {self._broker.host}:{self._broker.port}: {exc}"
                )
            else:
                while not self._stop.is_set() and not self._down.is_set():
                    if self._client.loop(POLL_S) != mqtt.MQTT_ERR_SUCCESS:
                        self._down.set()  # not every failure reaches on_disconnect
                    self._on_poll()
                if self._stop.is_set():
                    self._goodbye()
                    break
            if self._connected.is_set():
                self._connected.clear()
                self._on_state(False)
            if self._stop.is_set():
                break
            if self._rebuild:
                continue
            delay = backoff_delay(
                self._attempt, self._broker.reconnect_min_s, self._broker.reconnect_max_s, self._rng
            )
            self._attempt += 1
            self.reconnects += 1
            log.warning(
                "broker link down (%s); reconnecting in %.2f s", self.last_error or "lost", delay
            )
            self._pause(delay)

    def _pause(self, seconds: float) -> None:
        """Wait out a backoff, still polling the agent (its heartbeat, housekeeping)."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, POLL_S))
            self._on_poll()

    def _goodbye(self) -> None:
        """Publish 'offline' (retained) and disconnect cleanly, waiting up to 2 s for the ack.

        Whenever the broker accepted the connection (it has our 'online'), even if the
        subscriptions are not granted yet: a clean disconnect suppresses the last will."""
        if self._client.is_connected():
            info = self._client.publish(
                self.config.topic("status"), self._offline_status, qos=1, retain=True
            )
            deadline = time.monotonic() + 2.0
            while not info.is_published() and time.monotonic() < deadline:
                if self._client.loop(POLL_S) != mqtt.MQTT_ERR_SUCCESS:
                    break
        if self._connected.is_set():
            self._connected.clear()
            self._on_state(False)
        self._client.disconnect()

    def stop(self, timeout: float = 5.0) -> None:
        """Say goodbye to the broker and stop the network thread."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout)
        self._thread = None

    @property
    def finished(self) -> bool:
        """The network thread has ended (after ``stop``, or with ``failure`` set)."""
        return self._finished.is_set()

    # what the agent uses ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Queue a QoS 1 message; only from ``on_message``/``on_poll`` (the network thread)."""
        self._client.publish(topic, payload, qos=1, retain=retain)

    def ack(self, message: Inbound) -> None:
        """PUBACK a committed message, unless the connection that delivered it is gone
        (the broker then redelivers it, and the store's key turns it into a no-op).
        Only from the network thread, like ``publish``."""
        if message.generation == self._generation and self._connected.is_set():
            self._client.ack(message.mid, message.qos)


def probe(config: AgentConfig, password: str | None, timeout: float = 5.0) -> str:
    """Connect once (clean, separate client id) and report the protocol the broker took."""
    got: dict[str, str] = {}
    done = threading.Event()
    for protocol in (
        ("5", "3.1.1") if config.broker.protocol == "auto" else (config.broker.protocol,)
    ):
        v5 = protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{config.client_id}-check",
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        )
        if config.broker.username is not None:
            client.username_pw_set(config.broker.username, password)
        tls = config.broker.tls
        try:
            if tls is not None:
                client.tls_set(
                    ca_certs=str(tls.ca_file) if tls.ca_file else None,
                    certfile=str(tls.cert_file) if tls.cert_file else None,
                    keyfile=str(tls.key_file) if tls.key_file else None,
                )

            def on_connect(c: mqtt.Client, u: object, f: object, rc: ReasonCode, p: object) -> None:
                got["rc"] = str(rc)
                got["code"] = str(rc.value)
                done.set()

            client.on_connect = on_connect
            client.connect(config.broker.host, config.broker.port, keepalive=10)
            client.loop_start()
            ok = done.wait(timeout)
            client.disconnect()
            client.loop_stop()
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise BrokerError(
                f"cannot reach broker {config.broker.host}:{config.broker.port}: {exc}"
            ) from exc
        if not ok:
            raise BrokerError(
                f"broker {config.broker.host}:{config.broker.port}: no CONNACK in {timeout:.0f} s"
            )
        if got["code"] == "0":
            return f"MQTT {protocol}"
        if not falls_back(config.broker.protocol, int(got["code"])):
            raise BrokerError(f"broker refused the connection: {got['rc']}")
        done.clear()
    raise BrokerError("broker refused both MQTT 5 and 3.1.1")
