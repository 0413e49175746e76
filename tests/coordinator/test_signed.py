"""Signed site requests: fresh and correct passes; replayed, tampered, stale, foreign,
malformed or unenrolled requests are refused with 401 and audited."""

from __future__ import annotations

import time
from collections.abc import Callable

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
