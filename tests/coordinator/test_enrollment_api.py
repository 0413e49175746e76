"""Enrollment across workers, restarts and strangers: the pending enrollment lives in the
database, a wrong proof neither cancels it nor spends the token, and every refusal is
audited once with its reason. Plus the ``Registry`` storage contract, on the in-memory
registry and on both databases."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from fedge.coordinator import DEV_ADMIN_KEY, Coordinator, CoordinatorSettings, Role
from fedge.coordinator.api import create_app
from fedge.security import (
    EnrollmentOutcome,
    MemoryRegistry,
    PendingEnrollment,
    Registry,
    SiteIdentity,
    SitePublicKeys,
    SiteRecord,
    SiteStatus,
    enrollment_request,
    prove_possession,
)
from tests.coordinator.helpers import ADMIN, Fleet
from tests.support.flower import SiteFiles, enroll
from tests.support.ports import free_port, service, wait_for_port

FEDGE = str(Path(sys.executable).with_name("fedge"))
COMPLETE = "/api/v1/enrollment/complete"


def _proof_body(identity: SiteIdentity, proof: bytes) -> dict[str, str]:
    return {"site_id": identity.site_id.hex(), "proof_base64": base64.b64encode(proof).decode()}


def _denials(fleet: Fleet) -> list[dict[str, Any]]:
    entries = fleet.client.get("/api/v1/audit?limit=1000", headers=ADMIN).json()
    return [e for e in entries if e["outcome"] == "denied" and "/enrollment/" in e["action"]]


# --- over the API ----------------------------------------------------------------------


def test_an_enrollment_begun_before_a_restart_completes_after_it(
    settings: CoordinatorSettings,
) -> None:
    identity = SiteIdentity.generate()
    with TestClient(create_app(settings)) as first:
        fleet = Fleet.with_roles(first, [Role.OPERATOR])
        challenge = fleet.begin(identity, fleet.token())
    with TestClient(create_app(settings)) as second:
        done = second.post(
            COMPLETE, json=_proof_body(identity, prove_possession(identity, challenge))
        )
        assert done.status_code == 201, done.text
        assert done.json()["id"] == identity.site_id.hex()


def test_a_repeated_begin_gets_the_same_challenge_and_one_audit_entry(fleet: Fleet) -> None:
    """A site that lost the answer asks again; a replayed request adds nothing to the log."""
    identity, token = SiteIdentity.generate(), fleet.token()
    assert fleet.begin(identity, token) == fleet.begin(identity, token)
    log = fleet.client.get("/api/v1/audit?limit=1000", headers=ADMIN).json()
    assert [e["target"] for e in log if e["action"] == "enrollment.begin"] == [
        identity.site_id.hex()
    ]


def test_a_bogus_completion_does_not_cancel_the_enrollment(fleet: Fleet) -> None:
    """The site id is public; a stranger's wrong proof leaves the real one working."""
    identity = SiteIdentity.generate()
    challenge = fleet.begin(identity, fleet.token())
    bogus = fleet.client.post(COMPLETE, json=_proof_body(identity, b"\x00" * 32))
    assert bogus.status_code == 401, bogus.text
    done = fleet.client.post(
        COMPLETE, json=_proof_body(identity, prove_possession(identity, challenge))
    )
    assert done.status_code == 201, done.text


def test_five_wrong_proofs_end_the_enrollment_but_not_the_token(fleet: Fleet) -> None:
    identity, token = SiteIdentity.generate(), fleet.token()
    challenge = fleet.begin(identity, token)
    details = [
        fleet.client.post(COMPLETE, json=_proof_body(identity, b"x")).json()["detail"]
        for _ in range(5)
    ]
    assert [d.rsplit("(", 1)[-1] for d in details[:4]] == [
        f"{n} attempts left)" for n in (4, 3, 2, 1)
    ]
    assert "enrollment has ended" in details[4]
    real = fleet.client.post(
        COMPLETE, json=_proof_body(identity, prove_possession(identity, challenge))
    )
    assert real.status_code == 401 and "no enrollment in progress" in real.json()["detail"]
    again = fleet.begin(identity, token)  # the token was never spent
    done = fleet.client.post(
        COMPLETE, json=_proof_body(identity, prove_possession(identity, again))
    )
    assert done.status_code == 201, done.text


