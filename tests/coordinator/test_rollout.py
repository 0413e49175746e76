"""Staged rollout: canaries get a promoted version first, their verdicts decide whether
the rest follow or the fleet goes back; real enrolled sites, signed requests, SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from fedge.coordinator import Coordinator, CoordinatorSettings, Role, sign_request
from fedge.coordinator._rollout import RolloutState
from fedge.coordinator.api import create_app
from fedge.security import SiteIdentity
from tests.coordinator.helpers import ADMIN, Fleet

MODEL = "/api/v1/site/model"
VERDICT = "/api/v1/site/model/verdict"

Start = Callable[..., tuple[Fleet, list[SiteIdentity]]]


@pytest.fixture
def start(settings: CoordinatorSettings) -> Iterator[Start]:
    """A coordinator with rollout settings of the test's choosing and ``n`` enrolled sites."""
    clients: list[TestClient] = []

    def make(n: int, **rollout: object) -> tuple[Fleet, list[SiteIdentity]]:
        client = TestClient(create_app(settings.model_copy(update=rollout)))
        client.__enter__()
        clients.append(client)
        fleet = Fleet.with_roles(client, list(Role))
        return fleet, [fleet.enroll() for _ in range(n)]

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def coordinator(fleet: Fleet) -> Coordinator:
    found: Coordinator = fleet.client.app.state.coordinator  # type: ignore[attr-defined]
    return found


def fetch(fleet: Fleet, site: SiteIdentity, have: str | None = None) -> httpx.Response:
    path = MODEL if have is None else f"{MODEL}?have={have}"
    answer: httpx.Response = fleet.client.get(path, headers=sign_request(site, "GET", path))
    return answer


def verdict(fleet: Fleet, site: SiteIdentity, body: dict[str, Any] | bytes) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {**sign_request(site, "POST", VERDICT, raw), "Content-Type": "application/json"}
    answer: httpx.Response = fleet.client.post(VERDICT, content=raw, headers=headers)
    return answer


def report(version: str, accepted: bool, **extra: object) -> dict[str, Any]:
    return {
        "version": version,
        "accepted": accepted,
        "reason": None if accepted else "candidate worse than serving",
        "candidate_score": 0.041,
        "serving_score": 0.043,
        "windows": 120,
        **extra,
    }


