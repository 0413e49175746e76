"""Site health reports: kept as each site's latest and in a bounded history, shown to
viewers, refused field by field (422, nothing stored lost); ``site_errors`` reads the
latest mean RMSE at the shortest horizon. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import Session

from fedge.coordinator import Role, sign_request
from fedge.coordinator._health import site_errors
from fedge.security import SiteIdentity
from tests.coordinator.helpers import Fleet

PATH = "/api/v1/site/health"


def _report(**changes: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "sent_at": time.time(),
        "model_version": "v3",
        "store_bytes": 123456,
        "alerts": {"warning": 2, "critical": 0},
        "last_kpi_at": time.time() - 5,
        "supernode": "running",
        "backlog": 0,
        "errors": [
            {"cell": "c0", "horizon_steps": 1, "target": "prb_dl_util", "count": 288,
             "mae": 0.031, "rmse": 0.04, "bias": -0.002},
            {"cell": "c1", "horizon_steps": 1, "target": "prb_dl_util", "count": 288,
             "mae": 0.05, "rmse": 0.06, "bias": 0.001},
            {"cell": "c0", "horizon_steps": 6, "target": "prb_dl_util", "count": 280,
             "mae": 0.2, "rmse": 0.9, "bias": 0.0},
        ],
    }  # fmt: skip
    report.update(changes)
    return report


def _post(fleet: Fleet, site: SiteIdentity, report: Any) -> tuple[int, str]:
    body = json.dumps(report).encode()
    headers = {**sign_request(site, "POST", PATH, body), "Content-Type": "application/json"}
    answer = fleet.client.post(PATH, content=body, headers=headers)
    return answer.status_code, answer.text


def _engine(fleet: Fleet) -> Any:
    return fleet.client.app.state.coordinator.engine  # type: ignore[attr-defined]


def _history(fleet: Fleet) -> list[tuple[Any, ...]]:
    with _engine(fleet).connect() as conn:
        rows = conn.execute(
            text("SELECT site_id, backlog, rmse FROM site_health_history ORDER BY id")
        ).all()
    return [tuple(r) for r in rows]


def test_reports_are_kept_as_latest_and_history(fleet: Fleet) -> None:
    site, other = fleet.enroll(), fleet.enroll()
    assert _post(fleet, site, _report()) == (204, "")
    assert _post(fleet, site, _report(backlog=7, supernode="restarting")) == (204, "")
    assert _post(fleet, other, _report(errors=[], model_version=None)) == (204, "")
    viewer = fleet.as_(Role.VIEWER)
    latest = fleet.client.get(f"/api/v1/sites/{site.site_id.hex()}/health", headers=viewer)
    assert latest.status_code == 200
    body = latest.json()
    assert (body["backlog"], body["supernode"], body["alerts_warning"]) == (7, "restarting", 2)
    assert body["rmse"] == pytest.approx(0.05)  # c0 and c1 at horizon 1
    assert len(body["errors"]) == 3 and body["errors"][0]["target"] == "prb_dl_util"
    fleet_rows = fleet.client.get("/api/v1/health/sites", headers=viewer).json()
    assert sorted(r["site_id"] for r in fleet_rows) == sorted(
        [site.site_id.hex(), other.site_id.hex()]
    )
    assert next(r for r in fleet_rows if r["site_id"] == other.site_id.hex())["rmse"] is None
    assert [(r[0], r[1]) for r in _history(fleet)] == [
        (site.site_id.hex(), 0),
        (site.site_id.hex(), 7),
        (other.site_id.hex(), 0),
    ]


def test_health_reads_need_a_viewer_key_and_a_known_report(fleet: Fleet) -> None:
    site = fleet.enroll()
    path = f"/api/v1/sites/{site.site_id.hex()}/health"
    assert fleet.client.get(path).status_code == 401
    assert fleet.client.get("/api/v1/health/sites").status_code == 401
    missing = fleet.client.get(path, headers=fleet.as_(Role.VIEWER))
    assert missing.status_code == 404 and "not reported" in missing.json()["detail"]
    unknown = fleet.client.get(f"/api/v1/sites/{'ab' * 16}/health", headers=fleet.as_(Role.VIEWER))
    assert unknown.status_code == 404
    assert fleet.client.get("/api/v1/health/sites", headers=fleet.as_(Role.VIEWER)).json() == []


def test_the_history_is_bounded_per_site(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    import fedge.coordinator._health as health

    monkeypatch.setattr(health, "HEALTH_HISTORY_PER_SITE", 3)
    site, other = fleet.enroll(), fleet.enroll()
    assert _post(fleet, other, _report(backlog=100))[0] == 204
    for n in range(5):
        assert _post(fleet, site, _report(backlog=n))[0] == 204
    mine = [r[1] for r in _history(fleet) if r[0] == site.site_id.hex()]
    assert mine == [2, 3, 4]
    assert [r[1] for r in _history(fleet) if r[0] == other.site_id.hex()] == [100]


def _error(**changes: Any) -> dict[str, Any]:
    row = dict(_report()["errors"][0])
    row.update(changes)
    return row


BAD: list[tuple[str, dict[str, Any]]] = [
    ("negative store", {"store_bytes": -1}),
    ("negative backlog", {"backlog": -1}),
    ("negative alerts", {"alerts": {"warning": -1, "critical": 0}}),
    ("unknown alert", {"alerts": {"warning": 0, "critical": 0, "minor": 1}}),
    ("supernode", {"supernode": "sleeping"}),
    ("sent_at infinite", {"sent_at": math.inf}),
    ("sent_at negative", {"sent_at": -1.0}),
    ("last_kpi_at nan", {"last_kpi_at": math.nan}),
    ("long model version", {"model_version": "v" * 65}),
    ("unknown field", {"uptime": 5}),
    ("too many errors", {"errors": [_error()] * 513}),
    ("long cell", {"errors": [_error(cell="c" * 65)]}),
    ("empty cell", {"errors": [_error(cell="")]}),
    ("long target", {"errors": [_error(target="t" * 65)]}),
    ("horizon 0", {"errors": [_error(horizon_steps=0)]}),
    ("negative count", {"errors": [_error(count=-1)]}),
    ("rmse nan", {"errors": [_error(rmse=math.nan)]}),
    ("negative mae", {"errors": [_error(mae=-0.1)]}),
    ("bias infinite", {"errors": [_error(bias=-math.inf)]}),
    ("unknown error field", {"errors": [_error(p50=0.1)]}),
]


def test_bad_reports_are_422_and_lose_nothing(fleet: Fleet) -> None:
    site = fleet.enroll()
    assert _post(fleet, site, _report(backlog=3))[0] == 204
    before = _history(fleet)
    for name, change in BAD:
        status, answer = _post(fleet, site, _report(**change))
        assert status == 422, (name, answer)
        assert json.loads(answer)["detail"].startswith("body"), name
    missing = _report()
    del missing["supernode"]
    assert _post(fleet, site, missing)[0] == 422
    assert _post(fleet, site, [1, 2])[0] == 422
    assert _history(fleet) == before
    latest = fleet.client.get(
        f"/api/v1/sites/{site.site_id.hex()}/health", headers=fleet.as_(Role.VIEWER)
    ).json()
    assert latest["backlog"] == 3


def test_a_replayed_report_is_refused(fleet: Fleet) -> None:
    site = fleet.enroll()
    body = json.dumps(_report()).encode()
    headers = {**sign_request(site, "POST", PATH, body), "Content-Type": "application/json"}
    assert fleet.client.post(PATH, content=body, headers=headers).status_code == 204
    again = fleet.client.post(PATH, content=body, headers=headers)
    assert again.status_code == 401 and "replayed" in again.json()["detail"]
    assert len(_history(fleet)) == 1


def test_site_errors_is_the_latest_mean_rmse_after_since(fleet: Fleet) -> None:
    a, b, c = fleet.enroll(), fleet.enroll(), fleet.enroll()
    assert _post(fleet, a, _report())[0] == 204
    start = time.time()
    time.sleep(0.01)
    later = _report(errors=[_error(rmse=0.2), _error(cell="c1", rmse=0.4), _error(count=0, rmse=9)])
    assert _post(fleet, a, later)[0] == 204  # the count-0 row has no samples: left out
    assert _post(fleet, b, _report())[0] == 204
    assert _post(fleet, b, _report(errors=[]))[0] == 204  # no error summary: b's earlier one
    assert _post(fleet, c, _report(errors=[_error(horizon_steps=3, rmse=0.7)]))[0] == 204
    hexes = [s.site_id.hex() for s in (a, b, c)]
    with Session(_engine(fleet)) as session:
        errors = site_errors(session, hexes, start)
        assert errors == pytest.approx({hexes[0]: 0.3, hexes[1]: 0.05, hexes[2]: 0.7})
        assert site_errors(session, hexes[:1], time.time() + 1) == {}
        assert site_errors(session, [], 0.0) == {}
        assert site_errors(session, ["ff" * 16], 0.0) == {}
