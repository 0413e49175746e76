"""The agent's side of actions: only what the coordinator signed for this site, still
valid and newer than the action in force is accepted, recorded, published retained on the
site's broker and acknowledged; every refusal is typed, recorded, and loses nothing."""

from __future__ import annotations

import base64
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fedge.core import ACTION_CONTEXT, REQUEST_CONTEXT, SiteClient, parse_site_request
from fedge.edge_agent._actions import (
    KINDS,
    MAX_BODY_BYTES,
    MODES,
    SHARE_NAMES,
    SOURCES,
    Action,
    ActionLog,
    ActionPoller,
    verify_action,
)
from fedge.edge_agent._errors import (
    ActionExpiredError,
    ActionFormatError,
    ActionRejected,
    ActionReplayError,
    ActionSignatureError,
    ActionSiteError,
    AgentError,
    BrokerError,
    ConfigError,
    StoreError,
)
from fedge.security import SiteIdentity, SitePublicKeys
from fedge.security._composite import SIGNATURE_SIZE
from tests.edge_agent.conftest import Mosquitto
from tests.support.ports import free_port

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def coordinator() -> SiteIdentity:
    return SiteIdentity.generate()


@pytest.fixture(scope="module")
def site() -> SiteIdentity:
    return SiteIdentity.generate()


def action(site: SiteIdentity, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "action_id": 1,
        "site_id": site.site_id.hex(),
        "kind": "strategic",
        "mode": "capacity_off",
        "shares": None,
        "decided_at": NOW - 10,
        "valid_until": NOW + 900,
        "policy_version": "energy-v1",
        "source": "federated_forecast",
        "decision_id": 1,
    }
    body.update(over)
    return body


def tactical(site: SiteIdentity, **over: Any) -> dict[str, Any]:
    shares = {"embb": 0.6, "urllc": 0.2, "mmtc": 0.1, "unreserved": 0.1}
    return action(site, kind="tactical", mode=None, shares=shares, **over)


def signed(signer: SiteIdentity, body: dict[str, Any] | bytes) -> tuple[bytes, bytes]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return raw, signer.signing_key.sign(raw, ACTION_CONTEXT)


def test_own_vocabulary_is_the_decisions_and_the_coordinators() -> None:
    from typing import get_args

    import fedge.decisions
    from fedge.coordinator._actions import ActionKind, ActionSource

    assert MODES == fedge.decisions.MODES
    assert SHARE_NAMES == fedge.decisions.SHARE_NAMES
    assert get_args(ActionKind) == KINDS
    assert get_args(ActionSource) == SOURCES


def test_valid_actions_verify(coordinator: SiteIdentity, site: SiteIdentity) -> None:
    keys = coordinator.public_keys()
    got = verify_action(*signed(coordinator, action(site)), keys, site.site_id.hex(), NOW, 0)
    assert isinstance(got, Action)
    assert (got.action_id, got.kind, got.mode, got.shares) == (1, "strategic", "capacity_off", None)
    got = verify_action(
        *signed(coordinator, tactical(site, action_id=2)), keys, site.site_id.hex().upper(), NOW, 1
    )
    assert got.shares is not None and dict(got.shares)["urllc"] == 0.2
    assert got.published(NOW)["shares"] == {
        "embb": 0.6,
        "urllc": 0.2,
        "mmtc": 0.1,
        "unreserved": 0.1,
    }


def _tampered(coordinator: SiteIdentity, site: SiteIdentity) -> tuple[bytes, bytes]:
    body, sig = signed(coordinator, action(site, action_id=9))
    return body.replace(b"capacity_off", b"deep_sleep"), sig


def _padded(coordinator: SiteIdentity, site: SiteIdentity) -> tuple[bytes, bytes]:
    raw = json.dumps(action(site, action_id=9)).encode()
    return signed(coordinator, raw[:-1] + b" " * MAX_BODY_BYTES + b"}")


def _deep(coordinator: SiteIdentity, site: SiteIdentity) -> tuple[bytes, bytes]:
    raw = json.dumps(action(site, action_id=9, policy_version=None)).encode()
    return signed(
        coordinator, raw.replace(b'"policy_version": null', b'"x": ' + b"[" * 900 + b"]" * 900)
    )


