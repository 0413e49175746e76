"""A signed request is remembered as long as it is valid: a site whose clock runs ahead
stamps requests that stay fresh until ``sent_at + window``, so their nonces are kept
until then, and a replay after ``now + window`` is still refused."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from fedge.coordinator import (
    Coordinator,
    CoordinatorSettings,
    Role,
    UnauthenticatedError,
    sign_request,
)
from fedge.coordinator._access import verify_site_request
from fedge.coordinator._schema import RequestNonce
from fedge.coordinator.api import create_app
from fedge.security import SiteIdentity
from tests.coordinator.helpers import Fleet

PATH = "/api/v1/site/model"
WINDOW = 300.0

Verify = Callable[[dict[str, str], float], bytes]


@pytest.fixture
def enrolled(settings: CoordinatorSettings) -> Iterator[tuple[Coordinator, SiteIdentity, Verify]]:
    coordinator = Coordinator(settings)
    try:
        with TestClient(create_app(settings, coordinator)) as client:
            site = Fleet.with_roles(client, [Role.OPERATOR]).enroll()

        def verify(headers: dict[str, str], now: float) -> bytes:
            return verify_site_request(
                coordinator.engine,
                coordinator.directory,
                method="GET",
                target=PATH,
                body=b"",
                headers=dict(headers),
                window=WINDOW,
                now=now,
            )

        yield coordinator, site, verify
    finally:
        coordinator.close()


def test_a_request_from_a_fast_clock_cannot_be_replayed_after_now_plus_window(
    enrolled: tuple[Coordinator, SiteIdentity, Verify],
) -> None:
    coordinator, site, verify = enrolled
    now = time.time()
    ahead = sign_request(site, "GET", PATH, now=now + WINDOW - 1)  # the site's clock is fast
    assert verify(ahead, now) == site.site_id
    later = now + WINDOW + 1  # past now + window, still inside sent_at + window
    # Another request at that time clears the expired nonces, as every request does.
    assert verify(sign_request(site, "GET", PATH, now=later), later) == site.site_id
    with pytest.raises(UnauthenticatedError, match="replayed"):
        verify(ahead, later)
    with Session(coordinator.engine) as session:
        kept = session.exec(
            select(RequestNonce).where(RequestNonce.nonce == ahead["X-Fedge-Nonce"])
        ).one()
    assert kept.expires_at == pytest.approx(float(ahead["X-Fedge-Timestamp"]) + WINDOW)


def test_once_the_request_itself_is_stale_its_nonce_may_go(
    enrolled: tuple[Coordinator, SiteIdentity, Verify],
) -> None:
    coordinator, site, verify = enrolled
    now = time.time()
    ahead = sign_request(site, "GET", PATH, now=now + WINDOW - 1)
    verify(ahead, now)
    gone = now + 2 * WINDOW  # past sent_at + window: the timestamp refuses it now
    verify(sign_request(site, "GET", PATH, now=gone), gone)
    with pytest.raises(UnauthenticatedError, match="replay window"):
        verify(ahead, gone)
    with Session(coordinator.engine) as session:
        nonces = session.exec(select(RequestNonce.nonce)).all()
    assert ahead["X-Fedge-Nonce"] not in nonces  # the table does not keep what cannot recur


def test_a_slow_clock_keeps_the_nonce_for_now_plus_window(
    enrolled: tuple[Coordinator, SiteIdentity, Verify],
) -> None:
    coordinator, site, verify = enrolled
    now = time.time()
    behind = sign_request(site, "GET", PATH, now=now - WINDOW + 1)
    verify(behind, now)
    with pytest.raises(UnauthenticatedError, match="replayed"):
        verify(behind, now + 0.5)
    with Session(coordinator.engine) as session:
        kept = session.exec(
            select(RequestNonce).where(RequestNonce.nonce == behind["X-Fedge-Nonce"])
        ).one()
    assert kept.expires_at == pytest.approx(now + WINDOW)


def test_the_group_commit_keeps_a_fast_clocks_nonce_until_sent_at_plus_window(
    enrolled: tuple[Coordinator, SiteIdentity, Verify],
) -> None:
    coordinator, site, _ = enrolled
    requests = coordinator.site_requests
    now = time.time()
    ahead = sign_request(site, "GET", PATH, now=now + WINDOW - 1)
    signed = requests.parse(method="GET", target=PATH, body=b"", headers=ahead, now=now)
    keys = requests.load_keys(site.site_id)
    assert requests.verify(signed, keys) is False  # the current keys signed it
    requests.submit(signed, keys, now=now).result(timeout=30)
    with pytest.raises(UnauthenticatedError, match="replayed"):
        requests.submit(signed, keys, now=now + 1).result(timeout=30)
    with Session(coordinator.engine) as session:
        kept = session.exec(
            select(RequestNonce).where(RequestNonce.nonce == ahead["X-Fedge-Nonce"])
        ).one()
    assert kept.expires_at == pytest.approx(float(ahead["X-Fedge-Timestamp"]) + WINDOW)