def promote(fleet: Fleet, tag: str) -> int:
    model_id = fleet.upload(tag)
    answer = fleet.client.post(f"/api/v1/models/{model_id}/promote", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return model_id


def newest(fleet: Fleet) -> dict[str, Any]:
    listed = fleet.client.get("/api/v1/rollouts", headers=fleet.as_(Role.VIEWER))
    assert listed.status_code == 200, listed.text
    answer = fleet.client.get(
        f"/api/v1/rollouts/{listed.json()[0]['id']}", headers=fleet.as_(Role.VIEWER)
    )
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def split(
    rollout: dict[str, Any], sites: list[SiteIdentity]
) -> tuple[list[SiteIdentity], list[SiteIdentity]]:
    roles = {s["site_id"]: s["role"] for s in rollout["sites"]}
    canaries = [s for s in sites if roles[s.site_id.hex()] == "canary"]
    return canaries, [s for s in sites if roles[s.site_id.hex()] == "rest"]


def served(fleet: Fleet, site: SiteIdentity) -> str:
    answer = fetch(fleet, site)
    assert answer.status_code == 200, answer.text
    version: str = answer.headers["X-Fedge-Model-Version"]
    return version


def audited(fleet: Fleet, prefix: str) -> list[dict[str, Any]]:
    entries = fleet.client.get("/api/v1/audit?limit=1000", headers=ADMIN).json()
    return [e for e in entries if e["action"].startswith(prefix)]


def test_canaries_get_the_new_version_and_the_rest_the_previous(start: Start) -> None:
    fleet, sites = start(5)
    assert fetch(fleet, sites[0]).status_code == 404  # nothing promoted yet
    first = promote(fleet, "first")
    # nothing to compare with or go back to: the first version goes to every site at once
    initial = newest(fleet)
    assert initial["state"] == "fleet" and initial["canaries"] == 0
    assert {served(fleet, s) for s in sites} == {f"v{first}"}

    second = promote(fleet, "second")
    rollout = newest(fleet)
    assert rollout["state"] == "canary" and rollout["previous_model_id"] == first
    assert rollout["version"] == f"v{second}" and rollout["canaries"] == 1  # ceil(0.2 x 5)
    assert fleet.client.get(f"/api/v1/rollouts/{initial['id']}", headers=ADMIN).json()["state"] == (
        "superseded"
    )
    canaries, rest = split(rollout, sites)
    assert len(canaries) == 1 and len(rest) == 4
    assert served(fleet, canaries[0]) == f"v{second}"
    assert {served(fleet, s) for s in rest} == {f"v{first}"}
    # the version a site has is not sent again
    again = fetch(fleet, canaries[0], have=f"v{second}")
    assert again.status_code == 304 and again.headers["X-Fedge-Model-Version"] == f"v{second}"
    assert fetch(fleet, rest[0], have=f"v{first}").status_code == 304
    assert fetch(fleet, rest[0], have=f"v{second}").status_code == 200  # not its version
    assert fetch(fleet, rest[0], have="latest").status_code == 422
    assert fetch(fleet, rest[0], have="").status_code == 200  # has none yet
    delivered = {s["site_id"]: s["delivered_at"] for s in newest(fleet)["sites"]}
    assert delivered[canaries[0].site_id.hex()] is not None
    assert all(delivered[s.site_id.hex()] is None for s in rest)  # they got the previous one
    assert fleet.client.get("/api/v1/rollouts/999", headers=ADMIN).status_code == 404
    assert fleet.client.get("/api/v1/rollouts/0", headers=ADMIN).status_code == 422
    assert fleet.client.get("/api/v1/rollouts?limit=0", headers=ADMIN).status_code == 422
    assert (
        fleet.client.get("/api/v1/rollouts?limit=1", headers=ADMIN).json()[0]["id"] == rollout["id"]
    )
    assert fleet.client.get("/api/v1/rollouts").status_code == 401


def test_a_rejecting_canary_rolls_the_whole_fleet_back(start: Start) -> None:
    fleet, sites = start(4)
    first = promote(fleet, "first")
    second = promote(fleet, "second")
    canaries, rest = split(newest(fleet), sites)
    assert verdict(fleet, canaries[0], report(f"v{second}", False)).status_code == 204

    rollout = newest(fleet)
    assert rollout["state"] == "rolled_back" and "1 of 1 canaries rejected" in rollout["reason"]
    models = {
        m["id"]: m["status"] for m in fleet.client.get("/api/v1/models", headers=ADMIN).json()
    }
    assert models == {first: "production", second: "retired"}
    assert {served(fleet, s) for s in sites} == {f"v{first}"}  # the canary goes back too
    rolled = audited(fleet, "rollout.rolled_back")
    assert len(rolled) == 1 and "rejected" in rolled[0]["detail"]
    assert any(e["target"] == f"model:{first}" for e in audited(fleet, "model.rollback"))
    assert [e["action"] for e in audited(fleet, "rollout.verdict")] == ["rollout.verdict"]
    # a verdict on the rolled-back version is no longer for the version assigned
    late = verdict(fleet, rest[0], report(f"v{second}", True))
    assert late.status_code == 409 and "not the version assigned" in late.json()["detail"]


def test_accepting_canaries_take_it_to_the_fleet_then_completed(start: Start) -> None:
    fleet, sites = start(6, rollout_canary_share=0.3)
    first = promote(fleet, "first")
    second = promote(fleet, "second")
    canaries, rest = split(newest(fleet), sites)
    assert len(canaries) == 2  # ceil(0.3 x 6)
    assert verdict(fleet, canaries[0], report(f"v{second}", True)).status_code == 204
    assert newest(fleet)["state"] == "canary"  # one canary is still out
    assert {served(fleet, s) for s in rest} == {f"v{first}"}
    assert verdict(fleet, canaries[1], report(f"v{second}", True)).status_code == 204

    rollout = newest(fleet)
    assert rollout["state"] == "fleet" and "every canary reported" in rollout["reason"]
    assert all(s["assigned_at"] is not None for s in rollout["sites"])
    assert {served(fleet, s) for s in sites} == {f"v{second}"}
    for site in rest[:-1]:
        assert verdict(fleet, site, report(f"v{second}", True)).status_code == 204
    assert newest(fleet)["state"] == "fleet"
    assert verdict(fleet, rest[-1], report(f"v{second}", True)).status_code == 204
    done = newest(fleet)
    assert done["state"] == "completed" and done["accepted"] == 6 and done["delivered"] == 6
    assert [e["action"] for e in audited(fleet, "rollout.")].count("rollout.fleet") == 1
    assert len(audited(fleet, "rollout.completed")) == 1
    models = fleet.client.get(f"/api/v1/models/{second}", headers=ADMIN).json()
    assert models["status"] == "production"


def test_bad_verdicts_are_refused_and_what_was_accepted_stays(start: Start) -> None:
    fleet, sites = start(10)
    first = promote(fleet, "first")
    second = promote(fleet, "second")
    canaries, rest = split(newest(fleet), sites)
    assert len(canaries) == 2
    good, other = canaries
    assert verdict(fleet, good, report(f"v{second}", True)).status_code == 204
    base = report(f"v{second}", True)
    infinite = f'{{"version": "v{second}", "accepted": true, "candidate_score": Infinity}}'
    bad: dict[str, bytes | dict[str, Any]] = {
        "accepted not a bool": {**base, "accepted": "yes"},
        "version not a string": {**base, "version": second},
        "version not a name": {**base, "version": "latest"},
        "negative score": {**base, "candidate_score": -1.0},
        "NaN score": json.dumps({**base, "serving_score": float("nan")}).encode(),
        "infinite score": infinite.encode(),
        "oversized reason": {**base, "reason": "r" * 501},
        "unknown field": {**base, "extra": 1},
        "negative windows": {**base, "windows": -1},
        "too many windows": {**base, "windows": 10**9},
        "score out of bounds": {**base, "serving_score": 1e13},
        "windows not an integer": {**base, "windows": 1.5},
        "missing verdict": {"version": f"v{second}"},
        "not JSON": b"accepted",
    }
    for name, body in bad.items():
        answer = verdict(fleet, other, body)
        assert answer.status_code == 422, (name, answer.text)
    unknown = verdict(fleet, other, report("v999", False))
    assert unknown.status_code == 409 and "not the version assigned" in unknown.json()["detail"]
    previous = verdict(fleet, other, report(f"v{first}", True))  # assigned, but not under rollout
    assert previous.status_code == 409
    not_a_canary = verdict(fleet, rest[0], report(f"v{second}", False))
    assert not_a_canary.status_code == 409 and f"(v{first})" in not_a_canary.json()["detail"]
    changed = verdict(fleet, good, report(f"v{second}", False))
    assert changed.status_code == 409 and "already recorded" in changed.json()["detail"]
    assert verdict(fleet, good, report(f"v{second}", True)).status_code == 204  # a re-send

    rollout = newest(fleet)
    verdicts = {s["site_id"]: s["verdict"] for s in rollout["sites"]}
    assert verdicts[good.site_id.hex()] == "accepted"
    assert [v for v in verdicts.values() if v is not None] == ["accepted"]
    assert rollout["state"] == "canary" and rollout["rejected"] == 0
    assert verdict(fleet, other, report(f"v{second}", True)).status_code == 204
    assert newest(fleet)["state"] == "fleet"


def test_timeouts_advance_the_rollout_without_any_site_calling(start: Start) -> None:
    fleet, sites = start(3)
    promote(fleet, "first")
    second = promote(fleet, "second")
    rollouts = coordinator(fleet).rollouts
    started = newest(fleet)
    assert rollouts.check(now=started["started_at"] + 599) is RolloutState.CANARY
    assert rollouts.check(now=started["started_at"] + 600) is RolloutState.FLEET
    assert "canary timeout: 0 of 1 accepted" in newest(fleet)["reason"]
    assert {served(fleet, s) for s in sites} == {f"v{second}"}
    fleet_since = newest(fleet)["updated_at"]
    assert rollouts.check(now=fleet_since + 3599) is RolloutState.FLEET
    assert rollouts.check(now=fleet_since + 3600) is RolloutState.COMPLETED
    assert "fleet timeout: 0 of 3 sites accepted" in newest(fleet)["reason"]


def test_the_background_check_fires_the_canary_timeout(start: Start) -> None:
    fleet, _ = start(2, rollout_canary_timeout_seconds=0.2, rollout_check_seconds=0.05)
    promote(fleet, "first")
    promote(fleet, "second")
    deadline = time.monotonic() + 30
    while newest(fleet)["state"] == "canary" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert newest(fleet)["state"] == "fleet"


def test_a_new_promotion_supersedes_the_running_rollout(start: Start) -> None:
    fleet, sites = start(5)
    first = promote(fleet, "first")
    second = promote(fleet, "second")
    canary_phase = newest(fleet)
    third = promote(fleet, "third")
    rollout = newest(fleet)
    assert rollout["version"] == f"v{third}" and rollout["state"] == "canary"
    # the fleet still ran the first version: that is what the third is compared with
    assert rollout["previous_model_id"] == first
    old = fleet.client.get(f"/api/v1/rollouts/{canary_phase['id']}", headers=ADMIN).json()
    assert old["state"] == "superseded" and f"v{third}" in old["reason"]
    canaries, rest = split(rollout, sites)
    assert {served(fleet, s) for s in rest} == {f"v{first}"}
    assert verdict(fleet, canaries[0], report(f"v{third}", False)).status_code == 204
    models = {
        m["id"]: m["status"] for m in fleet.client.get("/api/v1/models", headers=ADMIN).json()
    }
    assert models == {first: "production", second: "retired", third: "retired"}


def test_an_operator_rollback_ends_the_running_rollout(start: Start) -> None:
    fleet, sites = start(3)
    first = promote(fleet, "first")
    promote(fleet, "second")
    back = fleet.client.post("/api/v1/models/rollback", headers=ADMIN)
    assert back.status_code == 200 and back.json()["id"] == first
    rollout = newest(fleet)
    assert rollout["state"] == "rolled_back" and rollout["reason"] == "operator rollback"
    assert {served(fleet, s) for s in sites} == {f"v{first}"}
    ended = audited(fleet, "rollout.rolled_back")
    assert [e["actor"] for e in ended] == ["operator:bootstrap-admin"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("rollout_canary_share", 0),
        ("rollout_canary_share", 1.5),
        ("rollout_canary_share", float("nan")),
        ("rollout_canary_timeout_seconds", 0),
        ("rollout_canary_timeout_seconds", float("inf")),
        ("rollout_max_reject_share", -0.1),
        ("rollout_max_reject_share", 1),
        ("rollout_max_error_increase", -1),
        ("rollout_max_error_increase", float("nan")),
        ("rollout_fleet_timeout_seconds", -5),
        ("rollout_check_seconds", 0),
        ("rollout_check_seconds", "often"),
    ],
)
def test_bad_rollout_settings_are_refused(name: str, value: object) -> None:
    from fedge.coordinator import SettingsError, load_settings

    with pytest.raises(SettingsError, match=name):
        load_settings(**{name: value})


