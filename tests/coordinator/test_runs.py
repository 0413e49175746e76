"""Federation runs without a SuperLink: the run-token report API as a ServerApp uses it,
its refusals, cancelling, restart recovery, and run-config validation (both databases). The real
SuperLink runs are in test_federation.py."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fedge.coordinator import CoordinatorSettings, InvalidInputError, Role
from fedge.coordinator._runs import RUN_TOKEN_HEADER, app_config, run_config
from fedge.coordinator._schema import RunCreate
from fedge.coordinator.api import create_app
from fedge.federation import FederationError
from fedge.federation._plan import FederationPlan
from fedge.federation._report import RoundReporter
from fedge.models import ForecastSpec
from tests.coordinator.helpers import ADMIN, Fleet, onnx_model
from tests.support.ports import free_port

APP_DIR = Path(__file__).resolve().parents[2]


def _new_run(client: TestClient, rounds: int = 2) -> tuple[str, dict[str, str]]:
    run, token, config = client.app.state.coordinator.federation.create(  # type: ignore[attr-defined]
        "operator:test", RunCreate(num_rounds=rounds)
    )
    assert config["coordinator-token"] == token and config["num-rounds"] == rounds
    return run.id, {RUN_TOKEN_HEADER: token}


def _round(status: str, **extra: Any) -> dict[str, Any]:
    return {"status": status, "strategy": "fedavg", "started_at": 1.0e9, **extra}


def _report(
    client: TestClient, run: str, auth: dict[str, str], n: int, body: dict[str, Any]
) -> Any:
    return client.put(  # json.dumps, unlike httpx, lets NaN through: the server must refuse it
        f"/api/v1/runs/{run}/rounds/{n}",
        content=json.dumps(body),
        headers={**auth, "Content-Type": "application/json"},
    )


def test_a_run_reports_its_rounds_and_its_model(client: TestClient) -> None:
    run, auth = _new_run(client)
    assert client.get(f"/api/v1/runs/{run}", headers=ADMIN).json()["status"] == "starting"
    for n in (1, 2):
        assert _report(client, run, auth, n, _round("running")).status_code == 200
        done = _report(
            client, run, auth, n,
            _round("completed", participants=2, bytes_up=1000 * n, bytes_down=900,
                   metrics={"train_loss": 0.5 / n, "eval_rmse": 0.2}),
        )  # fmt: skip
        assert done.status_code == 200, done.text
        assert done.json()["finished_at"] is not None
    rounds = client.get(f"/api/v1/rounds?run_id={run}", headers=ADMIN).json()
    assert [(r["number"], r["status"], r["bytes_up"], r["participants"]) for r in rounds] == [
        (1, "completed", 1000, 2),
        (2, "completed", 2000, 2),
    ]
    model = {"onnx_base64": base64.b64encode(onnx_model(run)).decode(), "metrics": {"rmse": 0.2}}
    answer = client.post(f"/api/v1/runs/{run}/model", json=model, headers=auth)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "completed" and body["model_version_id"] is not None
    version = client.get(f"/api/v1/models/{body['model_version_id']}", headers=ADMIN).json()
    assert version["status"] == "candidate" and version["created_by"] == f"run:{run}"
    assert version["metrics"] == {"rmse": 0.2}
    # The run has ended: the token is good for nothing more.
    assert _report(client, run, auth, 2, _round("running")).status_code == 409
    actions = [e["action"] for e in client.get("/api/v1/audit?limit=1000", headers=ADMIN).json()]
    assert actions.count("round.completed") == 2 and "model.from_run" in actions


def test_report_refusals(client: TestClient) -> None:
    run, auth = _new_run(client)
    assert _report(client, run, {}, 1, _round("running")).status_code == 401
    bad = _report(client, run, {RUN_TOKEN_HEADER: "wrong"}, 1, _round("running"))
    assert bad.status_code == 401
    other = "0" * 32
    assert _report(client, other, auth, 1, _round("running")).status_code == 401
    assert _report(client, run, auth, 3, _round("running")).status_code == 422
    assert _report(client, run, auth, 1, _round("interrupted")).status_code == 422
    nan = _report(client, run, auth, 1, _round("completed", metrics={"loss": math.nan}))
    assert nan.status_code == 422 and "finite" in nan.json()["detail"]
    assert _report(client, run, auth, 1, _round("completed", bytes_up=-1)).status_code == 422
    early = {"onnx_base64": base64.b64encode(onnx_model("early")).decode()}
    assert client.post(f"/api/v1/runs/{run}/model", json=early, headers=auth).status_code == 409
    assert _report(client, run, auth, 1, _round("completed")).status_code == 200
    assert _report(client, run, auth, 1, _round("running")).status_code == 409  # final
    assert _report(client, run, auth, 2, _round("completed")).status_code == 200
    junk = {"onnx_base64": base64.b64encode(b"not onnx").decode()}
    assert client.post(f"/api/v1/runs/{run}/model", json=junk, headers=auth).status_code == 422
    # Nothing accepted was lost on the way.
    rounds = client.get(f"/api/v1/rounds?run_id={run}", headers=ADMIN).json()
    assert [r["status"] for r in rounds] == ["completed", "completed"]
    denied = [e for e in client.get("/api/v1/audit?limit=1000", headers=ADMIN).json()
              if e["outcome"] == "denied"]  # fmt: skip
    assert len(denied) == 3 and denied[0]["actor"] == f"run:{run}"


def test_a_failed_run(client: TestClient) -> None:
    run, auth = _new_run(client)
    assert _report(client, run, auth, 1, _round("running")).status_code == 200
    answer = client.post(f"/api/v1/runs/{run}/failure", json={"detail": "boom"}, headers=auth)
    assert answer.status_code == 200
    assert answer.json()["status"] == "failed" and answer.json()["detail"] == "boom"
    rounds = client.get(f"/api/v1/rounds?run_id={run}", headers=ADMIN).json()
    assert [(r["number"], r["status"]) for r in rounds] == [(1, "interrupted")]
    assert (
        client.post(f"/api/v1/runs/{run}/failure", json={"detail": ""}, headers=auth).status_code
        == 422
    )


def test_an_operator_cancels_a_live_run(fleet: Fleet) -> None:
    client = fleet.client
    run, auth = _new_run(client, rounds=3)
    assert _report(client, run, auth, 1, _round("completed", participants=2)).status_code == 200
    assert _report(client, run, auth, 2, _round("running")).status_code == 200
    assert client.delete(f"/api/v1/runs/{run}").status_code == 401
    assert client.delete(f"/api/v1/runs/{run}", headers=fleet.as_(Role.VIEWER)).status_code == 403
    assert client.delete("/api/v1/runs/not-a-run-id", headers=ADMIN).status_code == 422
    assert client.delete(f"/api/v1/runs/{'0' * 32}", headers=ADMIN).status_code == 404
    answer = client.delete(f"/api/v1/runs/{run}", headers=fleet.as_(Role.OPERATOR))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"] == run and body["status"] == "cancelled"
    assert body["finished_at"] is not None and "cancelled by" in body["detail"]
    assert client.get(f"/api/v1/runs/{run}", headers=ADMIN).json()["status"] == "cancelled"
    rounds = client.get(f"/api/v1/rounds?run_id={run}", headers=ADMIN).json()
    assert [(r["number"], r["status"]) for r in rounds] == [(1, "completed"), (2, "interrupted")]
    assert rounds[0]["participants"] == 2
    # Its ServerApp is refused from now on, as an interrupted run's is.
    late = _report(client, run, auth, 2, _round("completed"))
    assert late.status_code == 409 and "cancelled" in late.json()["detail"]
    failure = client.post(f"/api/v1/runs/{run}/failure", json={"detail": "x"}, headers=auth)
    assert failure.status_code == 409
    again = client.delete(f"/api/v1/runs/{run}", headers=ADMIN)
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]
    failed, failed_auth = _new_run(client, rounds=1)
    assert (
        client.post(
            f"/api/v1/runs/{failed}/failure", json={"detail": "x"}, headers=failed_auth
        ).status_code
        == 200
    )
    assert client.delete(f"/api/v1/runs/{failed}", headers=ADMIN).status_code == 409
    entries = [e for e in client.get("/api/v1/audit?limit=1000", headers=ADMIN).json()
               if e["action"] == "run.cancel"]  # fmt: skip
    assert [(e["target"], e["outcome"]) for e in entries] == [(f"run:{run}", "ok")]


def test_restart_interrupts_live_runs_and_keeps_completed_rounds(
    settings: CoordinatorSettings,
) -> None:
    with TestClient(create_app(settings)) as client:
        run, auth = _new_run(client, rounds=3)
        assert _report(client, run, auth, 1, _round("completed", participants=2)).status_code == 200
        assert _report(client, run, auth, 2, _round("running")).status_code == 200
        failed, failed_auth = _new_run(client, rounds=1)
        gone = client.post(
            f"/api/v1/runs/{failed}/failure", json={"detail": "x"}, headers=failed_auth
        )
        assert gone.status_code == 200
        waiting, _ = _new_run(client, rounds=1)
    with TestClient(create_app(settings)) as client:  # the restart
        body = client.get(f"/api/v1/runs/{run}", headers=ADMIN).json()
        assert body["status"] == "interrupted" and "restarted" in body["detail"]
        rounds = client.get(f"/api/v1/rounds?run_id={run}", headers=ADMIN).json()
        assert [(r["number"], r["status"]) for r in rounds] == [
            (1, "completed"),
            (2, "interrupted"),
        ]
        assert rounds[0]["participants"] == 2
        late = _report(client, run, auth, 2, _round("completed"))
        assert late.status_code == 409 and "interrupted" in late.json()["detail"]
        status = {r["id"]: r["status"] for r in client.get("/api/v1/runs", headers=ADMIN).json()}
        assert status == {run: "interrupted", failed: "failed", waiting: "interrupted"}
        again = client.app.state.coordinator.federation.create(  # type: ignore[attr-defined]
            "operator:test", RunCreate(num_rounds=3), rerun_of=run
        )[0]
        assert again.rerun_of == run


def test_run_config_is_checked_before_anything_starts() -> None:
    config = run_config(APP_DIR, RunCreate(num_rounds=2, config={"local-epochs": 2}))
    assert config["num-rounds"] == 2 and config["local-epochs"] == 2
    assert FederationPlan.from_config(config).num_rounds == 2
    default = FederationPlan.from_config(config)
    assert (default.round_timeout, default.min_nodes) == (600.0, 1)
    waits = run_config(APP_DIR, RunCreate(config={"round-timeout": 30, "min-nodes": 3}))
    assert FederationPlan.from_config(waits).round_timeout == 30
    assert FederationPlan.from_config(waits).min_nodes == 3
    bad = [
        RunCreate(config={"no-such-key": 1}),
        RunCreate(config={"coordinator-token": "mine"}),
        RunCreate(config={"learning-rate": math.inf}),
        RunCreate(strategy="fedsomething"),
        RunCreate(codec="zip-9000"),
        RunCreate(config={"forecast": "{not json"}),
        RunCreate(config={"forecast": '{"lookback": 0}'}),
        RunCreate(config={"forecast": '{"lookbak": 12}'}),
        RunCreate(config={"forecast": "[12, 3]"}),
        RunCreate(config={"forecast": '{"persistence_skip": "no"}'}),
        RunCreate(config={"seed": "zero"}),
        RunCreate(config={"batch-size": 6.5}),
        RunCreate(config={"local-epochs": True}),
        RunCreate(config={"data-spec": 5}),
        RunCreate(config={"round-timeout": 0}),
        RunCreate(config={"round-timeout": -5.0}),
        RunCreate(config={"round-timeout": math.nan}),
        RunCreate(config={"round-timeout": 1e9}),
        RunCreate(config={"round-timeout": "soon"}),
        RunCreate(config={"min-nodes": 0}),
        RunCreate(config={"min-nodes": 2.5}),
        RunCreate(config={"min-nodes": True}),
        RunCreate(config={"min-nodes": 10**9}),
    ]
    for spec in bad:
        with pytest.raises(InvalidInputError):
            run_config(APP_DIR, spec)
    with pytest.raises(InvalidInputError, match="not a Flower app"):
        run_config(APP_DIR / "docs", RunCreate())


def test_the_default_run_trains_the_default_forecaster() -> None:
    """One source of defaults: neither the app's run config nor the coordinator's pins a
    forecast spec of its own, and a partial spec keeps the rest of ForecastSpec's."""
    assert FederationPlan.from_config(app_config(APP_DIR)).forecast == ForecastSpec()
    assert FederationPlan.from_config(run_config(APP_DIR, RunCreate())).forecast == ForecastSpec()
    partial = run_config(APP_DIR, RunCreate(config={"forecast": '{"horizon": 3}'}))
    forecast = FederationPlan.from_config(partial).forecast
    assert forecast == ForecastSpec(horizon=3)
    assert forecast.persistence_skip and forecast.site_profile


