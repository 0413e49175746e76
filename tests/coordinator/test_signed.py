"""Signed site requests: fresh and correct passes; replayed, tampered, stale, foreign,
malformed or unenrolled requests are refused with 401 and audited."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fedge.coordinator import (
    Coordinator,
    CoordinatorSettings,
    Role,
    UnauthenticatedError,
    sign_request,
)
from fedge.coordinator._access import verify_site_request
from fedge.coordinator.api import create_app
from fedge.security import SiteIdentity
from tests.coordinator.helpers import ADMIN, Fleet

PATH = "/api/v1/site/model"


def _get(fleet: Fleet, headers: dict[str, str], path: str = PATH) -> tuple[int, str]:
    answer = fleet.client.get(path, headers=headers)
    return answer.status_code, answer.json()["detail"]


def test_replay_is_refused_also_after_a_restart(
    fleet: Fleet, settings: CoordinatorSettings
) -> None:
    site = fleet.enroll()
    headers = sign_request(site, "GET", PATH)
    assert _get(fleet, headers)[0] == 404  # authenticated; no production model yet
    assert _get(fleet, headers) == (401, "replayed request (nonce already used)")
    with TestClient(create_app(settings)) as restarted:
        assert restarted.get(PATH, headers=headers).status_code == 401
        log = restarted.get("/api/v1/audit", headers=ADMIN).json()
    denied = [e for e in log if e["outcome"] == "denied"]
    assert len(denied) == 2
    assert all(e["actor"] == f"site:{site.site_id.hex()}" for e in denied)


Tamper = Callable[[SiteIdentity, SiteIdentity], dict[str, str]]
TAMPERED: dict[str, tuple[Tamper, str]] = {
    "other path": (lambda s, _: sign_request(s, "GET", "/api/v1/site/other"), "signature"),
    "other query": (lambda s, _: sign_request(s, "GET", PATH + "?v=1"), "signature"),
    "other method": (lambda s, _: sign_request(s, "POST", PATH), "signature"),
    "stale": (lambda s, _: sign_request(s, "GET", PATH, now=time.time() - 301), "window"),
    "future": (lambda s, _: sign_request(s, "GET", PATH, now=time.time() + 301), "window"),
    "timestamp edited": (
        lambda s, _: {**sign_request(s, "GET", PATH), "X-Fedge-Timestamp": f"{time.time():.3f}1"},
        "signature",
    ),
    "nonce edited": (
        lambda s, _: {**sign_request(s, "GET", PATH), "X-Fedge-Nonce": "ab" * 16},
        "signature",
    ),
    "signed by another site": (
        lambda s, o: {**sign_request(o, "GET", PATH), "X-Fedge-Site": s.site_id.hex()},
        "signature",
    ),
    "unenrolled site": (
        lambda _, __: sign_request(SiteIdentity.generate(), "GET", PATH),
        "not enrolled",
    ),
    "no headers": (lambda _, __: {}, "headers"),
    "site id not hex": (
        lambda s, _: {**sign_request(s, "GET", PATH), "X-Fedge-Site": "zz"},
        "malformed",
    ),
    "signature not base64": (
        lambda s, _: {**sign_request(s, "GET", PATH), "X-Fedge-Signature": "***"},
        "malformed",
    ),
    "timestamp not a number": (
        lambda s, _: {**sign_request(s, "GET", PATH), "X-Fedge-Timestamp": "nan"},
        "window",
    ),
    "short nonce": (lambda s, _: sign_request(s, "GET", PATH, nonce="abc"), "nonce"),
}


def test_tampered_requests_are_refused(fleet: Fleet) -> None:
    site, other = fleet.enroll(), fleet.enroll()
    for name, (make, reason) in TAMPERED.items():
        status, detail = _get(fleet, make(site, other))
        assert status == 401, name
        assert reason in detail, (name, detail)
    assert _get(fleet, sign_request(site, "GET", PATH))[0] == 404  # the real one still works


def test_body_is_bound_by_its_hash(settings: CoordinatorSettings) -> None:
    coordinator = Coordinator(settings)
    try:
        with TestClient(create_app(settings, coordinator)) as client:
            site = Fleet.with_roles(client, [Role.OPERATOR]).enroll()
        headers = sign_request(site, "POST", "/api/v1/site/forecasts", b'{"load": 1}')

        def verify(body: bytes) -> bytes:
            return verify_site_request(
                coordinator.engine,
                coordinator.directory,
                method="POST",
                target="/api/v1/site/forecasts",
                body=body,
                headers=dict(headers),
                window=300,
            )

        with pytest.raises(UnauthenticatedError, match="signature"):
            verify(b'{"load": 2}')
        assert verify(b'{"load": 1}') == site.site_id
    finally:
        coordinator.close()


def test_group_commit_admits_a_nonce_once_across_threads_and_workers(
    settings: CoordinatorSettings,
) -> None:
    """Two writers on one database, as two worker processes have: the same signed request
    sent 16 times at once through both is admitted exactly once; others all pass."""
    from concurrent.futures import Future, ThreadPoolExecutor
    from threading import Barrier

    from fedge.coordinator._access import SiteRequests, StaleKeysError
    from fedge.coordinator._db import open_database
    from fedge.security import KeyDirectory

    coordinator = Coordinator(settings)
    engine = open_database(settings.database_url)
    other = SiteRequests(engine, KeyDirectory(coordinator.registry), 300.0)
    try:
        with TestClient(create_app(settings, coordinator)) as client:
            fleet = Fleet.with_roles(client, [Role.OPERATOR, Role.ADMIN])
            site, bystander = fleet.enroll(), fleet.enroll()
        writers = [coordinator.site_requests, other]
        shared = sign_request(site, "GET", PATH)
        requests = [(writers[n % 2], shared) for n in range(16)]
        requests += [(writers[n % 2], sign_request(bystander, "GET", PATH)) for n in range(16)]
        barrier = Barrier(len(requests))

        def send(item: tuple[SiteRequests, dict[str, str]]) -> Future[object]:
            writer, headers = item
            signed = writer.parse(method="GET", target=PATH, body=b"", headers=headers)
            keys = writer.cached_keys(signed.site_id) or writer.load_keys(signed.site_id)
            previous = writer.verify(signed, keys)
            barrier.wait(timeout=30)
            return writer.submit(signed, keys, previous)

        with ThreadPoolExecutor(len(requests)) as pool:
            futures = list(pool.map(send, requests))
        outcomes = [f.exception(timeout=30) for f in futures]
        refused = [o for o in outcomes[:16] if o is not None]
        assert len(refused) == 15
        assert all("replayed" in str(o) for o in refused)
        assert outcomes[16:] == [None] * 16

        # A revocation committed through one worker refuses the other's cached keys.
        fresh = sign_request(site, "GET", PATH)
        signed = other.parse(method="GET", target=PATH, body=b"", headers=fresh)
        cached = other.cached_keys(site.site_id)
        assert cached is not None
        with engine.begin() as conn:  # another process rotating the keys
            conn.exec_driver_sql("UPDATE sites SET generation = generation + 1")
        with pytest.raises(StaleKeysError):
            other.submit(signed, cached).result(timeout=30)
        assert other.cached_keys(site.site_id) is None  # read anew next time
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE sites SET generation = generation - 1")
        cached = other.load_keys(site.site_id)
        coordinator.revoke_site(coordinator.operator(fleet.keys[Role.ADMIN]), site.site_id.hex())
        with pytest.raises(UnauthenticatedError, match="revoked"):
            other.submit(signed, cached).result(timeout=30)
    finally:
        other.close()
        engine.dispose()
        coordinator.close()


def test_a_failed_group_commit_fails_its_requests_and_stores_nothing(
    settings: CoordinatorSettings,
) -> None:
    """Nothing is acknowledged before it is committed: a batch whose transaction fails is
    refused with its nonce unspent, so the site's retry of the same request is stored."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from fedge.coordinator._health import write_forecasts
    from fedge.coordinator._schema import ForecastBatch

    coordinator = Coordinator(settings)
    try:
        with TestClient(create_app(settings, coordinator)) as client:
            site = Fleet.with_roles(client, [Role.OPERATOR]).enroll()
        requests = coordinator.site_requests
        target = "/api/v1/site/forecasts"
        batch = ForecastBatch.model_validate(
            {
                "model_version": "v1",
                "forecasts": [{"cell": "c0", "step": 2, "made_step": 1, "values": [0.5]}],
                "actuals": [{"cell": "c0", "step": 1, "values": [0.4]}],
            }
        )
        body = batch.model_dump_json().encode()
        headers = sign_request(site, "POST", target, body)
        signed = requests.parse(method="POST", target=target, body=body, headers=headers)
        keys = requests.load_keys(site.site_id)
        with coordinator.engine.begin() as conn:
            conn.execute(text("ALTER TABLE actuals RENAME TO actuals_away"))
        failed = requests.submit(signed, keys, False, write_forecasts, batch)
        with pytest.raises(SQLAlchemyError):
            failed.result(timeout=30)
        with coordinator.engine.begin() as conn:
            conn.execute(text("ALTER TABLE actuals_away RENAME TO actuals"))
            assert conn.execute(text("SELECT count(*) FROM forecasts")).scalar_one() == 0
        retried = requests.submit(signed, keys, False, write_forecasts, batch)
        assert retried.result(timeout=30) == 2
        with pytest.raises(UnauthenticatedError, match="replayed"):
            requests.submit(signed, keys, False, write_forecasts, batch).result(timeout=30)
    finally:
        coordinator.close()