def test_rollout_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedge.coordinator import load_settings

    monkeypatch.setenv("FEDGE_COORDINATOR_ROLLOUT_CANARY_SHARE", "0.5")
    monkeypatch.setenv("FEDGE_COORDINATOR_ROLLOUT_MAX_REJECT_SHARE", "0")
    settings = load_settings()
    assert (settings.rollout_canary_share, settings.rollout_max_reject_share) == (0.5, 0.0)
    assert settings.rollout_canary_timeout_seconds == 600.0


def health(fleet: Fleet, site: SiteIdentity, version: str, rmse: float) -> None:
    from fedge.core import TARGET_KPIS

    now = time.time()
    body = {
        "sent_at": now,
        "model_version": version,
        "store_bytes": 1024,
        "alerts": {"warning": 0, "critical": 0},
        "last_kpi_at": now,
        "supernode": "running",
        "backlog": 0,
        "errors": [
            {"cell": "c0", "horizon_steps": 1, "target": TARGET_KPIS[0], "count": 288,
             "mae": rmse / 2, "rmse": rmse, "bias": 0.0},
            {"cell": "c0", "horizon_steps": 3, "target": TARGET_KPIS[0], "count": 288,
             "mae": 1.0, "rmse": 9.0, "bias": 0.0},  # a longer horizon: not compared
        ],
    }  # fmt: skip
    raw = json.dumps(body).encode()
    path = "/api/v1/site/health"
    headers = {**sign_request(site, "POST", path, raw), "Content-Type": "application/json"}
    answer = fleet.client.post(path, content=raw, headers=headers)
    assert answer.status_code == 204, answer.text


