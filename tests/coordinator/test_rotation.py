"""Site key rotation over the API (both databases): a site's statement, in a request signed
with its current key, moves it to the next generation; the previous key is accepted for
the grace period and refused after it; a bad statement changes nothing."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import pytest

from fedge.coordinator import UnauthenticatedError, sign_request
from fedge.coordinator._access import verify_site_request
from fedge.security import SiteIdentity, SiteRecord
from tests.coordinator.helpers import ADMIN, Fleet

ROTATE = "/api/v1/site/rotate"
MODEL = "/api/v1/site/model"


def _post_rotation(fleet: Fleet, signer: SiteIdentity, statement_b64: str) -> tuple[int, str]:
    body = json.dumps({"statement_base64": statement_b64}).encode()
    headers = {**sign_request(signer, "POST", ROTATE, body), "Content-Type": "application/json"}
    answer = fleet.client.post(ROTATE, content=body, headers=headers)
    detail = answer.json().get("detail", "") if answer.status_code >= 400 else ""
    return answer.status_code, str(detail)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _site_row(fleet: Fleet, site: SiteIdentity) -> dict[str, object]:
    answer = fleet.client.get(f"/api/v1/sites/{site.site_id.hex()}", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    row: dict[str, object] = answer.json()
    return row


def _record(fleet: Fleet, site: SiteIdentity) -> SiteRecord | None:
    """The registry's record: keys, previous keys and their grace, status."""
    coordinator = fleet.client.app.state.coordinator  # type: ignore[attr-defined]
    record: SiteRecord | None = coordinator.registry.get_site(site.site_id)
    return record


def _authenticated(fleet: Fleet, signer: SiteIdentity) -> int:
    """401 when the site's signature is refused; 404 (no model yet) when it is accepted."""
    code: int = fleet.client.get(MODEL, headers=sign_request(signer, "GET", MODEL)).status_code
    return code


def test_rotation_moves_the_site_to_the_next_generation(fleet: Fleet) -> None:
    site = fleet.enroll()
    new, statement = site.rotate()
    assert _post_rotation(fleet, site, _b64(statement)) == (200, "")
    assert _site_row(fleet, site)["generation"] == 1
    assert _authenticated(fleet, new) == 404  # the new key signs
    assert _authenticated(fleet, site) == 404  # and the old one, within the grace period
    # Rotating again takes the new key's statement (generation 2), signed by the new key.
    newer, again = new.rotate()
    assert _post_rotation(fleet, new, _b64(again)) == (200, "")
    assert _site_row(fleet, site)["generation"] == 2
    assert _authenticated(fleet, newer) == 404
    assert _authenticated(fleet, site) == 401  # two generations back: gone
    log = fleet.client.get("/api/v1/audit?limit=1000", headers=ADMIN).json()
    rotations = [e for e in log if e["action"] == "site.rotate"]
    assert [e["outcome"] for e in rotations] == ["ok", "ok"]
    assert all(e["target"] == site.site_id.hex() for e in rotations)


def test_the_previous_key_is_refused_after_the_grace_period(fleet: Fleet) -> None:
    site = fleet.enroll()
    new, statement = site.rotate()
    assert _post_rotation(fleet, site, _b64(statement))[0] == 200
    coordinator = fleet.client.app.state.coordinator  # type: ignore[attr-defined]
    grace = coordinator.settings.rotation_grace_seconds

    def verify(signer: SiteIdentity, at: float) -> bytes:
        site_id: bytes = verify_site_request(
            coordinator.engine, coordinator.directory, method="GET", target=MODEL, body=b"",
            headers=dict(sign_request(signer, "GET", MODEL, now=at)), window=300.0, now=at,
        )  # fmt: skip
        return site_id

    within, after = time.time() + grace - 60, time.time() + grace + 60
    assert verify(site, within) == site.site_id
    with pytest.raises(UnauthenticatedError, match="not accepted"):
        verify(site, after)
    assert verify(new, after) == site.site_id


Bad = Callable[[SiteIdentity, SiteIdentity], str]


def _wrong_generation(site: SiteIdentity, _: SiteIdentity) -> str:
    new, _statement = site.rotate()
    return _b64(new.rotate()[1])  # generation 2 while the coordinator holds 0


def _bad_signature(site: SiteIdentity, _: SiteIdentity) -> str:
    statement = bytearray(site.rotate()[1])
    statement[-10] ^= 0xFF  # inside the new key's signature
    return _b64(bytes(statement))


def _old_signature_swapped(site: SiteIdentity, other: SiteIdentity) -> str:
    """The new keys signed by some other key than the site's current one."""
    from fedge.security._identity import PUBLIC_KEYS_SIZE, ROTATION_CONTEXT

    statement = site.rotate()[1]
    body = statement[:PUBLIC_KEYS_SIZE]
    forged = other.signing_key.sign(body, ROTATION_CONTEXT)
    return _b64(body + forged + statement[PUBLIC_KEYS_SIZE + len(forged) :])


BAD: dict[str, tuple[Bad, str]] = {
    "not base64": (lambda _, __: "***not base64***", "not base64"),
    "over the size limit": (lambda _, __: "A" * 16_388, "at most 16384 characters"),
    "truncated": (lambda s, _: _b64(s.rotate()[1][:-1]), "wrong size"),
    "empty after decoding": (lambda _, __: "AAAA", "wrong size"),
    "wrong generation": (_wrong_generation, "generation 2, expected 1"),
    "bad signature": (_bad_signature, "rotation refused"),
    "not signed by the current key": (_old_signature_swapped, "rotation refused"),
    "another site's statement": (lambda _, o: _b64(o.rotate()[1]), "another site"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_statement_is_refused_and_changes_nothing(fleet: Fleet, case: str) -> None:
    site, other = fleet.enroll(), fleet.enroll()
    before = _record(fleet, site)
    make, reason = BAD[case]
    status, detail = _post_rotation(fleet, site, make(site, other))
    assert status == 422 and reason in detail, detail
    assert _record(fleet, site) == before
    assert _site_row(fleet, other)["generation"] == 0
    assert _authenticated(fleet, site) == 404  # the enrolled key still signs
    if case not in ("not base64", "over the size limit"):  # refused before it was read
        log = fleet.client.get("/api/v1/audit?limit=1000", headers=ADMIN).json()
        assert [e["outcome"] for e in log if e["action"] == "site.rotate"] == ["denied"]


def test_a_revoked_site_cannot_rotate(fleet: Fleet) -> None:
    site = fleet.enroll()
    assert (
        fleet.client.post(f"/api/v1/sites/{site.site_id.hex()}/revoke", headers=ADMIN).status_code
        == 200
    )
    status, _ = _post_rotation(fleet, site, _b64(site.rotate()[1]))
    assert status == 401
    assert _site_row(fleet, site)["generation"] == 0
