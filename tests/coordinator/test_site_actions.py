"""The actions long poll and acks: signed per site, bounded, idempotent, validated."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fedge.coordinator import Coordinator, CoordinatorSettings, Role
from fedge.coordinator.api import create_app
from fedge.coordinator.api.routes import site_actions
from fedge.core import sign_request
from fedge.security import SiteIdentity
from tests.coordinator.helpers import Fleet
from tests.coordinator.policies import write_policies

ACK = "/api/v1/site/actions/ack"


@dataclass
class Sites:
    client: TestClient
    fleet: Fleet
    coordinator: Coordinator
    one: SiteIdentity
    two: SiteIdentity

    def decide(self) -> list[int]:
        assert self.coordinator.live is not None
        return self.coordinator.live.tick("strategic", time.time(), slot=time.monotonic_ns())

    def poll(self, site: SiteIdentity, query: str) -> Any:
        path = f"/api/v1/site/actions?{query}"
        return self.client.get(path, headers=sign_request(site, "GET", path))

    def ack(self, site: SiteIdentity, body: object) -> Any:
        raw = json.dumps(body).encode()
        return self.client.post(ACK, content=raw, headers=sign_request(site, "POST", ACK, raw))

    def listed(self, site: SiteIdentity) -> list[dict[str, Any]]:
        answer = self.client.get(
            f"/api/v1/actions?site_id={site.site_id.hex()}", headers=self.fleet.as_(Role.VIEWER)
        )
        assert answer.status_code == 200, answer.text
        rows: list[dict[str, Any]] = answer.json()
        return rows


@pytest.fixture
def sites(settings: CoordinatorSettings, tmp_path: Path) -> Iterator[Sites]:
    write_policies(tmp_path / "policies")
    configured = settings.model_copy(update={"policy_dir": tmp_path / "policies"})
    with TestClient(create_app(configured)) as client:
        fleet = Fleet.with_roles(client, list(Role))
        coordinator: Coordinator = client.app.state.coordinator  # type: ignore[attr-defined]
        yield Sites(client, fleet, coordinator, fleet.enroll(), fleet.enroll())


def _ids(answer: Any) -> list[int]:
    assert answer.status_code == 200, answer.text
    return [
        json.loads(base64.b64decode(a["body_base64"]))["action_id"]
        for a in answer.json()["actions"]
    ]


def test_a_poll_answers_with_the_callers_newer_actions_only(sites: Sites) -> None:
    first = sites.decide()
    second = sites.decide()
    mine = [i for i in first + second if i in {a["id"] for a in sites.listed(sites.one)}]
    assert len(mine) == 2
    assert _ids(sites.poll(sites.one, "after=0")) == mine
    assert _ids(sites.poll(sites.one, f"after={mine[0]}")) == mine[1:]
    assert _ids(sites.poll(sites.one, f"after={mine[1]}&wait=0")) == []
    theirs = _ids(sites.poll(sites.two, "after=0"))
    assert len(theirs) == 2 and not set(theirs) & set(mine)


def test_a_poll_without_actions_answers_empty_when_its_wait_runs_out(sites: Sites) -> None:
    answer = sites.poll(sites.one, "after=0&wait=1")
    assert answer.status_code == 200 and answer.json() == {"actions": []}


def _waiting_poll(sites: Sites) -> tuple[threading.Thread, dict[str, Any]]:
    """Site one's poll (after=0, wait=30) in a thread, returned once it waits; its answer
    and seconds land in the dict."""
    result: dict[str, Any] = {}

    def poll() -> None:
        started = time.monotonic()
        result["answer"] = sites.poll(sites.one, "after=0&wait=30")
        result["seconds"] = time.monotonic() - started

    waiter = threading.Thread(target=poll)
    waiter.start()
    while sites.coordinator.action_notifier.waiting == 0 and waiter.is_alive():
        time.sleep(0.01)  # until the poll is waiting
    return waiter, result


def test_a_waiting_poll_answers_once_an_action_is_stored(
    sites: Sites, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the notification can wake it: its database re-check comes after its wait."""
    monkeypatch.setattr(site_actions, "RECHECK_SECONDS", 3600.0)
    waiter, result = _waiting_poll(sites)
    stored = sites.decide()
    waiter.join()
    ids = _ids(result["answer"])
    assert len(ids) == 1 and ids[0] in stored
    assert result["seconds"] < 30  # answered before its wait ran out


BAD_QUERIES = ["wait=-1", "wait=31", "wait=abc", "wait=nan", "wait=inf", "after=-1", "after=x"]


def test_bad_poll_parameters_are_422(sites: Sites) -> None:
    for query in BAD_QUERIES:
        assert sites.poll(sites.one, query).status_code == 422, query