@pytest.mark.parametrize(("after", "state"), [(0.06, "rolled_back"), (0.042, "fleet")])
def test_a_canary_whose_forecast_error_grew_rolls_the_fleet_back(
    start: Start, after: float, state: str
) -> None:
    fleet, sites = start(3)
    first = promote(fleet, "first")
    second = promote(fleet, "second")
    canaries, _ = split(newest(fleet), sites)
    health(fleet, canaries[0], f"v{first}", 0.04)
    assert served(fleet, canaries[0]) == f"v{second}"
    health(fleet, canaries[0], f"v{second}", after)
    # the shadow gate accepted it, but the error it reports since says otherwise (or not)
    assert verdict(fleet, canaries[0], report(f"v{second}", True)).status_code == 204
    rollout = newest(fleet)
    assert rollout["state"] == state, rollout["reason"]
    canary = next(s for s in rollout["sites"] if s["role"] == "canary")
    assert (canary["error_before"], canary["error_after"]) == (0.04, after)
    if state == "rolled_back":
        assert "forecast error grew by 50.0%" in rollout["reason"]
        assert {served(fleet, s) for s in sites} == {f"v{first}"}


def test_concurrent_promotions_leave_one_running_rollout(start: Start) -> None:
    from concurrent.futures import ThreadPoolExecutor

    fleet, _ = start(3)
    promote(fleet, "first")
    candidates = [fleet.upload(f"race-{i}") for i in range(5)]

    def attempt(model_id: int) -> int:
        status: int = fleet.client.post(
            f"/api/v1/models/{model_id}/promote", headers=ADMIN
        ).status_code
        return status

    with ThreadPoolExecutor(5) as pool:
        statuses = list(pool.map(attempt, candidates))
    assert set(statuses) <= {200, 409} and 200 in statuses
    rollouts = fleet.client.get("/api/v1/rollouts", headers=ADMIN).json()
    running = [r for r in rollouts if r["state"] in ("canary", "fleet")]
    production = fleet.client.get("/api/v1/models?status=production", headers=ADMIN).json()
    assert len(running) == 1 and [running[0]["model_id"]] == [m["id"] for m in production]
    assert len(rollouts) == 1 + statuses.count(200)  # one per promotion that happened


