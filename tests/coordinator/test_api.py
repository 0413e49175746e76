"""The API end to end on SQLite and PostgreSQL: enrollment, sites, models, sealed
download, rounds, audit; plus restart durability and the append-only audit log."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from fedge.coordinator import CoordinatorSettings, Role, sign_request
from fedge.coordinator.api import create_app
from fedge.core import ModelBundle
from fedge.security import (
    ContentType,
    KeyDirectory,
    OneShotOpener,
    SiteIdentity,
    enrollment_request,
    prove_possession,
)
from tests.coordinator.helpers import ADMIN, Fleet, onnx_model


def test_health_and_metrics(client: TestClient, settings: CoordinatorSettings) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "database": settings.database_url.split(":")[0].split("+")[0],
    }
    client.get("/api/v1/sites")  # a 401, counted as a denial
    scrape = client.get("/metrics").text
    assert (
        'fedge_coordinator_requests_total{method="GET",route="/healthz",status="200"} 1.0' in scrape
    )
    assert 'fedge_coordinator_denials_total{status="401"} 1.0' in scrape


def test_enrollment_registers_the_site_once(fleet: Fleet) -> None:
    identity = fleet.enroll(archetype="rural", region="east")
    sites = fleet.client.get("/api/v1/sites", headers=fleet.as_(Role.VIEWER)).json()
    assert [(s["id"], s["archetype"], s["region"], s["status"]) for s in sites] == [
        (identity.site_id.hex(), "rural", "east", "active")
    ]
    assert sites[0]["last_seen"] is not None


def test_token_is_single_use_and_expires(fleet: Fleet) -> None:
    token, first = fleet.token(), SiteIdentity.generate()
    proof = prove_possession(first, fleet.begin(first, token))  # completing spends the token
    done = fleet.client.post(
        "/api/v1/enrollment/complete",
        json={"site_id": first.site_id.hex(), "proof_base64": base64.b64encode(proof).decode()},
    )
    assert done.status_code == 201, done.text
    again = enrollment_request(SiteIdentity.generate(), token, fleet.authority())
    reused = fleet.client.post(
        "/api/v1/enrollment/begin", json={"request_base64": base64.b64encode(again).decode()}
    )
    assert reused.status_code == 401
    assert "unknown or already used" in reused.json()["detail"]

    expired = fleet.token(ttl=0.001)
    late = enrollment_request(SiteIdentity.generate(), expired, fleet.authority())
    answer = fleet.client.post(
        "/api/v1/enrollment/begin", json={"request_base64": base64.b64encode(late).decode()}
    )
    assert answer.status_code == 401 and "expired" in answer.json()["detail"]


def test_enrollment_refuses_bad_input(fleet: Fleet) -> None:
    post = fleet.client.post
    assert post("/api/v1/enrollment/begin", json={"request_base64": "%%%"}).status_code == 422
    short = base64.b64encode(b"x" * 100).decode()
    assert post("/api/v1/enrollment/begin", json={"request_base64": short}).status_code == 400
    identity = SiteIdentity.generate()
    fleet.begin(identity, fleet.token())
    wrong = {
        "site_id": identity.site_id.hex(),
        "proof_base64": base64.b64encode(b"0" * 32).decode(),
    }
    assert post("/api/v1/enrollment/complete", json=wrong).status_code == 401
    bad_id = {"site_id": "zz" * 16, "proof_base64": "AA=="}
    assert post("/api/v1/enrollment/complete", json=bad_id).status_code == 422
    assert fleet.client.get("/api/v1/sites", headers=ADMIN).json() == []


def test_kem_proof_from_another_key_is_refused(fleet: Fleet) -> None:
    identity, impostor = SiteIdentity.generate(), SiteIdentity.generate()
    challenge = fleet.begin(identity, fleet.token())
    forged = prove_possession(impostor, challenge)  # X-Wing decapsulates to a wrong secret
    answer = fleet.client.post(
        "/api/v1/enrollment/complete",
        json={"site_id": identity.site_id.hex(), "proof_base64": base64.b64encode(forged).decode()},
    )
    assert answer.status_code == 401 and "possession" in answer.json()["detail"]
    assert fleet.client.get("/api/v1/sites", headers=ADMIN).json() == []


def test_models_upload_promote_rollback(fleet: Fleet) -> None:
    c, admin = fleet.client, fleet.as_(Role.ADMIN)
    first = fleet.upload("a")
    second = fleet.upload("b", parent=first)
    assert c.post(f"/api/v1/models/{first}/promote", headers=admin).json()["status"] == "production"
    promoted = c.post(f"/api/v1/models/{second}/promote", headers=admin).json()
    assert promoted["status"] == "production"
    assert promoted["promoted_by"] == "operator:admin-key"
    assert c.get(f"/api/v1/models/{first}", headers=admin).json()["status"] == "retired"
    assert c.get(f"/api/v1/models/{second}", headers=admin).json()["parent_id"] == first

    back = c.post("/api/v1/models/rollback", headers=admin).json()
    assert (back["id"], back["status"]) == (first, "production")
    assert c.get(f"/api/v1/models/{second}", headers=admin).json()["status"] == "retired"
    # the first version replaced nothing: a second rollback has nowhere to go
    assert c.post("/api/v1/models/rollback", headers=admin).status_code == 409
    # retired versions cannot be promoted again, unknown ones are 404
    assert c.post(f"/api/v1/models/{second}/promote", headers=admin).status_code == 409
    assert c.post("/api/v1/models/999/promote", headers=admin).status_code == 404
    production = c.get("/api/v1/models?status=production", headers=admin).json()
    assert [m["id"] for m in production] == [first]


def test_model_upload_validation(fleet: Fleet) -> None:
    c, op = fleet.client, fleet.as_(Role.OPERATOR)

    def upload(**body: object) -> int:
        status: int = c.post("/api/v1/models", json=body, headers=op).status_code
        return status

    assert upload(onnx_base64="not base64!") == 422
    assert upload(onnx_base64=base64.b64encode(b"not an onnx model").decode()) == 422
    good = base64.b64encode(onnx_model("x")).decode()
    assert upload(onnx_base64=good, parent_id=42) == 404
    assert upload(onnx_base64=good, metrics={"rmse": "low"}) == 422
    assert upload(onnx_base64=good) == 201
    assert upload(onnx_base64=good) == 409  # same bytes, same sha256


def test_sealed_download_opens_only_for_the_requesting_site(
    fleet: Fleet, settings: CoordinatorSettings
) -> None:
    c = fleet.client
    site, other = fleet.enroll(), fleet.enroll()
    path = "/api/v1/site/model"
    assert c.get(path, headers=sign_request(site, "GET", path)).status_code == 404
    model_id = fleet.upload("served")
    c.post(f"/api/v1/models/{model_id}/promote", headers=fleet.as_(Role.ADMIN))

    answer = c.get(path, headers=sign_request(site, "GET", path))
    assert answer.status_code == 200
    assert answer.headers["X-Fedge-Model-Version"] == f"v{model_id}"
    coordinator_keys = fleet.authority()
    directory = KeyDirectory()
    directory.register(coordinator_keys)
    opened = OneShotOpener(site, directory).open(answer.content)
    assert opened.sender == coordinator_keys.site_id
    assert opened.content_type == ContentType.GLOBAL_MODEL
    assert opened.round_id == model_id
    bundle = ModelBundle.decode(opened.plaintext)
    assert (bundle.version, bundle.onnx) == (f"v{model_id}", onnx_model("served"))
    from fedge.security import InvalidEnvelope

    with pytest.raises(InvalidEnvelope):
        OneShotOpener(other, directory).open(answer.content)


def test_revoked_site_is_refused(fleet: Fleet) -> None:
    c = fleet.client
    site = fleet.enroll()
    path = "/api/v1/site/model"
    assert c.get(path, headers=sign_request(site, "GET", path)).status_code == 404
    revoked = c.post(f"/api/v1/sites/{site.site_id.hex()}/revoke", headers=fleet.as_(Role.ADMIN))
    assert revoked.json()["status"] == "revoked"
    answer = c.get(path, headers=sign_request(site, "GET", path))
    assert answer.status_code == 401 and "revoked" in answer.json()["detail"]
    again = c.post(f"/api/v1/sites/{site.site_id.hex()}/revoke", headers=fleet.as_(Role.ADMIN))
    assert again.status_code == 409
    assert c.post(f"/api/v1/sites/{'ab' * 16}/revoke", headers=ADMIN).status_code == 404


def test_api_keys_lifecycle(fleet: Fleet) -> None:
    c = fleet.client
    keys = c.get("/api/v1/keys", headers=ADMIN).json()
    assert "key_hash" not in keys[0] and "key" not in keys[0]
    viewer = next(k for k in keys if k["role"] == "viewer")
    assert (
        c.post(
            "/api/v1/keys", json={"name": "viewer-key", "role": "admin"}, headers=ADMIN
        ).status_code
        == 409
    )
    assert (
        c.post("/api/v1/keys", json={"name": "x", "role": "root"}, headers=ADMIN).status_code == 422
    )
    assert c.post(f"/api/v1/keys/{viewer['id']}/revoke", headers=ADMIN).json()["revoked"] is True
    assert c.get("/api/v1/sites", headers=fleet.as_(Role.VIEWER)).status_code == 401
    bootstrap = next(k for k in keys if k["name"] == "bootstrap-admin")
    assert c.post(f"/api/v1/keys/{bootstrap['id']}/revoke", headers=ADMIN).status_code == 409
    assert c.post("/api/v1/keys/9999/revoke", headers=ADMIN).status_code == 404


def test_every_change_and_denial_is_audited(fleet: Fleet) -> None:
    c = fleet.client
    site = fleet.enroll()
    model_id = fleet.upload("audited")
    c.post(f"/api/v1/models/{model_id}/promote", headers=fleet.as_(Role.OPERATOR))  # 403
    c.post(f"/api/v1/models/{model_id}/promote", headers=fleet.as_(Role.ADMIN))
    c.post(f"/api/v1/sites/{site.site_id.hex()}/revoke", headers=fleet.as_(Role.ADMIN))
    c.get("/api/v1/rounds", headers={"X-API-Key": "fedge-op.wrong"})  # 401
    log = c.get("/api/v1/audit", headers=ADMIN).json()
    seen = [(e["actor"], e["action"], e["outcome"]) for e in log]
    for entry in [
        ("operator:operator-key", "enrollment.token", "ok"),
        ("anonymous", "enrollment.begin", "ok"),
        (f"site:{site.site_id.hex()}", "site.enroll", "ok"),
        ("operator:operator-key", "model.upload", "ok"),
        ("operator:operator-key", "POST /api/v1/models/{model_id}/promote", "denied"),
        ("operator:admin-key", "model.promote", "ok"),
        ("operator:admin-key", "site.revoke", "ok"),
        ("anonymous", "GET /api/v1/rounds", "denied"),
    ]:
        assert entry in seen
    page = c.get(f"/api/v1/audit?after_id={log[2]['id']}&limit=2", headers=ADMIN).json()
    assert [e["id"] for e in page] == [log[3]["id"], log[4]["id"]]


def test_audit_log_is_append_only_in_the_database(client: TestClient) -> None:
    engine = client.app.state.coordinator.engine  # type: ignore[attr-defined]
    for statement in ("UPDATE audit_log SET outcome = 'ok'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_log")).scalar_one() >= 1


def test_rounds_list_validation(fleet: Fleet) -> None:
    c, viewer = fleet.client, fleet.as_(Role.VIEWER)
    assert c.get("/api/v1/rounds", headers=viewer).json() == []
    assert c.get("/api/v1/rounds?limit=0", headers=viewer).status_code == 422
    assert c.get(f"/api/v1/rounds?run_id={'r' * 65}", headers=viewer).status_code == 422


def test_state_survives_a_restart(settings: CoordinatorSettings) -> None:
    with TestClient(create_app(settings)) as first:
        fleet = Fleet.with_roles(first, [Role.OPERATOR])
        site = fleet.enroll()
        model_id = fleet.upload("durable")
        first.post(f"/api/v1/models/{model_id}/promote", headers=ADMIN)
        pending = fleet.token()
    with TestClient(create_app(settings)) as second:
        sites = second.get("/api/v1/sites", headers=ADMIN).json()
        assert [s["id"] for s in sites] == [site.site_id.hex()]
        models = second.get("/api/v1/models", headers=ADMIN).json()
        assert [(m["id"], m["status"]) for m in models] == [(model_id, "production")]
        path = "/api/v1/site/model"
        assert second.get(path, headers=sign_request(site, "GET", path)).status_code == 200
        assert (
            second.get(
                "/api/v1/rounds", headers={"X-API-Key": fleet.keys[Role.OPERATOR]}
            ).status_code
            == 200
        )
        # a token issued before the restart still admits exactly one site
        again = Fleet(second, fleet.keys)
        again.begin(SiteIdentity.generate(), pending)


def test_a_lost_database_is_a_503_not_a_crash(tmp_path: Path, identity_file: Path) -> None:
    import shutil

    shutil.copy(identity_file, tmp_path / "coordinator.key")
    moved = tmp_path / "db-dir"
    moved.mkdir()
    settings = CoordinatorSettings(
        database_url=f"sqlite:///{moved / 'c.db'}",
        model_store=tmp_path / "models",
        identity_file=tmp_path / "coordinator.key",
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        client.app.state.coordinator.engine.dispose()  # type: ignore[attr-defined]
        shutil.rmtree(moved)
        health = client.get("/healthz")
        assert health.status_code == 503 and "unreachable" in health.json()["detail"]
        listing = client.get("/api/v1/sites", headers=ADMIN)
        assert listing.status_code == 503 and "database error" in listing.json()["detail"]
