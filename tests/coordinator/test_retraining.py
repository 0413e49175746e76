"""The retraining policy (both databases): settings refused when bad; drift measured from
the sites' health reports and a run started when it passes the threshold (and not while a
run is live, nor too soon after the last); the schedule; lineage and automatic promotion
of a run's model by its held-out evaluation."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fedge.coordinator import CoordinatorSettings, Role, SettingsError, sign_request
from fedge.coordinator._retraining import RetrainingPolicy, Trigger, parse_run_request
from fedge.coordinator._runs import RUN_TOKEN_HEADER
from fedge.coordinator._schema import RunCreate
from fedge.coordinator._settings import load_settings
from fedge.coordinator.api import create_app
from fedge.security import SiteIdentity
from tests.coordinator.helpers import ADMIN, Fleet, onnx_model

HEALTH = "/api/v1/site/health"


# --- settings -----------------------------------------------------------------------------

BAD_SETTINGS: dict[str, dict[str, Any]] = {
    "negative grace": {"rotation_grace_seconds": -1},
    "grace over 90 days": {"rotation_grace_seconds": 91 * 86400},
    "negative interval": {"retrain_interval_seconds": -5},
    "negative drift check": {"drift_check_seconds": -1},
    "zero threshold": {"drift_threshold": 0},
    "no sites": {"drift_min_sites": 0},
    "negative min interval": {"retrain_min_interval_seconds": -1},
    "empty metric": {"promote_metric": ""},
    "enabled without superlink": {"retrain_enabled": True, "retrain_interval_seconds": 60},
    "enabled without a trigger": {"retrain_enabled": True, "superlink": "127.0.0.1:9"},
    "run config not JSON or TOML": {"retrain_run_config": "{num_rounds: 3"},
    "run config not an object": {"retrain_run_config": "[1, 2]"},
    "run config with zero rounds": {"retrain_run_config": '{"num_rounds": 0}'},
    "run config with a bad field": {"retrain_run_config": "num_rounds = 'three'"},
}


@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_bad_retraining_settings_are_refused(case: str) -> None:
    with pytest.raises(SettingsError):
        load_settings(**BAD_SETTINGS[case])


def test_a_run_config_is_json_or_toml() -> None:
    toml = parse_run_request('num_rounds = 2\nstrategy = "fedprox"\n[config]\n')
    assert toml == RunCreate(num_rounds=2, strategy="fedprox")
    assert parse_run_request('{"num_rounds": 4}') == RunCreate(num_rounds=4)


@pytest.mark.parametrize(
    "config", ['{"config": {"num-rounds": 9}}', '{"config": {"no-such-key": 1}}']
)
def test_a_run_config_the_app_refuses_stops_the_coordinator(
    settings: CoordinatorSettings, config: str
) -> None:
    bad = settings.model_copy(update={"retrain_run_config": config})
    with pytest.raises(SettingsError, match="retrain_run_config"):
        create_app(bad)


# --- the policy ---------------------------------------------------------------------------


class Port:
    """A port that takes connections, so the reachability check before a run passes, and
    that closes once the run is started: its ``flwr run`` then fails, ending the run."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def superlink() -> Iterator[Port]:
    port = Port()
    yield port
    port.close()


def _policy_client(settings: CoordinatorSettings, tmp_path: Path, **extra: Any) -> TestClient:
    updated = settings.model_copy(update={"flwr_home": tmp_path / "flwr", **extra})
    return TestClient(create_app(updated))


def _health(fleet: Fleet, site: SiteIdentity, rmse: float) -> None:
    import json

    body = json.dumps({
        "sent_at": time.time(), "model_version": "v1", "store_bytes": 1000,
        "alerts": {"warning": 0, "critical": 0}, "last_kpi_at": time.time(),
        "supernode": "running", "backlog": 0,
        "errors": [{"cell": "c0", "horizon_steps": 1, "target": "prb_dl_util", "count": 288,
                    "mae": rmse / 2, "rmse": rmse, "bias": 0.0}],
    }).encode()  # fmt: skip
    headers = {**sign_request(site, "POST", HEALTH, body), "Content-Type": "application/json"}
    answer = fleet.client.post(HEALTH, content=body, headers=headers)
    assert answer.status_code == 204, answer.text


def _promote(fleet: Fleet, model_id: int) -> None:
    answer = fleet.client.post(f"/api/v1/models/{model_id}/promote", headers=ADMIN)
    assert answer.status_code == 200, answer.text


def _policy(fleet: Fleet) -> RetrainingPolicy:
    policy: RetrainingPolicy = fleet.client.app.state.coordinator.retraining  # type: ignore[attr-defined]
    return policy