def test_concurrent_wrong_proofs_are_counted_together(fleet: Fleet) -> None:
    """The count is the database's: racing wrong proofs end the enrollment after five."""
    from concurrent.futures import ThreadPoolExecutor

    identity = SiteIdentity.generate()
    challenge = fleet.begin(identity, fleet.token())

    def bogus(_: int) -> str:
        answer = fleet.client.post(COMPLETE, json=_proof_body(identity, b"x"))
        assert answer.status_code == 401, answer.text
        detail: str = answer.json()["detail"]
        return detail

    with ThreadPoolExecutor(8) as pool:
        details = list(pool.map(bogus, range(12)))
    assert sorted(d.rsplit("(", 1)[1] for d in details if "attempts left" in d) == [
        f"{n} attempts left)" for n in (1, 2, 3, 4)
    ]
    real = fleet.client.post(
        COMPLETE, json=_proof_body(identity, prove_possession(identity, challenge))
    )
    assert real.status_code == 401 and "no enrollment in progress" in real.json()["detail"]


def test_an_enrolled_site_keeps_the_token_and_its_refusal_is_audited(fleet: Fleet) -> None:
    enrolled = fleet.enroll()
    token = fleet.token()
    request = enrollment_request(enrolled, token, fleet.authority())
    answer = fleet.client.post(
        "/api/v1/enrollment/begin", json={"request_base64": base64.b64encode(request).decode()}
    )
    assert answer.status_code == 400 and "already enrolled" in answer.json()["detail"]
    [entry] = _denials(fleet)
    assert entry["action"] == "POST /api/v1/enrollment/begin"
    assert entry["detail"] == f"400: site {enrolled.site_id.hex()} is already enrolled"
    newcomer = SiteIdentity.generate()
    challenge = fleet.begin(newcomer, token)
    done = fleet.client.post(
        COMPLETE, json=_proof_body(newcomer, prove_possession(newcomer, challenge))
    )
    assert done.status_code == 201, done.text


def test_every_enrollment_refusal_is_audited_once_without_secrets(fleet: Fleet) -> None:
    post = fleet.client.post
    identity, token = SiteIdentity.generate(), fleet.token()
    challenge = fleet.begin(identity, token)
    wrong = prove_possession(SiteIdentity.generate(), challenge)
    unknown = enrollment_request(
        SiteIdentity.generate(), "fedge-enroll-v1." + "A" * 43, fleet.authority()
    )

    def begin(request: str) -> httpx.Response:
        answer: httpx.Response = post("/api/v1/enrollment/begin", json={"request_base64": request})
        return answer

    refusals = [
        (begin("%%%"), 422, "not base64"),
        (begin(base64.b64encode(b"x").decode()), 400, "must be"),
        (begin(base64.b64encode(unknown).decode()), 401, "unknown or already used"),
        (post(COMPLETE, json=_proof_body(SiteIdentity.generate(), b"p")), 401, "no enrollment"),
        (post(COMPLETE, json={**_proof_body(identity, b""), "proof_base64": "%"}), 422, "base64"),
        (post(COMPLETE, json=_proof_body(identity, wrong)), 401, "possession"),
    ]
    for answer, status, reason in refusals:
        assert answer.status_code == status and reason in answer.json()["detail"], answer.text
    denials = _denials(fleet)
    assert [(e["detail"].split(":")[0]) for e in denials] == [str(s) for _, s, _ in refusals]
    assert all(reason in e["detail"] for e, (_, _, reason) in zip(denials, refusals, strict=True))
    log = fleet.client.get("/api/v1/audit?limit=1000", headers=ADMIN).text
    secrets = [token, token.split(".", 1)[1], base64.b64encode(wrong).decode(), wrong.hex()]
    proof = prove_possession(identity, challenge)
    secrets += [base64.b64encode(proof).decode(), proof.hex()]
    assert not [s for s in secrets if s in log]


# --- several worker processes and a restart, as operators run them ---------------------


def _serving(parent: int, port: int) -> int:
    """How many processes under ``parent`` listen on ``port``."""
    import psutil

    count = 0
    for child in psutil.Process(parent).children(recursive=True):
        try:
            conns = child.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        count += any(c.laddr and c.laddr.port == port and c.status == "LISTEN" for c in conns)
    return count


