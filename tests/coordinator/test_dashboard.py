"""The dashboard without a browser: the vendored htmx, the session cookie's flags and
content, CSRF refusals, expired, forged and revoked sessions, each role doing exactly
what its API route allows, and the pages' words for an empty coordinator."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import time
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fedge.coordinator import (
    DEV_ADMIN_KEY,
    DEV_KEK,
    CoordinatorSettings,
    Role,
    SettingsError,
    load_settings,
    sign_request,
)
from fedge.coordinator._actions import ActionPublic
from fedge.coordinator._schema import (
    Actual,
    Forecast,
    RunCreate,
    Site,
    SiteHealthPublic,
    SiteState,
)
from fedge.coordinator.api import create_app
from fedge.coordinator.dashboard import (
    CSRF_HEADER,
    SESSION_COOKIE,
    Liveness,
    SessionError,
    SessionSigner,
)
from fedge.coordinator.dashboard._views import chart, decision_mix, liveness
from tests.coordinator.helpers import ADMIN, Fleet

#: htmx.org 2.0.11, package/dist/htmx.min.js from the npm registry (0BSD).
HTMX_SHA256 = "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"
#: Swagger UI for /docs: swagger-ui-dist 5.35.0 from the npm registry (Apache-2.0); ReDoc
#: for /redoc: redoc 2.5.4 (MIT).
VENDORED = {
    "htmx.min.js": HTMX_SHA256,
    "swagger-ui-bundle.js": "e6a898692f2d768e807c3ba4626068a69a2c5dd960dd6c76f3e4d3a3de180af2",
    "swagger-ui.css": "5ed08757e53da3e026d6cbecc61fe5d43585c9560b302d534ad56692519a273d",
    "favicon-32x32.png": "3ed612f41e050ca5e7000cad6f1cbe7e7da39f65fca99c02e99e6591056e5837",
    "redoc.standalone.js": "dcaf76612bc4a3fbcc923a8966dee2f6146a5f32e5ce1b6f02dd60cbbf89500b",
}
DASHBOARD = Path(__file__).resolve().parents[2] / "coordinator" / "dashboard"
PAGES = ["/ui", "/ui/models", "/ui/runs", "/ui/audit", "/ui/sites/" + "ab" * 16]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, identity_file: Path) -> Iterator[FastAPI]:
    root = tmp_path_factory.mktemp("dashboard")
    shutil.copy(identity_file, root / "coordinator.key")
    settings = CoordinatorSettings(
        database_url=f"sqlite:///{root / 'coordinator.db'}",
        model_store=root / "models",
        identity_file=root / "coordinator.key",
        denial_burst=1000,  # this module is refused on purpose, many times
    )
    application = create_app(settings)
    with TestClient(application):  # the lifespan: closed at the end
        yield application


@pytest.fixture(scope="module")
def fleet(app: FastAPI) -> Fleet:
    return Fleet.with_roles(TestClient(app), list(Role))


def _login_form(client: TestClient) -> str:
    page = client.get("/ui/login")
    assert page.status_code == 200
    found = re.search(r'name="login_csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def _login(app: FastAPI, key: str, base_url: str = "http://testserver") -> TestClient:
    client = TestClient(app, base_url=base_url)
    answer = client.post(
        "/ui/login",
        data={"api_key": key, "login_csrf": _login_form(client)},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return client


def _csrf(client: TestClient, page: str = "/ui") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(page).text)
    assert found is not None
    return found.group(1)


def _status(fleet: Fleet, model_id: int) -> str:
    answer = fleet.client.get(f"/api/v1/models/{model_id}", headers=ADMIN)
    status: str = answer.json()["status"]
    return status


def test_the_vendored_htmx_is_the_pinned_release_and_nothing_loads_from_elsewhere(
    app: FastAPI,
) -> None:
    local = (DASHBOARD / "static" / "htmx.min.js").read_bytes()
    assert hashlib.sha256(local).hexdigest() == HTMX_SHA256
    served = TestClient(app).get("/ui/static/htmx.min.js")
    assert served.status_code == 200 and hashlib.sha256(served.content).hexdigest() == HTMX_SHA256
    assert HTMX_SHA256 in (DASHBOARD / "static" / "VENDORED.md").read_text()
    for template in (DASHBOARD / "templates").glob("*.html"):
        text = template.read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), template.name  # no CDN
        assert "<script>" not in text and " style=" not in text, template.name  # CSP: none inline


def test_the_api_docs_load_swagger_ui_from_the_package(app: FastAPI) -> None:
    client = TestClient(app)
    for name, digest in VENDORED.items():
        local = (DASHBOARD / "static" / name).read_bytes()
        assert hashlib.sha256(local).hexdigest() == digest, name
        assert digest in (DASHBOARD / "static" / "VENDORED.md").read_text(), name
        served = client.get(f"/ui/static/{name}")
        assert served.status_code == 200 and served.content == local, name
    for name in ("swagger-ui.LICENSE", "swagger-ui.NOTICE", "redoc.LICENSE"):
        assert (DASHBOARD / "static" / name).stat().st_size > 0
    page = client.get("/docs")
    assert page.status_code == 200
    assert (
        "/ui/static/swagger-ui-bundle.js" in page.text and "/ui/static/swagger-ui.css" in page.text
    )
    assert not re.search(r"(src|href)=[\"'](https?:)?//", page.text)  # nothing from a CDN
    reference = client.get("/redoc")
    assert reference.status_code == 200 and "/ui/static/redoc.standalone.js" in reference.text
    assert not re.search(r"(src|href)=[\"'](https?:)?//", reference.text)  # no fonts either
    assert client.get("/openapi.json").json()["info"]["title"] == "fedge coordinator"


def test_every_page_without_a_session_goes_to_the_login_form(app: FastAPI) -> None:
    client = TestClient(app)
    for page in PAGES:
        answer = client.get(page, follow_redirects=False)
        assert answer.status_code == 303, page
        assert answer.headers["location"].startswith("/ui/login?next=%2Fui"), page
    fragment = client.get("/ui/fragments/fleet", headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and fragment.headers["HX-Redirect"].startswith("/ui/login")
    forged = client.post("/ui/models/1/promote", data={"csrf": "x"}, follow_redirects=False)
    assert forged.status_code == 303 and forged.headers["location"] == "/ui/login"


def test_a_bad_key_gets_a_clear_error_and_no_session(app: FastAPI, fleet: Fleet) -> None:
    client = TestClient(app)
    token = _login_form(client)
    answer = client.post("/ui/login", data={"api_key": "fedge-op.wrong", "login_csrf": token})
    assert answer.status_code == 401
    assert "Unknown or revoked API key." in answer.text
    assert SESSION_COOKIE not in answer.cookies
    empty = client.post("/ui/login", data={"api_key": "", "login_csrf": _login_form(client)})
    assert empty.status_code == 401 and "enter an operator API key" in empty.text
    audit = fleet.client.get("/api/v1/audit?limit=1000", headers=ADMIN).json()
    assert any(e["action"] == "POST /ui/login" and e["outcome"] == "denied" for e in audit)


def test_a_login_without_its_form_token_is_refused(app: FastAPI) -> None:
    client = TestClient(app)
    answer = client.post("/ui/login", data={"api_key": DEV_ADMIN_KEY, "login_csrf": "forged"})
    assert answer.status_code == 403 and "load it again" in answer.text
    assert SESSION_COOKIE not in answer.cookies
    _login_form(client)  # the form's cookie, but another token
    answer = client.post("/ui/login", data={"api_key": DEV_ADMIN_KEY, "login_csrf": "forged"})
    assert answer.status_code == 403 and "does not match" in answer.text


def test_the_session_cookie_is_httponly_strict_secure_over_tls_and_holds_no_key(
    app: FastAPI, fleet: Fleet
) -> None:
    key = fleet.keys[Role.OPERATOR]
    for base, secure in (("http://testserver", False), ("https://testserver", True)):
        client = TestClient(app, base_url=base)
        answer = client.post(
            "/ui/login", data={"api_key": key, "login_csrf": _login_form(client)},
            follow_redirects=False,
        )  # fmt: skip
        assert answer.status_code == 303 and answer.headers["location"] == "/ui"
        header = next(
            h for h in answer.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE)
        )
        morsel = SimpleCookie(header)[SESSION_COOKIE]
        assert morsel["httponly"] is True and morsel["samesite"].lower() == "strict"
        assert bool(morsel["secure"]) is secure, base
        assert morsel["path"] == "/ui" and morsel["max-age"] == str(8 * 3600)
        body = morsel.value.split(".")[0]
        decoded = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
        assert key not in morsel.value and key not in decoded
        assert key.removeprefix("fedge-op.") not in decoded
        assert hashlib.sha256(key.encode()).hexdigest() not in decoded  # only a prefix
        page = client.get("/ui")
        assert page.status_code == 200 and "(operator)" in page.text
        assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")


def test_a_forged_expired_or_revoked_session_goes_to_the_login_form(
    app: FastAPI, fleet: Fleet
) -> None:
    client = _login(app, fleet.keys[Role.VIEWER])
    good = client.cookies[SESSION_COOKIE]
    body, mac = good.split(".")
    forged = TestClient(app, cookies={SESSION_COOKIE: body + "." + mac[::-1]})
    assert forged.get("/ui", follow_redirects=False).headers["location"].startswith("/ui/login")
    signer = SessionSigner(DEV_KEK.encode())
    payload = signer.open(good, "session")
    for changed in ({**payload, "e": time.time() - 1}, {**payload, "t": "login"}):
        stale = TestClient(app, cookies={SESSION_COOKIE: signer.seal(changed)})
        assert stale.get("/ui", follow_redirects=False).status_code == 303
    with pytest.raises(SessionError, match="expired"):
        signer.open(signer.seal({**payload, "e": time.time() - 1}), "session")
    with pytest.raises(SessionError, match="bad signature"):
        SessionSigner(b"another kek").open(good, "session")
    for junk in ("", "no-dot", "!!!.???", "e30.AAAA"):
        with pytest.raises(SessionError):
            signer.open(junk, "session")
    # a revoked key ends its sessions at once
    created = fleet.client.post(
        "/api/v1/keys", json={"name": "short-lived", "role": "operator"}, headers=ADMIN
    ).json()
    mine = _login(app, created["key"])
    assert mine.get("/ui").status_code == 200
    fleet.client.post(f"/api/v1/keys/{created['id']}/revoke", headers=ADMIN)
    assert mine.get("/ui", follow_redirects=False).headers["location"].startswith("/ui/login")


def test_a_post_without_the_session_csrf_token_is_refused(app: FastAPI, fleet: Fleet) -> None:
    model = fleet.upload("csrf")
    admin = _login(app, DEV_ADMIN_KEY)
    for form in ({}, {"csrf": "wrong"}):
        answer = admin.post(f"/ui/models/{model}/promote", data=form)
        assert answer.status_code == 403 and "CSRF" in answer.text
        assert _status(fleet, model) == "candidate"
    # the token of another session is no good either
    other = _csrf(_login(app, DEV_ADMIN_KEY))
    assert admin.post(f"/ui/models/{model}/promote", data={"csrf": other}).status_code == 403
    # htmx sends it as a header
    answer = admin.post(
        f"/ui/models/{model}/promote", headers={CSRF_HEADER: _csrf(admin)}, follow_redirects=False
    )
    assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/models?done")
    assert _status(fleet, model) == "production"


def test_each_role_may_do_exactly_what_the_api_allows(app: FastAPI, fleet: Fleet) -> None:
    for role in Role:
        key = fleet.keys[role]
        ui = _login(app, key)
        api = {"X-API-Key": key}
        csrf = _csrf(ui)
        # the audit log: admin only
        ui_audit = ui.get("/ui/audit").status_code
        api_audit = fleet.client.get("/api/v1/audit", headers=api).status_code
        assert (ui_audit == 403) == (api_audit == 403), role
        # promote: admin only; each side on its own candidate
        ui_model, api_model = fleet.upload(f"ui-{role}"), fleet.upload(f"api-{role}")
        ui_promote = ui.post(f"/ui/models/{ui_model}/promote", data={"csrf": csrf})
        api_promote = fleet.client.post(f"/api/v1/models/{api_model}/promote", headers=api)
        assert (ui_promote.status_code == 403) == (api_promote.status_code == 403), role
        assert (_status(fleet, ui_model) != "candidate") == (role is Role.ADMIN)
        # rollback: admin only (a 409 for want of a previous version is not a refusal)
        ui_back = ui.post("/ui/models/rollback", data={"csrf": csrf}, follow_redirects=False)
        assert (ui_back.status_code == 403) == (role is not Role.ADMIN), role
        # starting a run: operator and up, then 503 for want of a SuperLink, as in the API
        ui_start = ui.post("/ui/runs", data={"csrf": csrf, "num_rounds": "2"})
        api_start = fleet.client.post("/api/v1/runs", json={"num_rounds": 2}, headers=api)
        assert ui_start.status_code == api_start.status_code, role
        assert ("FEDGE_COORDINATOR_SUPERLINK" in ui_start.text) == (role is not Role.VIEWER)
        # the buttons shown follow the same rule
        models = ui.get("/ui/models").text
        assert ("Promote v" in models) == (role is Role.ADMIN), role
        assert ("/ui/audit" in ui.get("/ui").text) == (role is Role.ADMIN)


def test_a_viewer_cannot_cancel_a_run_and_an_operator_can(app: FastAPI, fleet: Fleet) -> None:
    federation = app.state.coordinator.federation
    run = federation.create("operator:test", RunCreate(num_rounds=2))[0]
    viewer, operator = _login(app, fleet.keys[Role.VIEWER]), _login(app, fleet.keys[Role.OPERATOR])
    assert viewer.get(f"/ui/runs/{run.id}/cancel").status_code == 403
    refused = viewer.post(f"/ui/runs/{run.id}/cancel", data={"csrf": _csrf(viewer)})
    assert refused.status_code == 403 and "needs the operator role" in refused.text
    assert federation.run(run.id).status.value == "starting"
    confirm = operator.get(f"/ui/runs/{run.id}/cancel")
    assert confirm.status_code == 200 and "Cancel the run" in confirm.text
    done = operator.post(
        f"/ui/runs/{run.id}/cancel", data={"csrf": _csrf(operator)}, follow_redirects=False
    )
    assert done.status_code == 303 and federation.run(run.id).status.value == "cancelled"
    again = operator.post(f"/ui/runs/{run.id}/cancel", data={"csrf": _csrf(operator)})
    assert again.status_code == 409 and "only a live run ends" in again.text
    assert operator.get("/ui/runs/not-a-run/cancel").status_code == 404


def test_a_bad_run_request_is_refused_with_its_reason(app: FastAPI, fleet: Fleet) -> None:
    operator = _login(app, fleet.keys[Role.OPERATOR])
    for rounds in ("0", "many", "20000"):
        answer = operator.post("/ui/runs", data={"csrf": _csrf(operator), "num_rounds": rounds})
        assert answer.status_code == 422 and "num_rounds" in answer.text, rounds


def test_logout_ends_the_session_even_for_a_copied_cookie(app: FastAPI, fleet: Fleet) -> None:
    client = _login(app, fleet.keys[Role.VIEWER])
    copied = client.cookies[SESSION_COOKIE]
    refused = client.post("/ui/logout", data={"csrf": "wrong"})
    assert refused.status_code == 403
    answer = client.post("/ui/logout", data={"csrf": _csrf(client)}, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/login?out=1"
    assert any(
        h.startswith(f"{SESSION_COOKIE}=") and "Max-Age=0" in h
        for h in answer.headers.get_list("set-cookie")
    )
    replay = TestClient(app, cookies={SESSION_COOKIE: copied})
    assert replay.get("/ui", follow_redirects=False).status_code == 303


def test_the_login_goes_back_only_to_a_dashboard_page(app: FastAPI) -> None:
    for asked, landed in (("/ui/runs", "/ui/runs"), ("https://evil.example/", "/ui"),
                          ("//evil.example", "/ui"), ("/uiother", "/uiother")):  # fmt: skip
        client = TestClient(app)
        answer = client.post(
            "/ui/login",
            data={"api_key": DEV_ADMIN_KEY, "login_csrf": _login_form(client), "next": asked},
            follow_redirects=False,
        )
        assert answer.headers["location"] == landed, asked


def test_liveness_follows_the_last_contact() -> None:
    now, late, offline = 1.0e9, 120.0, 600.0
    site = Site(id="ab" * 16, public_keys=b"", enrolled_at=now - 10_000, last_seen=now - 10)
    assert liveness(site, None, now, late, offline) is Liveness.OK
    assert liveness(site, None, now + late, late, offline) is Liveness.LATE
    assert liveness(site, None, now + offline, late, offline) is Liveness.OFFLINE
    report = SiteHealthPublic(
        site_id=site.id, received_at=now + offline, sent_at=now, store_bytes=0,
        alerts_warning=0, alerts_critical=0, supernode="running", backlog=0,
    )  # fmt: skip
    assert liveness(site, report, now + offline, late, offline) is Liveness.OK  # a report counts
    never = Site(id=site.id, public_keys=b"", enrolled_at=now)
    assert liveness(never, None, now, late, offline) is Liveness.NEVER
    site.status = SiteState.REVOKED
    assert liveness(site, None, now, late, offline) is Liveness.REVOKED


def test_the_dashboard_settings_are_bounded() -> None:
    defaults = load_settings()
    assert (defaults.dashboard_late_seconds, defaults.dashboard_offline_seconds) == (120, 600)
    assert defaults.dashboard_session_seconds == 8 * 3600
    for bad, named in (
        ({"dashboard_late_seconds": 600, "dashboard_offline_seconds": 600}, "must be over"),
        ({"dashboard_late_seconds": 0}, "dashboard_late_seconds"),
        ({"dashboard_offline_seconds": -1}, "dashboard_offline_seconds"),
        ({"dashboard_session_seconds": 10}, "dashboard_session_seconds"),
        ({"dashboard_session_seconds": 30 * 86400}, "dashboard_session_seconds"),
    ):
        with pytest.raises(SettingsError, match=named):
            load_settings(**bad)


def test_the_chart_takes_the_shortest_lead_per_step_and_the_actuals() -> None:
    def forecast(step: int, made: int, value: float, cell: str = "c0") -> Forecast:
        return Forecast(cell=cell, step=step, made_step=made, values=[value], site_id="s",
                        model_version="v1", received_at=0.0)  # fmt: skip

    forecasts = [forecast(10, 8, 5.0), forecast(10, 9, 1.0), forecast(11, 10, 3.0),
                 forecast(11, 10, 9.0, cell="c1")]  # fmt: skip
    actuals = [Actual(site_id="s", cell="c0", step=s, values=[v], received_at=0.0)
               for s, v in ((9, 2.0), (10, 2.0))]  # fmt: skip
    drawn = chart(forecasts, actuals, None, 0)
    assert drawn is not None and drawn.cell == "c0" and drawn.steps == [9, 10, 11]
    assert drawn.table == [(9, None, 2.0), (10, 1.0, 2.0), (11, 3.0, None)]
    assert (drawn.low, drawn.high) == (1.0, 3.0)
    assert [y for _, y in drawn.forecast] == [drawn.height - 20, 10.0]  # low at the bottom
    assert chart([], [], None, 0) is None
    assert chart(forecasts, actuals, "c0", 5) is None  # a target no row has


def test_the_decision_mix_counts_each_sites_newest_action() -> None:
    def action(i: int, site: str, kind: str, **fields: object) -> ActionPublic:
        base: dict[str, object] = {
            "id": i, "site_id": site, "kind": kind, "mode": None, "shares": None,
            "decided_at": float(i), "valid_until": i + 900.0, "policy_version": "p1",
            "source": "federated_forecast", "decision_id": None, "acked_at": None,
            "ack_status": None, "ack_reason": None,
        }  # fmt: skip
        return ActionPublic.model_validate({**base, **fields})

    newest_first = [
        action(6, "b", "tactical", shares={"embb": 0.6, "urllc": 0.4}, ack_status="applied"),
        action(5, "a", "tactical", shares={"embb": 0.2, "urllc": 0.8}),
        action(4, "b", "strategic", mode="deep_sleep", source="safe_default"),
        action(3, "a", "strategic", mode="active"),
        action(2, "a", "strategic", mode="capacity_off"),  # older: not counted
    ]
    mix = decision_mix(newest_first)
    assert mix.read == 5 and mix.sites == 2 and mix.newest == 6.0
    assert mix.modes == {"active": 1, "deep_sleep": 1}
    assert mix.shares == pytest.approx({"embb": 0.4, "urllc": 0.6})
    assert mix.sources["strategic"] == {"federated_forecast": 1, "safe_default": 1}
    assert mix.acks["tactical"] == {"applied": 1, "not acknowledged": 1}
    assert mix.policies == ["p1"]
    empty = decision_mix([])
    assert (empty.read, empty.sites, empty.modes, empty.shares, empty.newest) == (
        0,
        0,
        {},
        {},
        None,
    )


def test_an_empty_coordinator_says_so_in_words(tmp_path: Path, identity_file: Path) -> None:
    shutil.copy(identity_file, tmp_path / "coordinator.key")
    settings = CoordinatorSettings(
        database_url=f"sqlite:///{tmp_path / 'c.db'}", model_store=tmp_path / "models",
        identity_file=tmp_path / "coordinator.key",
    )  # fmt: skip
    with TestClient(create_app(settings)) as bare:
        client = _login(bare.app, DEV_ADMIN_KEY)  # type: ignore[arg-type]
        assert "No site is enrolled yet" in client.get("/ui").text
        models = client.get("/ui/models").text
        assert "No model version is registered yet" in models and "No rollout yet" in models
        runs = client.get("/ui/runs").text
        assert "No run is in progress" in runs and "No run has ended yet" in runs
        assert "no SuperLink is configured" in runs
        decisions = client.get("/ui/decisions").text
        assert "No action has been sent yet" in decisions
        assert "FEDGE_COORDINATOR_POLICY_DIR" in decisions
        assert client.get("/ui/sites/" + "ab" * 16).status_code == 404
        assert "ui.login" in client.get("/ui/audit").text
        assert client.get("/ui/models/rollback").status_code == 409
        assert client.get("/ui/models/99/promote").status_code == 404


def test_every_page_renders_on_postgresql(
    request: pytest.FixtureRequest, tmp_path: Path, identity_file: Path
) -> None:
    server = request.getfixturevalue("postgres")  # skips where PostgreSQL is not installed
    shutil.copy(identity_file, tmp_path / "coordinator.key")
    settings = CoordinatorSettings(
        database_url=server.new_database(), model_store=tmp_path / "models",
        identity_file=tmp_path / "coordinator.key",
    )  # fmt: skip
    with TestClient(create_app(settings)) as api:
        fleet = Fleet.with_roles(api, list(Role))
        site = fleet.enroll(region="pg-region")
        batch = {
            "model_version": "v1",
            "forecasts": [{"cell": "c0", "step": 5, "made_step": 4, "values": [0.5]}],
            "actuals": [{"cell": "c0", "step": 5, "values": [0.4]}],
        }
        raw = json.dumps(batch).encode()
        headers = {**sign_request(site, "POST", "/api/v1/site/forecasts", raw),
                   "Content-Type": "application/json"}  # fmt: skip
        assert api.post("/api/v1/site/forecasts", content=raw, headers=headers).status_code == 201
        first = fleet.upload("pg-first")
        assert api.post(f"/api/v1/models/{first}/promote", headers=ADMIN).status_code == 200
        fleet.upload("pg-second", parent=first)
        admin = _login(api.app, DEV_ADMIN_KEY)  # type: ignore[arg-type]
        site_hex = site.site_id.hex()
        for page, shows in (
            ("/ui", "pg-region"), ("/ui/models", "v1"), ("/ui/runs", "No run is in progress"),
            ("/ui/decisions", "No action has been sent yet"), ("/ui/audit", "model.promote"),
            (f"/ui/sites/{site_hex}", 'class="actual"'), ("/ui/fragments/fleet", site_hex),
        ):  # fmt: skip
            answer = admin.get(page)
            assert answer.status_code == 200 and shows in answer.text, page