def test_acks_are_recorded_once_and_contradictions_refused(sites: Sites) -> None:
    sites.decide()
    [action] = sites.listed(sites.one)
    ack = {"action_id": action["id"], "status": "applied", "at": 1.7e9, "reason": None}
    assert sites.ack(sites.one, {"acks": [ack]}).status_code == 204
    assert sites.ack(sites.one, {"acks": [ack]}).status_code == 204  # idempotent
    [row] = sites.listed(sites.one)
    assert (row["ack_status"], row["acked_at"], row["ack_reason"]) == ("applied", 1.7e9, None)
    rejected = {**ack, "status": "rejected", "reason": "ActionExpiredError: too late"}
    assert sites.ack(sites.one, {"acks": [rejected]}).status_code == 409
    assert sites.listed(sites.one)[0]["ack_status"] == "applied"


def test_another_sites_action_is_refused_and_nothing_is_stored(sites: Sites) -> None:
    sites.decide()
    [mine], [theirs] = sites.listed(sites.one), sites.listed(sites.two)
    acks = [
        {"action_id": mine["id"], "status": "applied", "at": 1.0},
        {"action_id": theirs["id"], "status": "applied", "at": 1.0},
    ]
    assert sites.ack(sites.one, {"acks": acks}).status_code == 404
    unknown = [{"action_id": 10**9, "status": "applied", "at": 1.0}]
    assert sites.ack(sites.one, {"acks": unknown}).status_code == 404
    assert sites.listed(sites.one)[0]["ack_status"] is None
    assert sites.listed(sites.two)[0]["ack_status"] is None


BAD_ACKS: dict[str, list[object]] = {
    "empty": [],
    "status": [{"action_id": 1, "status": "done", "at": 1.0}],
    "no at": [{"action_id": 1, "status": "applied"}],
    "id 0": [{"action_id": 0, "status": "applied", "at": 1.0}],
    "at < 0": [{"action_id": 1, "status": "applied", "at": -1.0}],
    "reason": [{"action_id": 1, "status": "rejected", "at": 1.0, "reason": "x" * 501}],
    "extra": [{"action_id": 1, "status": "applied", "at": 1.0, "extra": 1}],
    "twice": [{"action_id": 1, "status": "applied", "at": 1.0}] * 2,
    "too many": [{"action_id": i, "status": "applied", "at": 1.0} for i in range(1, 258)],
}


def test_bad_ack_bodies_are_422_and_store_nothing(sites: Sites) -> None:
    sites.decide()
    for name, acks in BAD_ACKS.items():
        answer = sites.ack(sites.one, {"acks": acks})
        assert answer.status_code == 422, (name, answer.text)
    assert sites.ack(sites.one, {"nope": []}).status_code == 422
    assert all(a["ack_status"] is None for a in sites.listed(sites.one))


def test_unsigned_polls_and_acks_are_refused(sites: Sites) -> None:
    assert sites.client.get("/api/v1/site/actions").status_code == 401
    assert sites.client.post(ACK, json={"acks": []}).status_code == 401
    assert sites.client.get("/api/v1/actions").status_code == 401


def test_a_poll_on_another_worker_finds_the_action(sites: Sites) -> None:
    """Two apps on one database stand for two worker processes: the action is stored
    through the first while the site waits on the second, which nobody notifies."""
    with TestClient(create_app(sites.coordinator.settings)) as other:
        result: dict[str, Any] = {}
        path = "/api/v1/site/actions?after=0&wait=30"

        def poll() -> None:
            result["answer"] = other.get(path, headers=sign_request(sites.one, "GET", path))

        waiter = threading.Thread(target=poll)
        waiter.start()
        notifier = other.app.state.coordinator.action_notifier  # type: ignore[attr-defined]
        while notifier.waiting == 0 and waiter.is_alive():
            time.sleep(0.01)
        stored = sites.decide()
        waiter.join()
        ids = _ids(result["answer"])
        assert len(ids) == 1 and ids[0] in stored


def test_a_stopping_process_answers_its_waiting_polls_at_once(sites: Sites) -> None:
    """The server waits for requests in flight before it stops: a poll must not hold it."""
    from fedge.coordinator._actions import stop_waiting_polls

    waiter, result = _waiting_poll(sites)
    stop_waiting_polls()
    waiter.join(10)
    assert not waiter.is_alive() and _ids(result["answer"]) == []
    assert result["seconds"] < 5
    started = time.monotonic()  # and a poll that comes in while it stops does not wait
    assert _ids(sites.poll(sites.one, "after=0&wait=30")) == []
    assert time.monotonic() - started < 5