Case = Callable[[SiteIdentity, SiteIdentity], tuple[bytes, bytes]]
REJECTIONS: dict[str, tuple[Case, type[ActionRejected]]] = {
    "other key": (
        lambda c, s: signed(SiteIdentity.generate(), action(s, action_id=9)),
        ActionSignatureError,
    ),
    "tampered body": (_tampered, ActionSignatureError),
    "short signature": (
        lambda c, s: (signed(c, action(s, action_id=9))[0], b"\x00" * 64),
        ActionSignatureError,
    ),
    "random signature": (
        lambda c, s: (signed(c, action(s, action_id=9))[0], os.urandom(SIGNATURE_SIZE)),
        ActionSignatureError,
    ),
    "other context": (
        lambda c, s: (
            json.dumps(action(s, action_id=9)).encode(),
            c.signing_key.sign(json.dumps(action(s, action_id=9)).encode(), REQUEST_CONTEXT),
        ),
        ActionSignatureError,
    ),
    "other site": (
        lambda c, s: signed(c, action(s, action_id=9, site_id="ab" * 16)),
        ActionSiteError,
    ),
    "expired": (
        lambda c, s: signed(c, action(s, action_id=9, valid_until=NOW - 1)),
        ActionExpiredError,
    ),
    "same id": (lambda c, s: signed(c, action(s, action_id=5, mode="active")), ActionReplayError),
    "older id": (lambda c, s: signed(c, action(s, action_id=3)), ActionReplayError),
    "not json": (lambda c, s: signed(c, b"mode=capacity_off"), ActionFormatError),
    "not utf-8": (lambda c, s: signed(c, b'{"action_id": "\xff"}'), ActionFormatError),
    "an array": (lambda c, s: signed(c, b"[1, 2]"), ActionFormatError),
    "missing field": (
        lambda c, s: signed(c, {k: v for k, v in action(s, action_id=9).items() if k != "source"}),
        ActionFormatError,
    ),
    "unknown field": (lambda c, s: signed(c, action(s, action_id=9, extra=1)), ActionFormatError),
    "duplicate field": (
        lambda c, s: signed(
            c, json.dumps(action(s, action_id=9))[:-1].encode() + b', "action_id": 10}'
        ),
        ActionFormatError,
    ),
    "id as text": (lambda c, s: signed(c, action(s, action_id="9")), ActionFormatError),
    "id as bool": (lambda c, s: signed(c, action(s, action_id=True)), ActionFormatError),
    "id zero": (lambda c, s: signed(c, action(s, action_id=0)), ActionFormatError),
    "site not hex": (
        lambda c, s: signed(c, action(s, action_id=9, site_id="site-a")),
        ActionFormatError,
    ),
    "unknown kind": (
        lambda c, s: signed(c, action(s, action_id=9, kind="urgent")),
        ActionFormatError,
    ),
    "unknown mode": (
        lambda c, s: signed(c, action(s, action_id=9, mode="turbo")),
        ActionFormatError,
    ),
    "strategic with shares": (
        lambda c, s: signed(c, action(s, action_id=9, shares={n: 0.25 for n in SHARE_NAMES})),
        ActionFormatError,
    ),
    "tactical with mode": (
        lambda c, s: signed(c, {**tactical(s, action_id=9), "mode": "active"}),
        ActionFormatError,
    ),
    "shares missing a slice": (
        lambda c, s: signed(c, tactical(s, action_id=9) | {"shares": {"embb": 1.0}}),
        ActionFormatError,
    ),
    "shares with another slice": (
        lambda c, s: signed(
            c, tactical(s, action_id=9) | {"shares": {**{n: 0.2 for n in SHARE_NAMES}, "v2x": 0.1}}
        ),
        ActionFormatError,
    ),
    "shares over one": (
        lambda c, s: signed(
            c, tactical(s, action_id=9) | {"shares": {n: 0.3 for n in SHARE_NAMES}}
        ),
        ActionFormatError,
    ),
    "negative share": (
        lambda c, s: signed(
            c,
            tactical(s, action_id=9)
            | {"shares": {"embb": -0.1, "urllc": 0.5, "mmtc": 0.3, "unreserved": 0.3}},
        ),
        ActionFormatError,
    ),
    "share as text": (
        lambda c, s: signed(
            c,
            tactical(s, action_id=9) | {"shares": {**{n: 0.1 for n in SHARE_NAMES}, "embb": "0.1"}},
        ),
        ActionFormatError,
    ),
    "NaN share": (
        lambda c, s: signed(c, json.dumps(tactical(s, action_id=9)).replace("0.6", "NaN").encode()),
        ActionFormatError,
    ),
    "infinite expiry": (
        lambda c, s: signed(
            c,
            json.dumps(action(s, action_id=9, valid_until=1.0)).replace("1.0,", "1e999,").encode(),
        ),
        ActionFormatError,
    ),
    "expiry as text": (
        lambda c, s: signed(c, action(s, action_id=9, valid_until="soon")),
        ActionFormatError,
    ),
    "expiry before decision": (
        lambda c, s: signed(c, action(s, action_id=9, decided_at=NOW + 5, valid_until=NOW + 1)),
        ActionFormatError,
    ),
    "unknown source": (
        lambda c, s: signed(c, action(s, action_id=9, source="operator")),
        ActionFormatError,
    ),
    "huge body": (_padded, ActionFormatError),
    "deep nesting": (_deep, ActionFormatError),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_refused_action_is_typed_recorded_and_loses_nothing(
    case: str, coordinator: SiteIdentity, site: SiteIdentity, tmp_path: Path
) -> None:
    make, error = REJECTIONS[case]
    keys, site_hex = coordinator.public_keys(), site.site_id.hex()
    actions = ActionLog(tmp_path / "agent.db")
    actions.receive(*signed(coordinator, action(site, action_id=5)), keys, site_hex, NOW)
    in_force = actions.in_force()
    body, signature = make(coordinator, site)

    with pytest.raises(error) as caught:
        actions.receive(body, signature, keys, site_hex, NOW)
    assert isinstance(caught.value, AgentError)

    assert actions.last_id == 5
    assert actions.in_force() == in_force
    assert in_force is not None and in_force["action_id"] == 5
    rows = actions.rows()
    assert [r["status"] for r in rows] == ["accepted", "rejected"]
    assert rows[1]["error"] == error.__name__
    assert str(rows[1]["reason"]).startswith(error.__name__)
    actions.close()
    reopened = ActionLog(tmp_path / "agent.db")
    assert reopened.last_id == 5 and reopened.in_force() == in_force
    reopened.close()


def test_the_checks_run_in_order(coordinator: SiteIdentity, site: SiteIdentity) -> None:
    keys, site_hex = coordinator.public_keys(), site.site_id.hex()
    everything_wrong = action(site, action_id=1, site_id="ab" * 16, valid_until=NOW - 1)
    forged = signed(SiteIdentity.generate(), everything_wrong)
    with pytest.raises(ActionSignatureError):
        verify_action(*forged, keys, site_hex, NOW, 5)
    with pytest.raises(ActionSiteError):
        verify_action(*signed(coordinator, everything_wrong), keys, site_hex, NOW, 5)
    expired_replay = action(site, action_id=1, valid_until=NOW - 1)
    with pytest.raises(ActionExpiredError):
        verify_action(*signed(coordinator, expired_replay), keys, site_hex, NOW, 5)


def test_a_replay_is_refused_after_a_restart(
    coordinator: SiteIdentity, site: SiteIdentity, tmp_path: Path
) -> None:
    keys, site_hex = coordinator.public_keys(), site.site_id.hex()
    first = ActionLog(tmp_path / "agent.db")
    seven = signed(coordinator, action(site, action_id=7))
    first.receive(*seven, keys, site_hex, NOW)
    first.close()

    again = ActionLog(tmp_path / "agent.db")
    assert again.last_id == 7
    in_force = again.in_force()
    assert in_force is not None and in_force["mode"] == "capacity_off"
    for replay in (seven, signed(coordinator, action(site, action_id=6, mode="deep_sleep"))):
        with pytest.raises(ActionReplayError):
            again.receive(*replay, keys, site_hex, NOW + 1)
    assert again.in_force() == in_force
    again.receive(*signed(coordinator, tactical(site, action_id=8)), keys, site_hex, NOW + 2)
    assert again.last_id == 8
    assert [r["status"] for r in again.rows()] == ["accepted", "rejected", "rejected", "accepted"]
    again.close()


class Coordinator:
    """The coordinator's two action endpoints as docs/live-loop.md defines them, on a
    loopback HTTP server: signed site requests checked against the site's real key,
    long polls answered when an action newer than ``after`` exists, acks collected."""

    def __init__(self, site: SitePublicKeys) -> None:
        self.site = site
        self.entries: list[tuple[int, bytes, bytes]] = []
        self.acks: list[dict[str, Any]] = []
        self.polls: list[dict[str, list[str]]] = []
        self.changed = threading.Condition()
        self.closed = False
        self.ack_failures = 0  # the next acks answered 503
        self.ack_refusals = 0  # the next acks answered 422
        self.refused: list[dict[str, Any]] = []
        self.junk: list[object] = []  # malformed entries, sent once with the next answer
        self.raw_answers: list[bytes] = []  # whole answers sent instead of the next ones
        self.acks_answered = threading.Event()  # cleared: acks are held, unanswered
        self.acks_answered.set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _authentic(self, body: bytes) -> bool:
                req = parse_site_request(
                    method=self.command,
                    target=self.path,
                    body=body,
                    headers=dict(self.headers.items()),
                    window=60,
                )
                outer.site.verify_key().verify(req.signature, req.message, REQUEST_CONTEXT)
                return req.site_id == outer.site.site_id

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != "/api/v1/site/actions" or not self._authentic(b""):
                    self.send_error(404)
                    return
                query = parse_qs(url.query)
                outer.polls.append(query)
                after, wait = int(query["after"][0]), float(query["wait"][0])
                with outer.changed:
                    outer.changed.wait_for(
                        lambda: outer.closed or bool(outer.junk or outer.newer(after)),
                        timeout=wait,
                    )
                    entries: list[object] = [
                        {
                            "body_base64": base64.b64encode(b).decode(),
                            "signature_base64": base64.b64encode(s).decode(),
                        }
                        for b, s in outer.newer(after)
                    ]
                    raw = outer.raw_answers.pop(0) if outer.raw_answers else None
                    if raw is None:
                        entries, outer.junk = outer.junk + entries, []
                payload = raw or json.dumps({"actions": entries}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path != "/api/v1/site/actions/ack" or not self._authentic(body):
                    self.send_error(404)
                    return
                outer.acks_answered.wait(60)
                with outer.changed:
                    if outer.ack_failures > 0:
                        outer.ack_failures -= 1
                        self.send_error(503)
                        return
                    if outer.ack_refusals > 0:
                        outer.ack_refusals -= 1
                        outer.refused.extend(json.loads(body)["acks"])
                        self.send_error(422)
                        return
                    outer.acks.extend(json.loads(body)["acks"])
                    outer.changed.notify_all()
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def newer(self, after: int) -> list[tuple[bytes, bytes]]:
        return [(b, s) for i, b, s in self.entries if i > after]

    def add(self, action_id: int, body: bytes, signature: bytes) -> None:
        with self.changed:
            self.entries.append((action_id, body, signature))
            self.changed.notify_all()

    def wait_acks(self, count: int) -> list[dict[str, Any]]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.acks) >= count, timeout=30)
            return list(self.acks)

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()
        self.server.shutdown()
        self.server.server_close()