@pytest.mark.slow
def test_two_worker_processes_admit_a_nonce_once_and_share_a_revocation(
    settings: CoordinatorSettings, tmp_path: Path
) -> None:
    """A real ``serve --workers 2``: one signed batch sent at once over 16 connections
    (spread over both workers) is stored once; after a revocation through one worker,
    neither accepts the site, though both had its keys cached."""
    import json
    import os
    import shutil
    import sys
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    import httpx

    from tests.coordinator.test_cli import _on_port
    from tests.support.ports import free_port, service, wait_for_port

    port = free_port()
    shutil.copy(settings.identity_file, tmp_path / "served.key")
    env = {
        **os.environ,
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "FEDGE_COORDINATOR_DATABASE_URL": settings.database_url,
        "FEDGE_COORDINATOR_MODEL_STORE": str(tmp_path / "served-models"),
        "FEDGE_COORDINATOR_IDENTITY_FILE": str(tmp_path / "served.key"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    fedge = str(Path(sys.executable).with_name("fedge"))
    cmd = [fedge, "coordinator", "serve", "--port", str(port), "--workers", "2"]
    target = "/api/v1/site/forecasts"
    with service(cmd, tmp_path / "serve.log", env) as proc:
        wait_for_port(port, timeout=90)
        deadline = time.monotonic() + 60
        while len(_on_port(proc.pid, port, "LISTEN")) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        base = f"http://127.0.0.1:{port}"
        clients = [httpx.Client(base_url=base, timeout=30) for _ in range(16)]
        try:
            roles = [Role.VIEWER, Role.OPERATOR, Role.ADMIN]
            fleet = Fleet.with_roles(clients[0], roles)  # type: ignore[arg-type]
            site = fleet.enroll()

            def batch(step: int) -> bytes:
                rows = [{"cell": "c0", "step": step + 1, "made_step": step, "values": [0.5]}]
                return json.dumps({"model_version": "v1", "forecasts": rows}).encode()

            def post(client: httpx.Client, body: bytes, headers: dict[str, str]) -> int:
                answer = client.post(
                    target, content=body, headers={**headers, "Content-Type": "application/json"}
                )
                return answer.status_code

            for n, client in enumerate(clients):  # every connection's worker caches the keys
                body = batch(n)
                assert post(client, body, sign_request(site, "POST", target, body)) == 201
            assert len(_on_port(proc.pid, port, "ESTABLISHED")) == 2  # both workers serve
            shared = batch(1000)
            headers = sign_request(site, "POST", target, shared)
            barrier = Barrier(len(clients))

            def race(client: httpx.Client) -> int:
                barrier.wait(timeout=30)
                return post(client, shared, headers)

            with ThreadPoolExecutor(len(clients)) as pool:
                statuses = sorted(pool.map(race, clients))
            assert statuses == [201] + [401] * 15
            revoked = clients[0].post(
                f"/api/v1/sites/{site.site_id.hex()}/revoke", headers=fleet.as_(Role.ADMIN)
            )
            assert revoked.status_code == 200
            for n, client in enumerate(clients):
                body = batch(2000 + n)
                assert post(client, body, sign_request(site, "POST", target, body)) == 401
            stored = clients[0].get(
                f"/api/v1/forecasts?site_id={site.site_id.hex()}", headers=fleet.as_(Role.VIEWER)
            )
            assert len(stored.json()) == 17  # 16 batches and the one that won the race
        finally:
            for client in clients:
                client.close()