def test_drift_starts_a_run_once_past_the_threshold(
    settings: CoordinatorSettings, tmp_path: Path, superlink: Port
) -> None:
    extra = {"superlink": superlink.address, "drift_check_seconds": 3600.0, "drift_min_sites": 3,
             "retrain_min_interval_seconds": 0.0}  # fmt: skip
    with _policy_client(settings, tmp_path, **extra) as client:
        fleet = Fleet.with_roles(client, [Role.OPERATOR])
        policy = _policy(fleet)
        assert not policy.enabled  # retrain_enabled is off: no thread, checks by hand
        sites = [fleet.enroll() for _ in range(4)]
        serving = fleet.upload("serving")
        _promote(fleet, serving)
        for site in sites:
            _health(fleet, site, 0.10)
        now = time.time()
        assert policy.tick(now) is None  # the first reports are the baselines
        state = client.get("/api/v1/retraining", headers=ADMIN).json()
        assert state["statistic"] == pytest.approx(1.0) and state["sites"] == 4
        for site, rmse in zip(sites, (0.11, 0.13, 0.13, 0.20), strict=True):
            _health(fleet, site, rmse)  # median ratio 1.3 > 1.2
        start = policy.tick(now + 3600)
        superlink.close()
        assert start is not None and start.trigger == Trigger.DRIFT
        assert start.statistic == pytest.approx(1.3) and start.sites == 4
        assert start.baseline_model_id == serving
        fleet.client.app.state.coordinator.federation.join(60)  # type: ignore[attr-defined]
        run = client.get(f"/api/v1/runs/{start.run_id}", headers=ADMIN).json()
        assert run["created_by"] == "retraining" and run["status"] == "failed"  # no SuperLink
        state = client.get("/api/v1/retraining", headers=fleet.as_(Role.OPERATOR)).json()
        assert [(s["run_id"], s["trigger"]) for s in state["starts"]] == [(start.run_id, "drift")]
        log = client.get("/api/v1/audit?limit=1000", headers=ADMIN).json()
        assert any(e["action"] == "run.start" and "drift" in e["detail"] for e in log)


def test_drift_from_too_few_sites_too_soon_or_below_the_threshold_starts_nothing(
    settings: CoordinatorSettings, tmp_path: Path, superlink: Port
) -> None:
    extra = {"superlink": superlink.address, "drift_check_seconds": 60.0,
             "drift_min_sites": 3, "retrain_min_interval_seconds": 3600.0}  # fmt: skip
    with _policy_client(settings, tmp_path, **extra) as client:
        fleet = Fleet.with_roles(client, [Role.OPERATOR])
        policy = _policy(fleet)
        sites = [fleet.enroll() for _ in range(3)]
        _promote(fleet, fleet.upload("serving"))
        now = time.time()
        for site in sites[:2]:
            _health(fleet, site, 0.1)
        assert policy.tick(now) is None
        for site in sites[:2]:
            _health(fleet, site, 0.5)
        assert policy.tick(now + 60) is None  # a large drift, from two sites only

        def state() -> tuple[Any, Any]:
            body = client.get("/api/v1/retraining", headers=ADMIN).json()
            return body["statistic"], body["sites"]

        assert state() == (pytest.approx(5.0), 2)
        _health(fleet, sites[2], 0.1)  # its baseline: ratios 5, 5 and 1
        federation = client.app.state.coordinator.federation  # type: ignore[attr-defined]
        recent, _, _ = federation.create("operator:test", RunCreate())
        federation.cancel("operator:test", recent.id)
        assert policy.tick(now + 120) is None  # three sites, but a run started just now
        assert state() == (pytest.approx(5.0), 3)
        for site in sites:
            _health(fleet, site, 0.11)
        assert policy.tick(now + 7200) is None  # long after that run, but below 1 + 0.2
        assert state() == (pytest.approx(1.1), 3)


def test_the_schedule_starts_runs_and_waits_for_a_live_one(
    settings: CoordinatorSettings, tmp_path: Path, superlink: Port
) -> None:
    extra = {"superlink": superlink.address, "retrain_interval_seconds": 600.0,
             "retrain_run_config": '{"num_rounds": 2}'}  # fmt: skip
    with _policy_client(settings, tmp_path, **extra) as client:
        fleet = Fleet.with_roles(client, [Role.OPERATOR])
        policy = _policy(fleet)
        federation = client.app.state.coordinator.federation  # type: ignore[attr-defined]
        now = time.time()
        live, _, _ = federation.create("operator:test", RunCreate())  # an operator's, live
        assert policy.tick(now + 3600) is None  # never while a run is live
        client.delete(f"/api/v1/runs/{live.id}", headers=ADMIN)
        start = policy.tick(now + 3600)
        superlink.close()
        assert start is not None and start.trigger == Trigger.SCHEDULE
        federation.join(60)
        run = client.get(f"/api/v1/runs/{start.run_id}", headers=ADMIN).json()
        assert run["num_rounds"] == 2
        assert policy.tick(time.time() + 1) is None  # the next one is 600 s away
        state = client.get("/api/v1/retraining", headers=ADMIN).json()
        assert [s["trigger"] for s in state["starts"]] == ["schedule", "operator"]


# --- lineage and automatic promotion ------------------------------------------------------


