"""Only fedge forecasters become model versions: bytes ONNX Runtime cannot load, ONNX
without the forecast spec metadata, and models that fail on a probe window are refused
(422) on upload and from a run's report, and nothing of them is stored."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from fedge.coordinator import CoordinatorSettings, Role
from fedge.coordinator._runs import RUN_TOKEN_HEADER
from fedge.coordinator._schema import RunCreate
from tests.coordinator.helpers import ADMIN, Fleet, onnx_model

REFUSED = {
    "garbage": (b"\x08\x07" + b"\xff" * 64, "not a loadable ONNX model"),
    "text": (b"not an onnx model", "not a loadable ONNX model"),
    "no metadata": (onnx_model("plain", metadata=False), "no forecast spec metadata"),
    "fails the probe": (onnx_model("broken", runs=False), "failed to run"),
}


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


def _nothing_stored(client: TestClient, settings: CoordinatorSettings) -> None:
    assert client.get("/api/v1/models", headers=ADMIN).json() == []
    assert not any(settings.model_store.glob("*.onnx"))


@pytest.mark.parametrize("case", REFUSED)
def test_an_upload_that_is_no_fedge_forecaster_is_refused(
    fleet: Fleet, settings: CoordinatorSettings, case: str
) -> None:
    blob, reason = REFUSED[case]
    answer = fleet.client.post(
        "/api/v1/models", json={"onnx_base64": _b64(blob)}, headers=fleet.as_(Role.OPERATOR)
    )
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert detail.startswith("not a usable fedge model: ") and reason in detail
    assert "\n" not in detail
    _nothing_stored(fleet.client, settings)


def test_a_fedge_forecaster_is_stored(fleet: Fleet) -> None:
    answer = fleet.client.post(
        "/api/v1/models",
        json={"onnx_base64": _b64(onnx_model("good")), "metrics": {"rmse": 0.1}},
        headers=fleet.as_(Role.OPERATOR),
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["status"] == "candidate"


@pytest.mark.parametrize("case", ["garbage", "no metadata"])
def test_a_run_reporting_no_fedge_forecaster_is_refused(
    client: TestClient, settings: CoordinatorSettings, case: str
) -> None:
    federation = client.app.state.coordinator.federation  # type: ignore[attr-defined]
    run, token, _ = federation.create("operator:test", RunCreate(num_rounds=1))
    auth = {RUN_TOKEN_HEADER: token}
    done = {"status": "completed", "strategy": "fedavg", "started_at": 1.0e9}
    assert client.put(f"/api/v1/runs/{run.id}/rounds/1", json=done, headers=auth).status_code == 200
    blob, reason = REFUSED[case]
    answer = client.post(
        f"/api/v1/runs/{run.id}/model", json={"onnx_base64": _b64(blob)}, headers=auth
    )
    assert answer.status_code == 422 and reason in answer.json()["detail"]
    assert client.get(f"/api/v1/runs/{run.id}", headers=ADMIN).json()["status"] == "running"
    _nothing_stored(client, settings)
    good = {"onnx_base64": _b64(onnx_model(run.id))}
    answer = client.post(f"/api/v1/runs/{run.id}/model", json=good, headers=auth)
    assert answer.status_code == 200 and answer.json()["status"] == "completed"
