"""Forecast ingest: a signed batch (forecasts and actuals) is stored once (re-sends are
idempotent), a body that differs from the signed one is refused, bad values are 422 and
lose nothing already stored, a replayed request is refused. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import math
from typing import Any

from sqlalchemy import text

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


def _with_actuals(steps: range = range(3)) -> dict[str, Any]:
    return {
        **_batch(steps=steps),
        "actuals": [{"cell": c, "step": s, "values": [0.4, 0.2, 11.0]} for c in ("c0", "c1")
                    for s in steps],
    }  # fmt: skip


def _stored(fleet: Fleet) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    engine = fleet.client.app.state.coordinator.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        forecasts = conn.execute(
            text('SELECT site_id, cell, step, made_step, "values" FROM forecasts ORDER BY id')
        ).all()
        actuals = conn.execute(
            text('SELECT site_id, cell, step, "values", received_at FROM actuals ORDER BY id')
        ).all()
    return [tuple(r) for r in forecasts], [tuple(r) for r in actuals]


def _values(raw: object) -> list[float]:
    """PostgreSQL's driver decodes JSON, SQLite's does not."""
    return json.loads(raw) if isinstance(raw, str) else raw  # type: ignore[return-value]


def test_actuals_are_stored_once_with_the_forecasts(fleet: Fleet) -> None:
    site = fleet.enroll()
    body = json.dumps(_with_actuals()).encode()
    assert _post(fleet, site, body) == (201, {"received": 9, "stored": 9})
    assert _post(fleet, site, body) == (201, {"received": 9, "stored": 0})  # re-sent
    more = json.dumps(_with_actuals(range(2, 5))).encode()  # overlaps one step
    assert _post(fleet, site, more) == (201, {"received": 9, "stored": 6})
    forecasts, actuals = _stored(fleet)
    assert len(forecasts) == 5 and len(actuals) == 10
    assert {(a[1], a[2]) for a in actuals} == {(c, s) for c in ("c0", "c1") for s in range(5)}
    assert all(a[0] == site.site_id.hex() and _values(a[3]) == [0.4, 0.2, 11.0] for a in actuals)


def test_bad_actuals_are_422_and_lose_nothing(fleet: Fleet) -> None:
    site = fleet.enroll()
    assert _post(fleet, site, json.dumps(_with_actuals()).encode())[0] == 201
    before = _stored(fleet)
    good = _with_actuals(range(10, 12))
    row = good["actuals"][0]
    bad: list[dict[str, Any]] = [
        {**good, "actuals": [{**row, "values": []}]},
        {**good, "actuals": [{**row, "values": [1.0] * 17}]},
        {**good, "actuals": [{**row, "values": [math.inf]}]},
        {**good, "actuals": [{**row, "step": -1}]},
        {**good, "actuals": [{**row, "step": 2**41}]},
        {**good, "actuals": [{**row, "cell": ""}]},
        {**good, "actuals": [{**row, "cell": "c" * 65}]},
        {**good, "actuals": [{**row, "values": "high"}]},
        {**good, "actuals": [row] * 2001},
        {**good, "forecasts": good["forecasts"] * 1001},  # 2002 forecasts
    ]
    for body in bad:
        status, answer = _post(fleet, site, json.dumps(body).encode())
        assert status == 422, body
        detail = str(answer["detail"])
        assert "actuals" in detail or "forecasts" in detail
    # NaN is not JSON, but Python writes it: refused all the same
    nan = json.dumps({**good, "actuals": [{**row, "values": [math.nan]}]}).encode()
    assert _post(fleet, site, nan)[0] == 422
    assert _stored(fleet) == before
    assert _post(fleet, site, json.dumps(good).encode()) == (201, {"received": 6, "stored": 6})


def test_a_replayed_batch_is_refused_and_stores_nothing(fleet: Fleet) -> None:
    site = fleet.enroll()
    body = json.dumps(_with_actuals()).encode()
    headers = {
        **sign_request(site, "POST", PATH, body),
        "Content-Type": "application/json",
    }
    assert fleet.client.post(PATH, content=body, headers=headers).status_code == 201
    stored = _stored(fleet)
    again = fleet.client.post(PATH, content=body, headers=headers)
    assert again.status_code == 401 and "replayed" in again.json()["detail"]
    assert _stored(fleet) == stored


def test_a_revoked_site_is_refused(fleet: Fleet) -> None:
    site = fleet.enroll()
    body = json.dumps(_with_actuals()).encode()
    assert _post(fleet, site, body)[0] == 201  # its keys are now cached
    revoked = fleet.client.post(
        f"/api/v1/sites/{site.site_id.hex()}/revoke", headers=fleet.as_(Role.ADMIN)
    )
    assert revoked.status_code == 200
    status, answer = _post(fleet, site, json.dumps(_with_actuals(range(5, 6))).encode())
    assert status == 401 and "revoked" in str(answer["detail"])
    assert len(_stored(fleet)[0]) == 3
