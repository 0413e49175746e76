"""Forecast ingest: a signed batch is stored once (re-sends are idempotent), a body that
differs from the signed one is refused, bad values are 422."""

from __future__ import annotations

import json
import math

from fedge.coordinator import Role, sign_request
from tests.coordinator.helpers import Fleet

PATH = "/api/v1/site/forecasts"


def _batch(version: str = "v1", steps: range = range(3)) -> dict[str, object]:
    return {
        "model_version": version,
        "forecasts": [
            {"cell": "c0", "step": s + 1, "made_step": s, "values": [0.5, 0.1, 12.0]} for s in steps
        ],
    }


def _post(
    fleet: Fleet, site: object, body: bytes, signed_body: bytes | None = None
) -> tuple[int, dict[str, object]]:
    headers = sign_request(site, "POST", PATH, body if signed_body is None else signed_body)  # type: ignore[arg-type]
    answer = fleet.client.post(
        PATH, content=body, headers={**headers, "Content-Type": "application/json"}
    )
    return answer.status_code, answer.json()


def test_batches_are_stored_once_and_listed(fleet: Fleet) -> None:
    site, other = fleet.enroll(), fleet.enroll()
    body = json.dumps(_batch()).encode()
    assert _post(fleet, site, body) == (201, {"received": 3, "stored": 3})
    assert _post(fleet, site, body) == (201, {"received": 3, "stored": 0})  # re-sent
    assert _post(fleet, other, body)[1] == {"received": 3, "stored": 3}  # another site
    mine = fleet.client.get(
        f"/api/v1/forecasts?site_id={site.site_id.hex()}", headers=fleet.as_(Role.VIEWER)
    ).json()
    assert sorted(f["step"] for f in mine) == [1, 2, 3]
    assert {(f["site_id"], f["model_version"], tuple(f["values"])) for f in mine} == {
        (site.site_id.hex(), "v1", (0.5, 0.1, 12.0))
    }
    every = fleet.client.get("/api/v1/forecasts?limit=4", headers=fleet.as_(Role.VIEWER)).json()
    assert len(every) == 4


def test_a_body_other_than_the_signed_one_is_refused(fleet: Fleet) -> None:
    site = fleet.enroll()
    signed = json.dumps(_batch()).encode()
    swapped = json.dumps(_batch(version="v2")).encode()
    status, answer = _post(fleet, site, swapped, signed_body=signed)
    assert status == 401 and "signature" in str(answer["detail"])
    assert fleet.client.get("/api/v1/forecasts", headers=fleet.as_(Role.VIEWER)).json() == []


def test_bad_batches_are_422(fleet: Fleet) -> None:
    site = fleet.enroll()
    good = _batch()
    forecasts = good["forecasts"]
    assert isinstance(forecasts, list)
    bad: list[object] = [
        {**good, "forecasts": []},
        {**good, "forecasts": [{**forecasts[0], "values": []}]},
        {**good, "forecasts": [{**forecasts[0], "step": -1}]},
        {**good, "forecasts": [{**forecasts[0], "step": 2**41}]},
        {**good, "forecasts": [{**forecasts[0], "values": [math.nan]}]},
        {**good, "forecasts": [{**forecasts[0], "cell": ""}]},
    ]
    for body in bad:
        status, answer = _post(fleet, site, json.dumps(body).encode())
        assert status == 422, body
        assert isinstance(answer["detail"], str) and "forecasts" in answer["detail"]
    assert _post(fleet, site, json.dumps({**good, "model_version": ""}).encode())[0] == 422
    assert _post(fleet, site, b"{not json")[0] == 422


def test_nan_model_metrics_are_422(fleet: Fleet) -> None:
    import base64

    from tests.coordinator.helpers import onnx_model

    body = json.dumps(
        {"onnx_base64": base64.b64encode(onnx_model("nan")).decode(), "metrics": {"rmse": math.nan}}
    )
    answer = fleet.client.post(
        "/api/v1/models",
        content=body,
        headers={**fleet.as_(Role.OPERATOR), "Content-Type": "application/json"},
    )
    assert answer.status_code == 422