class Subscriber:
    """A RAN-side MQTT client that connects after the fact: it sees only retained state."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: queue.Queue[tuple[bytes, bool]] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ran-{free_port()}")
        self.client.on_message = lambda c, u, m: self.messages.put((bytes(m.payload), m.retain))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(20)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def publisher(broker: Mosquitto) -> Iterator[Callable[[str, bytes, bool], None]]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"agent-{free_port()}")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()

    def publish(topic: str, payload: bytes, retain: bool) -> None:
        info = client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=20)
        assert info.is_published()

    yield publish
    client.loop_stop()
    client.disconnect()


@pytest.mark.slow
def test_poller_accepts_publishes_retained_and_acknowledges(
    coordinator: SiteIdentity,
    site: SiteIdentity,
    broker: Mosquitto,
    publisher: Callable[[str, bytes, bool], None],
    tmp_path: Path,
) -> None:
    now = time.time()
    site_hex = site.site_id.hex()
    topic = f"fedge/v1/{site_hex}/action"
    server = Coordinator(site.public_keys())
    server.add(
        1, *signed(coordinator, action(site, action_id=1, decided_at=now, valid_until=now + 900))
    )
    server.add(
        2,
        *signed(coordinator, action(site, action_id=2, decided_at=now - 900, valid_until=now - 1)),
    )
    poller = ActionPoller(
        client=SiteClient(server.url, site),
        coordinator_keys=coordinator.public_keys(),
        site_id=site_hex,
        store_path=tmp_path / "agent.db",
        publish=publisher,
        topic=topic,
        wait_s=2,
    )
    poller.start()
    try:
        acks = server.wait_acks(2)
        assert [(a["action_id"], a["status"]) for a in acks] == [(1, "applied"), (2, "rejected")]
        assert acks[1]["reason"].startswith("ActionExpiredError")
        in_force = poller.last_action()
        assert in_force is not None and in_force["action_id"] == 1

        ran = Subscriber(broker.port, topic)
        payload, retained = ran.messages.get(timeout=20)
        ran.close()
        assert retained
        assert json.loads(payload) == in_force
        assert in_force["mode"] == "capacity_off" and in_force["source"] == "federated_forecast"

        server.add(
            3,
            *signed(
                coordinator, tactical(site, action_id=3, decided_at=now, valid_until=now + 900)
            ),
        )
        acks = server.wait_acks(3)
        assert (acks[2]["action_id"], acks[2]["status"]) == (3, "applied")
        in_force = poller.last_action()
        assert in_force is not None and in_force["kind"] == "tactical"
        # the poll moved past the refused action instead of fetching it again
        assert all(int(q["after"][0]) in (0, 2, 3) for q in server.polls)
    finally:
        assert poller.stop()
        server.close()
    assert not poller.alive
    restarted = ActionLog(tmp_path / "agent.db")
    assert restarted.last_id == 3 and restarted.cursor == 3
    assert restarted.pending_acks() == []
    restarted.close()


def test_poller_backs_off_while_the_coordinator_is_unreachable(
    coordinator: SiteIdentity, site: SiteIdentity, tmp_path: Path
) -> None:
    published: list[bytes] = []
    poller = ActionPoller(
        client=SiteClient(f"http://127.0.0.1:{free_port()}", site),
        coordinator_keys=coordinator.public_keys(),
        site_id=site.site_id.hex(),
        store_path=tmp_path / "agent.db",
        publish=lambda t, p, r: published.append(p),
        topic="fedge/v1/x/action",
        wait_s=25,
    )
    poller.backoff_min_s = 0.05
    poller.start()
    deadline = time.monotonic() + 30
    while poller.failures < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert poller.failures >= 3
    assert poller.last_error is not None and "unreachable" in poller.last_error
    assert poller.alive  # nothing escapes the thread
    assert poller.stop()
    assert not poller.alive and published == [] and poller.last_action() is None


def test_stop_abandons_a_long_poll_in_flight(
    coordinator: SiteIdentity, site: SiteIdentity, tmp_path: Path
) -> None:
    server = Coordinator(site.public_keys())
    poller = ActionPoller(
        client=SiteClient(server.url, site),
        coordinator_keys=coordinator.public_keys(),
        site_id=site.site_id.hex(),
        store_path=tmp_path / "agent.db",
        publish=lambda t, p, r: None,
        topic="a/action",
        wait_s=30,
    )
    poller.start()
    deadline = time.monotonic() + 20
    while not server.polls and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.polls, "the poller never asked"
    try:
        assert poller.stop(timeout=5.0)  # long before the 30 s poll would have answered
        assert not poller.alive
    finally:
        server.close()


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("wait_s", 31.0),
        ("wait_s", -1.0),
        ("wait_s", 0.0),
        ("wait_s", float("nan")),
        ("topic", ""),
        ("topic", "fedge/v1/+/action"),
        ("site_id", "ab" * 16),
    ],
)
def test_poller_settings_are_checked(
    setting: str, value: object, coordinator: SiteIdentity, site: SiteIdentity, tmp_path: Path
) -> None:
    kwargs: dict[str, Any] = {
        "client": SiteClient("http://127.0.0.1:1", site),
        "coordinator_keys": coordinator.public_keys(),
        "site_id": site.site_id.hex(),
        "store_path": tmp_path / "agent.db",
        "publish": lambda t, p, r: None,
        "topic": "fedge/v1/x/action",
        setting: value,
    }
    with pytest.raises(ConfigError, match=setting.split("_", maxsplit=1)[0]):
        ActionPoller(**kwargs)


def test_the_poller_checks_actions_against_the_enrolled_site_id(
    coordinator: SiteIdentity, site: SiteIdentity, tmp_path: Path
) -> None:
    for name in ("gnb-test", site.site_id.hex().upper()):
        poller = ActionPoller(
            client=SiteClient("http://127.0.0.1:1", site),
            coordinator_keys=coordinator.public_keys(),
            site_id=name,
            store_path=tmp_path / "agent.db",
            publish=lambda t, p, r: None,
            topic="fedge/v1/gnb-test/action",
        )
        assert poller.site_id == site.site_id.hex()
        assert poller.stop()


def _poller(
    server: Coordinator,
    coordinator: SiteIdentity,
    site: SiteIdentity,
    store: Path,
    publish: Callable[[str, bytes, bool], None],
) -> ActionPoller:
    poller = ActionPoller(
        client=SiteClient(server.url, site),
        coordinator_keys=coordinator.public_keys(),
        site_id=site.site_id.hex(),
        store_path=store,
        publish=publish,
        topic="fedge/v1/x/action",
        wait_s=2,
    )
    poller.backoff_min_s = 0.05
    poller.backoff_max_s = 0.2
    return poller


def _until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, "the poller never got there"
        time.sleep(0.02)


def test_acks_are_kept_until_the_coordinator_confirms_them(
    coordinator: SiteIdentity, site: SiteIdentity, tmp_path: Path
) -> None:
    now = time.time()
    server = Coordinator(site.public_keys())
    server.ack_failures = 10**6
    server.add(1, *signed(coordinator, action(site, decided_at=now, valid_until=now + 900)))
    published: list[bytes] = []
    store = tmp_path / "agent.db"
    first = _poller(server, coordinator, site, store, lambda t, p, r: published.append(p))
    first.start()
    try:
        _until(lambda: first.failures >= 2)
        assert first.last_error is not None and "503" in first.last_error
    finally:
        assert first.stop()
    log = ActionLog(store)
    assert [(a.action_id, a.status) for a in log.pending_acks()] == [(1, "applied")]
    log.close()

    server.ack_failures = 0
    second = _poller(server, coordinator, site, store, lambda t, p, r: published.append(p))
    second.start()
    try:
        acks = server.wait_acks(1)
    finally:
        assert second.stop()
        server.close()
    assert [(a["action_id"], a["status"]) for a in acks] == [(1, "applied")]
    assert len(published) == 1  # the restart acknowledged it without publishing it again
    log = ActionLog(store)
    assert log.pending_acks() == [] and log.last_id == 1
    log.close()


def test_an_action_is_acknowledged_only_once_it_reached_the_broker(
    coordinator: SiteIdentity, site: SiteIdentity, tmp_path: Path
) -> None:
    now = time.time()
    server = Coordinator(site.public_keys())
    server.add(
        4, *signed(coordinator, action(site, action_id=4, decided_at=now, valid_until=now + 900))
    )
    attempts: list[float] = []
    delivered: list[tuple[str, bytes, bool, float]] = []

    def publish(topic: str, payload: bytes, retain: bool) -> None:
        attempts.append(time.time())
        if len(attempts) < 3:
            raise BrokerError("the broker is away")
        delivered.append((topic, payload, retain, time.time()))

    poller = _poller(server, coordinator, site, tmp_path / "agent.db", publish)
    poller.start()
    try:
        acks = server.wait_acks(1)
    finally:
        assert poller.stop()
        server.close()
    assert len(attempts) == 3 and len(delivered) == 1
    topic, payload, retain, at = delivered[0]
    assert (topic, retain) == ("fedge/v1/x/action", True)
    assert json.loads(payload)["action_id"] == 4
    assert [(a["action_id"], a["status"]) for a in acks] == [(4, "applied")]
    assert acks[0]["at"] >= at


def test_malformed_answers_and_entries_are_survived_and_recorded(
    coordinator: SiteIdentity, site: SiteIdentity, tmp_path: Path
) -> None:
    now = time.time()
    server = Coordinator(site.public_keys())
    server.raw_answers = [b"<html>busy</html>", b'{"actions": 3}']
    server.junk = [
        "not an object",
        {"body_base64": "!!not base64!!", "signature_base64": "AA=="},
        {"body_base64": 5, "signature_base64": "AA=="},
    ]
    server.add(
        2, *signed(coordinator, tactical(site, action_id=2, decided_at=now, valid_until=now + 900))
    )
    published: list[bytes] = []
    poller = _poller(
        server, coordinator, site, tmp_path / "agent.db", lambda t, p, r: published.append(p)
    )
    poller.start()
    try:
        acks = server.wait_acks(1)
        assert poller.alive
    finally:
        assert poller.stop()
        server.close()
    assert server.raw_answers == [] and server.junk == []
    assert [(a["action_id"], a["status"]) for a in acks] == [(2, "applied")]
    assert len(published) == 1
    log = ActionLog(tmp_path / "agent.db")
    rows = log.rows()
    log.close()
    assert [(r["status"], r["error"], r["action_id"]) for r in rows] == [
        ("rejected", "ActionFormatError", None),
        ("rejected", "ActionFormatError", None),
        ("rejected", "ActionFormatError", None),
        ("accepted", None, 2),
    ]


def test_acks_refused_as_malformed_are_not_sent_forever(
    coordinator: SiteIdentity, site: SiteIdentity, tmp_path: Path
) -> None:
    now = time.time()
    server = Coordinator(site.public_keys())
    server.ack_refusals = 1
    server.add(1, *signed(coordinator, action(site, decided_at=now, valid_until=now + 900)))
    poller = _poller(server, coordinator, site, tmp_path / "agent.db", lambda t, p, r: None)
    poller.start()
    try:
        _until(lambda: bool(server.refused))
        server.add(
            2,
            *signed(
                coordinator,
                action(site, action_id=2, mode="active", decided_at=now, valid_until=now + 900),
            ),
        )
        acks = server.wait_acks(1)
    finally:
        assert poller.stop()
        server.close()
    assert [a["action_id"] for a in server.refused] == [1]
    assert [(a["action_id"], a["status"]) for a in acks] == [(2, "applied")]


def test_the_same_nameless_junk_is_recorded_once(
    coordinator: SiteIdentity, site: SiteIdentity, tmp_path: Path
) -> None:
    keys, site_hex = coordinator.public_keys(), site.site_id.hex()
    log = ActionLog(tmp_path / "agent.db")
    junk = signed(coordinator, b"not json")
    for _ in range(3):
        with pytest.raises(ActionFormatError):
            log.receive(*junk, keys, site_hex, NOW)
    with pytest.raises(ActionFormatError):
        log.receive(*signed(coordinator, b"[]"), keys, site_hex, NOW)
    rows = log.rows()
    assert len(rows) == 2 and rows[0]["reason"] != rows[1]["reason"]
    assert log.pending_acks() == []  # nothing the coordinator could match an ack to
    log.close()


def test_an_unusable_store_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError):
        ActionLog(tmp_path / "file" / "agent.db")
    with pytest.raises(StoreError):
        ActionLog(tmp_path)  # a directory
    (tmp_path / "text").write_text("no database, only text " * 100)
    with pytest.raises(StoreError):
        ActionLog(tmp_path / "text")


def test_a_damaged_action_log_is_a_store_error(
    coordinator: SiteIdentity, site: SiteIdentity, tmp_path: Path
) -> None:
    import sqlite3

    log = ActionLog(tmp_path / "agent.db")
    log.receive(*signed(coordinator, action(site)), coordinator.public_keys(),
                site.site_id.hex(), NOW)  # fmt: skip
    log.close()
    with sqlite3.connect(tmp_path / "agent.db") as db:
        db.execute("UPDATE actions SET payload = '{not json'")
    with pytest.raises(StoreError, match="action log"):
        ActionLog(tmp_path / "agent.db")


def test_a_refused_ack_batch_is_retried_one_by_one(
    coordinator: SiteIdentity, site: SiteIdentity, tmp_path: Path
) -> None:
    now = time.time()
    server = Coordinator(site.public_keys())
    server.ack_refusals = 2  # the batch, then its first ack alone
    server.add(1, *signed(coordinator, action(site, decided_at=now, valid_until=now + 900)))
    server.add(2, *signed(coordinator, action(site, action_id=2, valid_until=now - 1)))
    poller = _poller(server, coordinator, site, tmp_path / "agent.db", lambda t, p, r: None)
    poller.start()
    try:
        acks = server.wait_acks(1)
    finally:
        assert poller.stop()
        server.close()
    assert [a["action_id"] for a in server.refused] == [1, 2, 1]
    assert [(a["action_id"], a["status"]) for a in acks] == [(2, "rejected")]


@pytest.fixture
def real_coordinator(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """The coordinator app served by uvicorn, deciding every second from its policies."""
    import uvicorn

    from fedge.coordinator import CoordinatorSettings
    from fedge.coordinator.api import create_app
    from fedge.security import save_identity
    from tests.coordinator.policies import write_policies

    root = tmp_path / "coordinator"
    root.mkdir()
    save_identity(root / "coordinator.key", SiteIdentity.generate(), b"fedge-dev-kek", log2_n=10)
    write_policies(root / "policies")
    settings = CoordinatorSettings(
        database_url=f"sqlite:///{root / 'c.db'}",
        model_store=root / "models",
        identity_file=root / "coordinator.key",
        policy_dir=root / "policies",
        strategic_interval_seconds=1.0,
        tactical_interval_seconds=1.0,
    )
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _until(lambda: server.started or not thread.is_alive())
    assert server.started, "the coordinator did not start"
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.mark.slow
def test_poller_against_the_real_coordinator(
    real_coordinator: tuple[str, Any],
    broker: Mosquitto,
    publisher: Callable[[str, bytes, bool], None],
    tmp_path: Path,
) -> None:
    from fedge.coordinator import DEV_ADMIN_KEY
    from fedge.core import CoordinatorClient
    from fedge.security import enrollment_request, prove_possession

    url, _ = real_coordinator
    admin = CoordinatorClient(url, api_key=DEV_ADMIN_KEY)
    authority = SitePublicKeys.from_bytes(
        base64.b64decode(admin.get_json("/api/v1/enrollment/authority")["public_keys_base64"])
    )
    site = SiteIdentity.generate()
    token = admin.post_json("/api/v1/enrollment/tokens", {"ttl_seconds": 600})["token"]
    request = enrollment_request(site, token, authority)
    begun = admin.post_json(
        "/api/v1/enrollment/begin", {"request_base64": base64.b64encode(request).decode()}
    )
    proof = prove_possession(site, base64.b64decode(begun["challenge_base64"]))
    admin.post_json(
        "/api/v1/enrollment/complete",
        {"site_id": site.site_id.hex(), "proof_base64": base64.b64encode(proof).decode(),
         "archetype": "urban", "region": "north"},
    )  # fmt: skip

    topic = "fedge/v1/gnb-test/action"
    poller = ActionPoller(client=SiteClient(url, site), coordinator_keys=authority,
                          site_id="gnb-test", store_path=tmp_path / "agent.db",
                          publish=publisher, topic=topic, wait_s=5)  # fmt: skip
    poller.start()

    def applied() -> list[dict[str, Any]]:
        rows = admin.get_json(f"/api/v1/actions?site_id={site.site_id.hex()}")
        return [r for r in rows if r["ack_status"] == "applied"]

    try:
        _until(lambda: {r["kind"] for r in applied()} == {"strategic", "tactical"})
    finally:
        assert poller.stop()
    done = applied()
    assert all(r["ack_reason"] is None and r["acked_at"] is not None for r in done)
    in_force = poller.last_action()
    assert in_force is not None
    ran = Subscriber(broker.port, topic)
    payload, retained = ran.messages.get(timeout=20)
    ran.close()
    assert retained and json.loads(payload) == in_force
    log = ActionLog(tmp_path / "agent.db")
    rows = log.rows()
    assert all(r["status"] == "accepted" for r in rows)
    assert log.last_id == in_force["action_id"] == max(int(str(r["action_id"])) for r in rows)
    # every accepted action is acknowledged applied, or its ack is still owed (stop() may
    # abandon the ack in flight; the next start sends it)
    owed = {a.action_id for a in log.pending_acks()}
    assert {r["action_id"] for r in rows} == {r["id"] for r in applied()} | owed
    log.close()


def test_one_ack_per_action_however_often_it_came(
    coordinator: SiteIdentity, site: SiteIdentity, tmp_path: Path
) -> None:
    keys, site_hex = coordinator.public_keys(), site.site_id.hex()
    log = ActionLog(tmp_path / "agent.db")
    with pytest.raises(ActionExpiredError):
        log.receive(*signed(coordinator, action(site, action_id=3, valid_until=NOW - 1)),
                    keys, site_hex, NOW)  # fmt: skip
    with pytest.raises(ActionFormatError):  # the same id again, refused for another reason
        log.receive(*signed(coordinator, action(site, action_id=3, mode="turbo")),
                    keys, site_hex, NOW)  # fmt: skip
    with pytest.raises(ActionSiteError):
        log.receive(*signed(coordinator, action(site, action_id=4, site_id="cd" * 16)), keys,
                    site_hex, NOW)  # fmt: skip
    acks = log.pending_acks()
    assert [(a.action_id, a.status, len(a.seqs)) for a in acks] == [
        (3, "rejected", 2),
        (4, "rejected", 1),
    ]
    assert [a.action_id for a in log.pending_acks(limit=1)] == [3]
    log.mark_acked([q for a in acks for q in a.seqs], NOW)
    assert log.pending_acks() == []
    assert log.cursor == 4 and log.last_id == 0 and log.in_force() is None
    log.close()


def test_an_unsigned_id_does_not_move_the_poll_on(
    coordinator: SiteIdentity, site: SiteIdentity, tmp_path: Path
) -> None:
    keys, site_hex = coordinator.public_keys(), site.site_id.hex()
    log = ActionLog(tmp_path / "agent.db")
    forged = signed(SiteIdentity.generate(), action(site, action_id=2**62))
    for _ in range(2):  # sent again: recorded once
        with pytest.raises(ActionSignatureError):
            log.receive(*forged, keys, site_hex, NOW)
    assert log.cursor == 0
    assert [(r["action_id"], r["error"]) for r in log.rows()] == [(2**62, "ActionSignatureError")]
    assert [a.action_id for a in log.pending_acks()] == [2**62]  # named in its ack
    with pytest.raises(ActionExpiredError):
        log.receive(*signed(coordinator, action(site, action_id=3, valid_until=NOW - 1)),
                    keys, site_hex, NOW)  # fmt: skip
    assert log.cursor == 3
    log.close()
    reopened = ActionLog(tmp_path / "agent.db")
    assert reopened.cursor == 3
    reopened.close()


def test_the_poll_goes_on_while_an_ack_is_unanswered(
    coordinator: SiteIdentity, site: SiteIdentity, tmp_path: Path
) -> None:
    """A tactical action stored a second after the strategic one reaches the agent while
    the strategic one's ack is still in flight: acks do not hold the poll back."""
    now = time.time()
    server = Coordinator(site.public_keys())
    server.acks_answered.clear()
    published: list[bytes] = []
    poller = _poller(
        server, coordinator, site, tmp_path / "agent.db", lambda t, p, r: published.append(p)
    )
    server.add(1, *signed(coordinator, action(site, decided_at=now, valid_until=now + 900)))
    poller.start()
    try:
        _until(lambda: len(published) == 1)
        server.add(
            2,
            *signed(
                coordinator,
                action(site, action_id=2, mode="active", decided_at=now, valid_until=now + 900),
            ),
        )
        _until(lambda: len(published) == 2)
        assert server.acks == []  # the first ack is still unanswered
        server.acks_answered.set()
        acks = server.wait_acks(2)
    finally:
        assert poller.stop()
        server.close()
    assert [json.loads(p)["action_id"] for p in published] == [1, 2]
    assert sorted((a["action_id"], a["status"]) for a in acks) == [(1, "applied"), (2, "applied")]
    assert poller.failures == 0 and poller.last_error is None
