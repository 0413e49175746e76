"""The decisions API over the DecisionService: answers, records, validation, roles."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from fedge.coordinator import Coordinator, CoordinatorSettings, Role, SettingsError
from fedge.coordinator.api import create_app
from tests.coordinator.helpers import ADMIN, Fleet
from tests.coordinator.policies import ENERGY_OBS, SLICE_OBS, write_policies


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    write_policies(tmp_path / "policies")
    return tmp_path / "policies"


@pytest.fixture
def deciding(settings: CoordinatorSettings, policy_dir: Path) -> Iterator[Fleet]:
    with TestClient(create_app(settings.model_copy(update={"policy_dir": policy_dir}))) as c:
        yield Fleet.with_roles(c, list(Role))


def _row(dim: int, **at: float) -> list[float]:
    row = [0.0] * dim
    for index, value in at.items():
        row[int(index.removeprefix("i"))] = value
    return row


def test_strategic_and_tactical_answers_are_served_and_recorded(
    deciding: Fleet, policy_dir: Path
) -> None:
    a, b = (s.site_id.hex() for s in (deciding.enroll(), deciding.enroll()))
    op = deciding.as_(Role.OPERATOR)
    answer = deciding.client.post(
        "/api/v1/decisions",
        json={
            "kind": "strategic",
            "site_ids": [a, b],
            "observations": [_row(ENERGY_OBS, i0=0.9), _row(ENERGY_OBS, i1=0.9)],
        },
        headers=op,
    ).json()
    version = json.loads((policy_dir / "manifest.json").read_text())["version"]
    assert answer["version"] == version
    assert answer["actions"] == [{"mode": "active"}, {"mode": "deep_sleep"}]

    tactical = deciding.client.post(
        "/api/v1/decisions",
        json={"kind": "tactical", "site_ids": [a], "observations": [_row(SLICE_OBS, i2=2.0)]},
        headers=op,
    ).json()
    shares = tactical["actions"][0]["shares"]
    assert len(shares) == 4 and abs(sum(shares) - 1) < 1e-5 and shares[0] > 0.7

    engine = deciding.client.app.state.coordinator.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT site_id, kind, policy_version FROM decisions")).all()
    assert sorted(rows) == sorted(
        [(a, "strategic", version), (b, "strategic", version), (a, "tactical", version)]
    )


def test_bad_batches_are_refused(deciding: Fleet) -> None:
    site = deciding.enroll()
    a = site.site_id.hex()
    op = deciding.as_(Role.OPERATOR)

    def status(body: dict[str, object] | bytes) -> int:
        if isinstance(body, bytes):
            headers = {**op, "Content-Type": "application/json"}
            code: int = deciding.client.post(
                "/api/v1/decisions", content=body, headers=headers
            ).status_code
            return code
        code = deciding.client.post("/api/v1/decisions", json=body, headers=op).status_code
        return code

    good: dict[str, object] = {
        "kind": "strategic",
        "site_ids": [a],
        "observations": [_row(ENERGY_OBS)],
    }
    assert status(good) == 200
    assert status({**good, "observations": [_row(ENERGY_OBS - 1)]}) == 422  # wrong width
    assert status({**good, "site_ids": [a, a]}) == 422  # 2 ids, 1 row
    assert status({**good, "kind": "tactical"}) == 422  # energy rows to the slice policy
    assert status({**good, "kind": "sleepy"}) == 422
    assert status({**good, "site_ids": []}) == 422
    assert status({**good, "site_ids": ["ff" * 16]}) == 404  # not enrolled
    nan_row = json.dumps({**good, "observations": [[float("nan")] * ENERGY_OBS]})
    assert status(nan_row.encode()) == 422
    assert status(b"{not json") == 422
    assert status(b"") == 422
    missing = deciding.client.post(
        "/api/v1/decisions", json={"kind": "strategic", "site_ids": [a]}, headers=op
    )
    assert missing.status_code == 422 and "body.observations" in missing.json()["detail"]
    deciding.client.post(f"/api/v1/sites/{a}/revoke", headers=deciding.as_(Role.ADMIN))
    assert status(good) == 404  # revoked sites get no decisions
    viewer = deciding.client.post("/api/v1/decisions", json=good, headers=deciding.as_(Role.VIEWER))
    assert viewer.status_code == 403


def test_enrolled_sites_are_served_after_a_restart(
    settings: CoordinatorSettings, policy_dir: Path
) -> None:
    configured = settings.model_copy(update={"policy_dir": policy_dir})
    with TestClient(create_app(configured)) as first:
        fleet = Fleet.with_roles(first, [Role.OPERATOR])
        site = fleet.enroll().site_id.hex()
    with TestClient(create_app(configured)) as second:
        body = {"kind": "strategic", "site_ids": [site], "observations": [_row(ENERGY_OBS)]}
        answer = second.post(
            "/api/v1/decisions", json=body, headers={"X-API-Key": fleet.keys[Role.OPERATOR]}
        )
        assert answer.status_code == 200, answer.text


def test_a_slice_policy_answering_nan_is_refused_and_nothing_recorded(
    settings: CoordinatorSettings, tmp_path: Path
) -> None:
    broken = np.zeros((SLICE_OBS, 4))
    broken[3] = np.nan  # any observation with s3 != 0 gives NaN shares
    write_policies(tmp_path / "nan-policies", slice_weights=broken)
    with_policies = settings.model_copy(update={"policy_dir": tmp_path / "nan-policies"})
    with TestClient(create_app(with_policies)) as client:
        fleet = Fleet.with_roles(client, list(Role))
        site = fleet.enroll().site_id.hex()
        answer = client.post(
            "/api/v1/decisions",
            json={"kind": "tactical", "site_ids": [site], "observations": [_row(SLICE_OBS, i3=1)]},
            headers=fleet.as_(Role.OPERATOR),
        )
        assert answer.status_code == 422
        assert "non-finite shares" in answer.json()["detail"]
        engine = client.app.state.coordinator.engine  # type: ignore[attr-defined]
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM decisions")).scalar_one() == 0


def test_without_policies_the_route_says_which_setting_turns_it_on(client: TestClient) -> None:
    assert "/api/v1/decisions" in client.get("/openapi.json").json()["paths"]
    assert client.post("/api/v1/decisions", json={}).status_code == 401  # credentials first
    answer = client.post("/api/v1/decisions", json={}, headers=ADMIN)
    assert answer.status_code == 503, answer.text
    assert answer.json()["setting"] == "FEDGE_COORDINATOR_POLICY_DIR"
    assert "the decisions API is not configured" in answer.json()["detail"]


def test_policy_files_that_do_not_match_the_manifest_stop_the_start(
    settings: CoordinatorSettings, policy_dir: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(policy_dir, broken)
    (broken / "slice_policy.onnx").write_bytes(b"tampered")
    with pytest.raises(SettingsError, match="decision policies"):
        Coordinator(settings.model_copy(update={"policy_dir": broken}))


@dataclass
class _TwoWorkers:
    one: TestClient
    two: TestClient
    other: Coordinator  # the coordinator behind ``two``
    fleet: Fleet
    site: str
    body: dict[str, object]
    op: dict[str, str]


@contextmanager
def _two_workers(settings: CoordinatorSettings, policy_dir: Path) -> Iterator[_TwoWorkers]:
    """Two apps on one database stand for two ``serve --workers`` processes; a site is
    enrolled through the first while the second has not re-read its sites."""
    with_policies = settings.model_copy(update={"policy_dir": policy_dir})
    with TestClient(create_app(with_policies)) as one, TestClient(create_app(with_policies)) as two:
        other: Coordinator = two.app.state.coordinator  # type: ignore[attr-defined]
        other.SITE_SYNC_SECONDS = 3600.0  # not yet re-read
        fleet = Fleet.with_roles(one, list(Role))
        site = fleet.enroll().site_id.hex()
        body: dict[str, object] = {
            "kind": "strategic",
            "site_ids": [site],
            "observations": [[0.0] * ENERGY_OBS],
        }
        yield _TwoWorkers(one, two, other, fleet, site, body, fleet.as_(Role.OPERATOR))


def test_workers_learn_sites_enrolled_or_revoked_through_another(
    settings: CoordinatorSettings, policy_dir: Path
) -> None:
    with _two_workers(settings, policy_dir) as w:
        assert w.two.post("/api/v1/decisions", json=w.body, headers=w.op).status_code == 404
        w.other.SITE_SYNC_SECONDS = 0.0  # the next request re-reads the active sites
        assert w.two.post("/api/v1/decisions", json=w.body, headers=w.op).status_code == 200
        admin = w.fleet.as_(Role.ADMIN)
        assert w.one.post(f"/api/v1/sites/{w.site}/revoke", headers=admin).status_code == 200
        assert w.two.post("/api/v1/decisions", json=w.body, headers=w.op).status_code == 404


def test_requests_arriving_during_a_site_sync_wait_for_it(
    settings: CoordinatorSettings, policy_dir: Path
) -> None:
    """The sync runs off the event loop; nobody may decide on the stale set meanwhile."""
    with _two_workers(settings, policy_dir) as w:
        real_sync = w.other.sync_decision_sites

        def slow_sync() -> None:  # marked as synced at once, the sites land 0.3 s later
            w.other._sites_synced = time.monotonic()
            time.sleep(0.3)
            real_sync()

        w.other.sync_decision_sites = slow_sync  # type: ignore[method-assign]
        w.other._sites_synced = -math.inf  # due now (0.0 is not: monotonic time starts at boot)

        def decide(_: int) -> int:
            code: int = w.two.post("/api/v1/decisions", json=w.body, headers=w.op).status_code
            return code

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(decide, range(16))) == [200] * 16
