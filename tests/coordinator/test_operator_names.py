"""Operator names fit the 64-character columns that record who did what: a key whose name
is as long as names may be works on PostgreSQL (which enforces VARCHAR lengths, unlike
SQLite) for every call that records its operator, under a stable shortened name."""

from __future__ import annotations

import base64

from fedge.coordinator import Role
from fedge.coordinator._access import Operator, fit_actor
from fedge.coordinator._schema import RunCreate
from tests.coordinator.helpers import ADMIN, Fleet, onnx_model

LONG = "a-very-long-operator-name-that-fills-the-whole-name-column-xyz"


def _key(fleet: Fleet, name: str, role: Role) -> dict[str, str]:
    answer = fleet.client.post("/api/v1/keys", json={"name": name, "role": role}, headers=ADMIN)
    assert answer.status_code == 201, answer.text
    return {"X-API-Key": answer.json()["key"]}


def test_fit_actor_keeps_short_names_and_shortens_long_ones_stably() -> None:
    assert fit_actor("operator:alice") == "operator:alice"
    assert fit_actor("x" * 64) == "x" * 64
    long = fit_actor("operator:" + "n" * 64)
    assert len(long) == 64
    assert long == fit_actor("operator:" + "n" * 64)
    assert long.startswith("operator:" + "n" * 46 + "…")
    assert long != fit_actor("operator:" + "n" * 63 + "m")  # same start, apart by the digest


def test_a_name_of_the_full_length_is_recorded_on_every_write(fleet: Fleet) -> None:
    name = (LONG + "0" * 64)[:64]  # the longest name a key may have
    other = name[:-1] + "1"  # the same first 63 characters
    admin, second = _key(fleet, name, Role.ADMIN), _key(fleet, other, Role.ADMIN)
    actor = Operator(name, Role.ADMIN).actor  # what every record below must name
    c = fleet.client

    def upload(tag: str) -> int:
        body = {"onnx_base64": base64.b64encode(onnx_model(tag)).decode()}
        answer = c.post("/api/v1/models", json=body, headers=admin)
        assert answer.status_code == 201, answer.text
        assert answer.json()["created_by"] == actor
        model_id: int = answer.json()["id"]
        return model_id

    first, then = upload("long-1"), upload("long-2")
    for model_id in (first, then):
        promoted = c.post(f"/api/v1/models/{model_id}/promote", headers=admin)
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["promoted_by"] == actor
    back = c.post("/api/v1/models/rollback", headers=second)
    assert back.status_code == 200, back.text
    assert back.json()["promoted_by"] == Operator(other, Role.ADMIN).actor
    token = c.post("/api/v1/enrollment/tokens", json={"ttl_seconds": 60}, headers=admin)
    assert token.status_code == 201, token.text
    federation = c.app.state.coordinator.federation  # type: ignore[attr-defined]
    run = federation.create(actor, RunCreate())[0]
    assert c.get(f"/api/v1/runs/{run.id}", headers=admin).json()["created_by"] == actor
    assert len(actor) == 64 and actor != Operator(other, Role.ADMIN).actor
    mine = [e for e in c.get("/api/v1/audit?limit=1000", headers=ADMIN).json()
            if e["actor"] == actor]  # fmt: skip
    assert {"model.upload", "model.promote", "enrollment.token", "run.start"} <= {
        e["action"] for e in mine
    }


def test_a_refusal_of_a_long_named_key_is_audited_under_its_short_name(fleet: Fleet) -> None:
    name = (LONG + "9" * 64)[:64]
    viewer = _key(fleet, name, Role.VIEWER)
    refused = fleet.client.post("/api/v1/models/rollback", headers=viewer)
    assert refused.status_code == 403
    log = fleet.client.get("/api/v1/audit?limit=1000", headers=ADMIN).json()
    assert log[-1]["outcome"] == "denied"
    assert log[-1]["actor"] == Operator(name, Role.VIEWER).actor
