"""Concurrent state changes: one production version and one use per token, whatever the
interleaving, and never a 5xx (SQLite takes its write lock up front, PostgreSQL locks
the production row and a partial unique index backs both)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from fedge.coordinator import Role
from fedge.security import SiteIdentity, prove_possession
from tests.coordinator.helpers import Fleet


def test_concurrent_promotions_leave_one_production_version(fleet: Fleet) -> None:
    candidates = [fleet.upload(f"race-{i}") for i in range(6)]
    admin = fleet.as_(Role.ADMIN)

    def promote(model_id: int) -> int:
        status: int = fleet.client.post(
            f"/api/v1/models/{model_id}/promote", headers=admin
        ).status_code
        return status

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(promote, candidates))
    assert set(statuses) <= {200, 409} and 200 in statuses
    models = fleet.client.get("/api/v1/models", headers=admin).json()
    assert [m["status"] for m in models].count("production") == 1


def test_the_database_refuses_a_second_production_version(client: TestClient) -> None:
    fleet = Fleet.with_roles(client, [Role.OPERATOR])
    first, second = fleet.upload("p1"), fleet.upload("p2")
    engine = client.app.state.coordinator.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE model_versions SET status = 'PRODUCTION' WHERE id = {first}"))
    try:
        with engine.begin() as conn:
            conn.execute(
                text(f"UPDATE model_versions SET status = 'PRODUCTION' WHERE id = {second}")
            )
    except IntegrityError:
        pass
    else:
        raise AssertionError("a second production version was accepted")


def test_a_token_admits_one_of_many_concurrent_enrollments(fleet: Fleet) -> None:
    """Beginning spends nothing: six sites begin with one token, and of their six racing
    completions exactly one enrolls."""
    import base64

    token, sites = fleet.token(), [SiteIdentity.generate() for _ in range(6)]
    bodies = [
        {
            "site_id": s.site_id.hex(),
            "proof_base64": base64.b64encode(prove_possession(s, fleet.begin(s, token))).decode(),
        }
        for s in sites
    ]

    def complete(body: dict[str, str]) -> int:
        status: int = fleet.client.post("/api/v1/enrollment/complete", json=body).status_code
        return status

    with ThreadPoolExecutor(6) as pool:
        statuses = sorted(pool.map(complete, bodies))
    assert statuses == [201, 401, 401, 401, 401, 401]
    assert len(fleet.client.get("/api/v1/sites", headers=fleet.as_(Role.VIEWER)).json()) == 1