def test_a_site_offline_or_enrolled_mid_rollout_gets_the_current_assignment(
    start: Start,
) -> None:
    fleet, sites = start(3)
    first = promote(fleet, "first")
    second = promote(fleet, "second")
    canaries, rest = split(newest(fleet), sites)
    late = fleet.enroll()  # not in the rollout's sites: one of the rest
    assert served(fleet, late) == f"v{first}"
    assert verdict(fleet, late, report(f"v{second}", True)).status_code == 409
    assert verdict(fleet, canaries[0], report(f"v{second}", True)).status_code == 204
    # the rest never asked during the canary phase; they get the new version now
    assert {served(fleet, s) for s in [*rest, late]} == {f"v{second}"}
    for site in [*rest, late]:
        assert verdict(fleet, site, report(f"v{second}", True)).status_code == 204
    done = newest(fleet)
    assert done["state"] == "completed" and done["accepted"] == 4
    assert late.site_id.hex() in {s["site_id"] for s in done["sites"]}


def test_a_site_shows_its_assigned_and_served_versions(start: Start) -> None:
    fleet, sites = start(5)
    viewer = fleet.as_(Role.VIEWER)
    path = f"/api/v1/sites/{sites[0].site_id.hex()}"
    before = fleet.client.get(path, headers=viewer).json()
    assert (before["assigned_version"], before["served_version"]) == (None, None)
    first = promote(fleet, "first")
    second = promote(fleet, "second")
    canaries, rest = split(newest(fleet), sites)
    health(fleet, canaries[0], f"v{first}", 0.04)  # delivered, not yet gated
    canary = fleet.client.get(f"/api/v1/sites/{canaries[0].site_id.hex()}", headers=viewer)
    assert canary.status_code == 200, canary.text
    shown = canary.json()
    assert shown["assigned_version"] == f"v{second}"
    assert shown["served_version"] == f"v{first}" and shown["health_received_at"] > 0
    other = fleet.client.get(f"/api/v1/sites/{rest[0].site_id.hex()}", headers=viewer).json()
    assert (other["assigned_version"], other["served_version"]) == (f"v{first}", None)
    assert fleet.client.get(f"/api/v1/sites/{'ab' * 16}", headers=viewer).status_code == 404