def _finish_run(client: TestClient, eval_rmse: float | None) -> int:
    """A run that reports its one round and its model the way a ServerApp does."""
    federation = client.app.state.coordinator.federation  # type: ignore[attr-defined]
    run, token, _ = federation.create("operator:test", RunCreate(num_rounds=1))
    auth = {RUN_TOKEN_HEADER: token}
    metrics = {} if eval_rmse is None else {"eval_rmse": eval_rmse}
    for status in ("running", "completed"):
        answer = client.put(
            f"/api/v1/runs/{run.id}/rounds/1",
            json={"status": status, "strategy": "fedavg", "started_at": 1.0e9,
                  "metrics": metrics},
            headers=auth,
        )  # fmt: skip
        assert answer.status_code == 200, answer.text
    model = {"onnx_base64": base64.b64encode(onnx_model(run.id)).decode(), "metrics": metrics}
    answer = client.post(f"/api/v1/runs/{run.id}/model", json=model, headers=auth)
    assert answer.status_code == 200, answer.text
    model_id: int = answer.json()["model_version_id"]
    return model_id


def _model(client: TestClient, model_id: int) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/api/v1/models/{model_id}", headers=ADMIN).json()
    return body


def test_a_run_model_descends_from_the_version_serving_at_its_start(client: TestClient) -> None:
    first = _finish_run(client, 0.3)
    assert _model(client, first)["parent_id"] is None  # nothing served
    assert _model(client, first)["status"] == "candidate"  # auto_promote is off
    _promote(Fleet(client), first)
    second = _finish_run(client, 0.2)
    assert _model(client, second)["parent_id"] == first


def test_auto_promotion_promotes_only_a_better_model(
    settings: CoordinatorSettings, tmp_path: Path
) -> None:
    with _policy_client(settings, tmp_path, auto_promote=True) as client:
        first = _finish_run(client, 0.30)
        assert _model(client, first)["status"] == "production"  # nothing served
        worse = _finish_run(client, 0.35)
        assert _model(client, worse)["status"] == "candidate"
        assert _model(client, worse)["parent_id"] == first
        unmeasured = _finish_run(client, None)
        assert _model(client, unmeasured)["status"] == "candidate"
        better = _finish_run(client, 0.25)
        assert _model(client, better)["status"] == "production"
        assert _model(client, first)["status"] == "retired"
        log = client.get("/api/v1/audit?limit=1000", headers=ADMIN).json()
        compared = [e["detail"] for e in log if e["action"] == "model.compare"]
        assert compared[0] == "eval_rmse 0.3; no version serves"
        assert compared[1] == f"kept: eval_rmse 0.35 >= 0.3 of model:{first}"
        assert compared[2] == "kept: the run reported no eval_rmse"
        assert compared[3] == f"eval_rmse 0.25 < 0.3 of model:{first}"
        promoted = [e for e in log if e["action"] == "model.promote"]
        assert [e["actor"] for e in promoted] == ["operator:retraining"] * 2
        # A serving version without the metric (uploaded with {"rmse": 0.5}) is not beaten.
        fleet = Fleet.with_roles(client, [Role.OPERATOR])
        uploaded = fleet.upload("uploaded")
        _promote(fleet, uploaded)
        unmatched = _finish_run(client, 0.01)
        assert _model(client, unmatched)["status"] == "candidate"
        assert _model(client, unmatched)["parent_id"] == uploaded
        log = client.get("/api/v1/audit?limit=1000", headers=ADMIN).json()
        last = [e["detail"] for e in log if e["action"] == "model.compare"][-1]
        assert last == f"kept: the serving model:{uploaded} has no eval_rmse"


def test_one_policy_acts_at_a_time_and_the_enabled_one_runs_its_thread(
    settings: CoordinatorSettings, tmp_path: Path, superlink: Port
) -> None:
    """Two coordinators on one database (two worker processes): the lease lets one act."""
    extra = {"superlink": superlink.address, "retrain_interval_seconds": 60.0}
    with (
        _policy_client(settings, tmp_path, retrain_enabled=True, **extra) as first,
        _policy_client(settings, tmp_path, **extra) as second,
    ):
        state = first.get("/api/v1/retraining", headers=ADMIN).json()
        assert state["enabled"] and state["acting"]
        assert not second.get("/api/v1/retraining", headers=ADMIN).json()["acting"]
        one = first.app.state.coordinator.retraining  # type: ignore[attr-defined]
        other = second.app.state.coordinator.retraining  # type: ignore[attr-defined]
        one.stop()
        now = time.time()
        assert one.tick(now) is None  # takes the lease (3 looks + 30 s); nothing is due yet
        assert other.tick(now + 100) is None  # due, but the lease is the first's
        start = other.tick(now + 300)  # the first stopped renewing: its lease ran out
        superlink.close()
        assert start is not None and start.trigger == Trigger.SCHEDULE
        second.app.state.coordinator.federation.join(60)  # type: ignore[attr-defined]