def _serve(
    tmp_path: Path, database_url: str, port: int, workers: int
) -> AbstractContextManager[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "FEDGE_COORDINATOR_DATABASE_URL": database_url,
        "FEDGE_COORDINATOR_MODEL_STORE": str(tmp_path / "models"),
        "FEDGE_COORDINATOR_IDENTITY_FILE": str(tmp_path / "coordinator.key"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    cmd = [FEDGE, "coordinator", "serve", "--port", str(port), "--workers", str(workers)]
    return service(cmd, tmp_path / f"log-{time.monotonic_ns()}", env)


def test_enrollments_succeed_across_two_workers_and_a_restart(
    tmp_path: Path, database_url: str
) -> None:
    """Every request on a new connection, so the kernel hands each to either worker: a
    pending enrollment held by one worker would fail about half of the enrollments."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    limits = httpx.Limits(max_keepalive_connections=0)
    headers = {"X-API-Key": DEV_ADMIN_KEY}
    late = SiteIdentity.generate()
    with _serve(tmp_path, database_url, port, workers=2) as proc:
        wait_for_port(port, timeout=90)
        deadline = time.monotonic() + 60
        while _serving(proc.pid, port) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _serving(proc.pid, port) == 2
        with httpx.Client(base_url=base, headers=headers, limits=limits, timeout=30) as client:
            sites = [SiteFiles(tmp_path / f"site{i}", SiteIdentity.generate()) for i in range(20)]
            for site in sites:
                enroll(client, site)  # asserts 200 and 201
            listed = client.get("/api/v1/sites").json()
            assert {s["id"] for s in listed} == {s.identity.site_id.hex() for s in sites}
            authority = SitePublicKeys.from_bytes(
                base64.b64decode(
                    client.get("/api/v1/enrollment/authority").json()["public_keys_base64"]
                )
            )
            token = client.post("/api/v1/enrollment/tokens", json={}).json()["token"]
            begun = client.post(
                "/api/v1/enrollment/begin",
                json={
                    "request_base64": base64.b64encode(
                        enrollment_request(late, token, authority)
                    ).decode()
                },
            )
            assert begun.status_code == 200, begun.text
            challenge = base64.b64decode(begun.json()["challenge_base64"])
    with _serve(tmp_path, database_url, port, workers=1):
        wait_for_port(port, timeout=90)
        done = httpx.post(
            f"{base}{COMPLETE}", json=_proof_body(late, prove_possession(late, challenge))
        )
        assert done.status_code == 201, done.text


# --- the storage contract --------------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def registry(
    request: pytest.FixtureRequest, tmp_path: Path, identity_file: Path
) -> Iterator[Registry]:
    if request.param == "memory":
        yield MemoryRegistry()
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'coordinator.db'}"
    else:
        url = request.getfixturevalue("postgres").new_database()
    shutil.copy(identity_file, tmp_path / "coordinator.key")
    coordinator = Coordinator(
        CoordinatorSettings(
            database_url=url,
            model_store=tmp_path / "models",
            identity_file=tmp_path / "coordinator.key",
        )
    )
    try:
        yield coordinator.registry
    finally:
        coordinator.close()


def _pending(
    identity: SiteIdentity, token: bytes, tag: bytes, expires_at: float = 100.0
) -> PendingEnrollment:
    return PendingEnrollment(
        identity.public_keys(), token, b"challenge-" + tag, tag * 32, expires_at
    )


def _put(
    registry: Registry, pending: PendingEnrollment, now: float, per_token: int = 8
) -> PendingEnrollment:
    stored = registry.put_pending(pending, now, per_token)
    assert stored is not None
    return stored


def _record(identity: SiteIdentity) -> SiteRecord:
    return SiteRecord(identity.public_keys(), SiteStatus.ACTIVE, 1.0)


def test_registry_keeps_the_pending_of_a_repeated_request(registry: Registry) -> None:
    site, token, other = SiteIdentity.generate(), b"t" * 32, b"o" * 32
    registry.put_token(token, 50.0)
    registry.put_token(other, 50.0)
    first = _put(registry, _pending(site, token, b"a"), now=1.0)
    assert registry.fail_pending(first, limit=5) == 1
    kept = _put(registry, _pending(site, token, b"b"), now=2.0)
    assert (kept.challenge, kept.failures) == (b"challenge-a", 1)
    replaced = _put(registry, _pending(site, other, b"c"), now=3.0)
    assert registry.get_pending(site.site_id) == replaced
    assert registry.fail_pending(first, limit=5) is None  # aimed at the replaced one
    assert registry.get_pending(site.site_id) == replaced


def test_registry_forgets_expired_pending_enrollments(registry: Registry) -> None:
    old, new, token = SiteIdentity.generate(), SiteIdentity.generate(), b"t" * 32
    registry.put_token(token, 500.0)
    _put(registry, _pending(old, token, b"a", expires_at=10.0), now=1.0)
    _put(registry, _pending(new, token, b"b", expires_at=100.0), now=20.0)
    assert registry.get_pending(old.site_id) is None
    # an expired one of the same request is not kept either: a fresh challenge
    again = _put(registry, _pending(new, token, b"c", expires_at=300.0), now=200.0)
    assert again.challenge == b"challenge-c"


def test_registry_ends_a_pending_enrollment_at_the_limit(registry: Registry) -> None:
    site, token = SiteIdentity.generate(), b"t" * 32
    registry.put_token(token, 50.0)
    pending = _put(registry, _pending(site, token, b"a"), now=1.0)
    assert [registry.fail_pending(pending, limit=3) for _ in range(4)] == [1, 2, 3, None]
    assert registry.get_pending(site.site_id) is None


def test_registry_finishes_an_enrollment_once(registry: Registry) -> None:
    site, rival, token = SiteIdentity.generate(), SiteIdentity.generate(), b"t" * 32
    registry.put_token(token, 50.0)
    ours = _put(registry, _pending(site, token, b"a"), now=1.0)
    theirs = _put(registry, _pending(rival, token, b"b"), now=1.0)
    assert registry.token_expiry(token) == 50.0
    assert registry.finish_enrollment(ours, _record(site)) is EnrollmentOutcome.ENROLLED
    assert registry.token_expiry(token) is None
    assert registry.get_site(site.site_id) is not None
    assert registry.finish_enrollment(ours, _record(site)) is EnrollmentOutcome.ENDED
    assert registry.finish_enrollment(theirs, _record(rival)) is EnrollmentOutcome.TOKEN_USED
    assert registry.get_pending(rival.site_id) is None
    assert registry.get_site(rival.site_id) is None


def test_registry_spends_no_token_for_a_site_enrolled_meanwhile(registry: Registry) -> None:
    site, token = SiteIdentity.generate(), b"t" * 32
    registry.put_token(token, 50.0)
    pending = _put(registry, _pending(site, token, b"a"), now=1.0)
    registry.put_site(_record(site))
    outcome = registry.finish_enrollment(pending, _record(site))
    assert outcome is EnrollmentOutcome.ALREADY_ENROLLED
    assert registry.get_pending(site.site_id) is None
    assert registry.token_expiry(token) == 50.0
    assert (
        registry.finish_enrollment(_pending(SiteIdentity.generate(), token, b"z"), _record(site))
        is EnrollmentOutcome.ENDED
    )
    assert registry.token_expiry(token) == 50.0


def test_registry_caps_the_pending_enrollments_of_one_token(registry: Registry) -> None:
    a, b, c = (SiteIdentity.generate() for _ in range(3))
    token = b"t" * 32
    registry.put_token(token, 500.0)
    first = _put(registry, _pending(a, token, b"a"), now=1.0, per_token=2)
    _put(registry, _pending(b, token, b"b"), now=1.0, per_token=2)
    assert registry.put_pending(_pending(c, token, b"c"), 1.0, per_token=2) is None
    assert registry.get_pending(c.site_id) is None
    # a site already counted may repeat or replace its own
    assert _put(registry, _pending(a, token, b"d"), now=2.0, per_token=2) == first
    # once the others' challenges expire, the token admits another
    _put(registry, _pending(c, token, b"e", expires_at=300.0), now=150.0, per_token=2)