def test_start_needs_a_superlink_and_an_operator(settings: CoordinatorSettings) -> None:
    with TestClient(create_app(settings)) as client:
        off = client.post("/api/v1/runs", json={}, headers=ADMIN)
        assert off.status_code == 503, off.text
        assert off.json()["setting"] == "FEDGE_COORDINATOR_SUPERLINK"
        assert "not configured" in off.json()["detail"]
        assert (
            client.post("/api/v1/runs", json={"num_rounds": "x"}, headers=ADMIN).status_code == 503
        )
        rerun = client.post(f"/api/v1/runs/{'0' * 32}/rerun", headers=ADMIN)
        assert rerun.status_code == 503 and rerun.json()["setting"] == "FEDGE_COORDINATOR_SUPERLINK"
        assert client.post("/api/v1/runs", json={}).status_code == 401  # credentials first
        assert client.get("/api/v1/runs", headers=ADMIN).json() == []  # reading needs none
    closed = settings.model_copy(update={"superlink": f"127.0.0.1:{free_port()}"})
    with TestClient(create_app(closed)) as client:
        fleet = Fleet.with_roles(client, list(Role))
        assert client.post("/api/v1/runs", json={}).status_code == 401
        assert (
            client.post("/api/v1/runs", json={}, headers=fleet.as_(Role.VIEWER)).status_code == 403
        )
        bad = client.post(
            "/api/v1/runs", json={"strategy": "nope"}, headers=fleet.as_(Role.OPERATOR)
        )
        assert bad.status_code == 422 and "strategy" in bad.json()["detail"]
        assert client.post("/api/v1/runs", json={"num_rounds": 0}, headers=ADMIN).status_code == 422
        for forecast in ('{"lookback": 0}', '{"lookbak": 12}', "[1]", '"x"', "{"):
            answer = client.post(
                "/api/v1/runs", json={"config": {"forecast": forecast}}, headers=ADMIN
            )
            assert answer.status_code == 422, (forecast, answer.text)
            assert "forecast" in answer.json()["detail"]
        down = client.post("/api/v1/runs", json={}, headers=ADMIN)  # valid, nobody listening
        assert down.status_code == 503 and "not reachable" in down.json()["detail"]
        assert down.json().get("setting") is None
        assert client.get("/api/v1/runs", headers=ADMIN).json() == []  # nothing was recorded


def test_the_reporter_gives_up_on_an_unreachable_coordinator() -> None:
    plan = FederationPlan.from_config(run_config(APP_DIR, RunCreate()))
    reporter = RoundReporter(f"http://127.0.0.1:{free_port()}", "0" * 32, "t", plan, 1.0)
    with pytest.raises(FederationError, match="did not take"):
        reporter.send("POST", "/failure", {"detail": "x"})
    assert RoundReporter.from_config({}, plan) is None
    with pytest.raises(FederationError, match="coordinator-run-id"):
        RoundReporter.from_config({"coordinator-url": "http://x"}, plan)
