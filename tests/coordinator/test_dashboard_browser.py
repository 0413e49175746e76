"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against a real
coordinator on a free loopback port, seeded through its API: sites enrolled, one with a
health report, forecasts and actuals, two model versions, a run with its rounds. Each
role logs in; an admin promotes and rolls back through the confirmation pages; a viewer
gets no buttons and a forged POST is refused; late sites stand out; the fleet updates
without a reload; logout; a bad key."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, Route, ViewportSize, expect, sync_playwright

from fedge.coordinator import DEV_ADMIN_KEY, CoordinatorSettings, Role, sign_request
from fedge.coordinator._runs import RUN_TOKEN_HEADER
from fedge.coordinator._schema import RunCreate
from fedge.coordinator.api import create_app
from fedge.security import SiteIdentity
from tests.coordinator.helpers import ADMIN, Fleet
from tests.coordinator.layout import STORED, VIEWPORT, compare, layout, matches_stored
from tests.coordinator.policies import write_policies
from tests.support.ports import free_port, wait_for_port

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Chromium is not installed (deploy/system-deps.sh)"
)


@dataclass
class World:
    url: str
    fleet: Fleet
    sites: dict[str, SiteIdentity]
    models: dict[str, int]
    run_id: str


def _signed(fleet: Fleet, site: SiteIdentity, path: str, body: dict[str, Any]) -> int:
    raw = json.dumps(body).encode()
    headers = {**sign_request(site, "POST", path, raw), "Content-Type": "application/json"}
    status: int = fleet.client.post(path, content=raw, headers=headers).status_code
    return status


def _seed(fleet: Fleet, app: Any) -> World:
    now = time.time()
    sites = {
        "north": fleet.enroll(archetype="urban", region="north"),
        "south": fleet.enroll(archetype="rural", region="south"),
        "east": fleet.enroll(archetype="suburban", region="east"),
    }
    health = {
        "sent_at": now, "model_version": "v1", "store_bytes": 4096,
        "alerts": {"warning": 2, "critical": 1}, "last_kpi_at": now - 30,
        "supernode": "running", "backlog": 0, "errors": [],
    }  # fmt: skip
    assert _signed(fleet, sites["north"], "/api/v1/site/health", health) == 204
    batch = {
        "model_version": "v1",
        "forecasts": [
            {"cell": "c0", "step": s, "made_step": s - 1, "values": [0.4 + 0.01 * s, 0.2, 10.0]}
            for s in range(100, 120)
        ],
        "actuals": [
            {"cell": "c0", "step": s, "values": [0.41 + 0.01 * s, 0.2, 11.0]}
            for s in range(100, 119)
        ],
    }
    assert _signed(fleet, sites["north"], "/api/v1/site/forecasts", batch) == 201
    first = fleet.upload("first")
    assert fleet.client.post(f"/api/v1/models/{first}/promote", headers=ADMIN).status_code == 200
    second = fleet.upload("second", parent=first)
    # live decisions: one strategic and one tactical slot, the north site acks both
    assert app.state.coordinator.live is not None
    for kind in ("strategic", "tactical"):
        assert len(app.state.coordinator.live.tick(kind, now)) == len(sites)
    north = sites["north"].site_id.hex()
    sent = fleet.client.get(f"/api/v1/actions?site_id={north}", headers=ADMIN).json()
    acks = {"acks": [{"action_id": a["id"], "status": "applied", "at": now} for a in sent]}
    assert _signed(fleet, sites["north"], "/api/v1/site/actions/ack", acks) == 204
    run, token, _ = app.state.coordinator.federation.create(
        "operator:operator-key", RunCreate(num_rounds=2)
    )
    for number, status in ((1, "completed"), (2, "running")):
        report = {
            "status": status, "strategy": "fedavg", "participants": 3,
            "bytes_up": 123_456, "bytes_down": 654_321,
            "metrics": {"train_loss": 0.5 / number}, "started_at": now,
            **({"finished_at": now} if status == "completed" else {}),
        }  # fmt: skip
        answer = fleet.client.put(
            f"/api/v1/runs/{run.id}/rounds/{number}", json=report, headers={RUN_TOKEN_HEADER: token}
        )
        assert answer.status_code == 200, answer.text
    return World("", fleet, sites, {"first": first, "second": second}, run.id)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, identity_file: Path) -> Iterator[World]:
    root = tmp_path_factory.mktemp("dashboard-browser")
    shutil.copy(identity_file, root / "coordinator.key")
    settings = CoordinatorSettings(
        database_url=f"sqlite:///{root / 'coordinator.db'}",
        model_store=root / "models",
        identity_file=root / "coordinator.key",
        denial_burst=1000,
        policy_dir=root / "policies",
    )
    write_policies(root / "policies")
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="dashboard-coordinator", daemon=True)
    thread.start()
    try:
        wait_for_port(port)
        # the API in-process, on the very app the server runs
        seeded = _seed(Fleet.with_roles(TestClient(app), list(Role)), app)
        seeded.url = f"http://127.0.0.1:{port}"
        yield seeded
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as driver:
        chromium = driver.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser, world: World) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(10_000)
    elsewhere: list[str] = []

    def offline(route: Route) -> None:
        """Any request off the coordinator fails, as on a network with no way out."""
        if route.request.url.startswith(world.url + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", offline)
    page = context.new_page()
    errors: list[str] = []  # a CSP violation or a script error shows here
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    try:
        yield page
    finally:
        context.close()
    assert elsewhere == []  # every asset came from the coordinator
    assert errors == []


def _login(page: Page, world: World, key: str) -> None:
    page.goto(f"{world.url}/ui/login")
    page.get_by_label("Operator API key").fill(key)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{world.url}/ui")
    # htmx loads deferred: what the reader types before it has bound the page is no
    # request (the server-rendered rows are there sooner)
    page.wait_for_function("() => window.htmx !== undefined && document.readyState === 'complete'")


def _key(world: World, role: Role) -> str:
    return world.fleet.keys[role]


def _status(world: World, model: int) -> str:
    answer = world.fleet.client.get(f"/api/v1/models/{model}", headers=ADMIN)
    status: str = answer.json()["status"]
    return status


#: Every page, as an admin sees it (the login form before logging in). First in the module,
#: so every run compares the same seeded world, whatever the later tests change.
LAYOUT_PAGES = {
    "fleet": "/ui",
    "site": "/ui/sites/{north}",
    "models": "/ui/models",
    "runs": "/ui/runs",
    "decisions": "/ui/decisions",
    "audit": "/ui/audit",
}


def test_every_page_is_screenshot_and_keeps_its_stored_layout(
    page: Page, world: World, tmp_path: Path
) -> None:
    page.set_viewport_size(VIEWPORT)
    page.goto(f"{world.url}/ui/login")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    page.screenshot(path=tmp_path / "login.png", full_page=True)
    wrong = {"login": matches_stored("login", page)}
    _login(page, world, DEV_ADMIN_KEY)
    north = world.sites["north"].site_id.hex()
    for name, path in LAYOUT_PAGES.items():
        page.goto(world.url + path.format(north=north))
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        page.screenshot(path=tmp_path / f"{name}.png", full_page=True)
        wrong[name] = matches_stored(name, page)
    assert {name: w for name, w in wrong.items() if w} == {}
    shots = sorted(p.name for p in tmp_path.glob("*.png"))
    assert shots == sorted(f"{n}.png" for n in ["login", *LAYOUT_PAGES])
    assert all((tmp_path / s).stat().st_size > 10_000 for s in shots)  # drawn, not blank


def test_the_layout_comparison_fails_on_a_page_that_lost_its_main_content(
    page: Page, world: World
) -> None:
    page.set_viewport_size(VIEWPORT)
    _login(page, world, _key(world, Role.VIEWER))
    expect(page.locator("#fleet")).to_be_visible()
    stored = json.loads((STORED / "fleet.json").read_text())
    assert compare(stored, layout(page)) == []  # the page as it is matches
    # the fleet table gone, as a template error or a failed query would leave it
    page.evaluate("document.querySelector('#fleet-live').replaceChildren()")
    lost = compare(stored, layout(page))
    assert "table#fleet: missing" in lost
    page.evaluate("document.querySelector('main').replaceChildren()")  # nothing at all
    emptied = compare(stored, layout(page))
    assert "h1[0]: missing" in emptied and any(w.startswith("main:") for w in emptied)
    page.set_viewport_size(ViewportSize(width=700, height=900))  # a squeezed column moves edges
    page.reload()
    expect(page.locator("#fleet")).to_be_visible()
    assert any(": w " in w for w in compare(stored, layout(page)))


def test_each_role_logs_in_sees_the_fleet_and_logs_out(browser: Browser, world: World) -> None:
    for role in Role:
        context = browser.new_context()
        context.set_default_timeout(10_000)
        page = context.new_page()
        _login(page, world, _key(world, role))
        expect(page.locator("#who")).to_contain_text(f"({role.value})")
        rows = page.locator("#fleet tbody tr")
        expect(rows).to_have_count(3)
        north = page.locator(f'tr[data-site="{world.sites["north"].site_id.hex()}"]')
        expect(north).to_contain_text("v1")  # the version it reported serving
        expect(north).to_contain_text("2, 1")  # warning and critical alerts
        expect(north).to_contain_text("urban, north")
        expect(north).to_contain_text("(applied)")  # its newest action, acknowledged
        expect(page.get_by_role("link", name="Audit")).to_have_count(1 if role is Role.ADMIN else 0)
        page.get_by_role("button", name="Log out").click()
        expect(page).to_have_url(f"{world.url}/ui/login?out=1")
        expect(page.get_by_role("status")).to_have_text("You are logged out.")
        page.goto(f"{world.url}/ui/models")  # the session is gone: back to the login form
        expect(page).to_have_url(f"{world.url}/ui/login?next=%2Fui%2Fmodels")
        context.close()


def test_the_login_works_by_keyboard_and_a_bad_key_gets_a_clear_error(
    page: Page, world: World
) -> None:
    page.goto(f"{world.url}/ui/login")
    field = page.get_by_label("Operator API key")
    expect(field).to_be_focused()  # the key field has the focus: typing goes there
    page.keyboard.type("fedge-op.not-a-key")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_have_text("Unknown or revoked API key.")
    expect(page).to_have_url(f"{world.url}/ui/login")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_be_focused()  # again, on the page that says what was wrong
    expect(field).to_have_value("")  # the refused key is not echoed back
    page.keyboard.type(_key(world, Role.VIEWER))
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{world.url}/ui")
    page.keyboard.press("Tab")  # the first stop is the skip link, then the pages
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Models")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{world.url}/ui/models")


def test_an_admin_promotes_and_rolls_back_through_the_confirmation(
    page: Page, world: World
) -> None:
    first, second = world.models["first"], world.models["second"]
    _login(page, world, DEV_ADMIN_KEY)
    page.get_by_role("link", name="Models").click()
    expect(page.locator(f'tr[data-model="{second}"]')).to_contain_text(f"v{first}")  # lineage
    page.get_by_role("link", name=f"Promote v{second}…").click()
    expect(page.get_by_role("heading", name=f"Promote v{second}")).to_be_visible()
    expect(page.locator("#question")).to_contain_text(f"retiring v{first}")
    page.get_by_role("link", name="Cancel").click()  # backing out changes nothing
    assert _status(world, second) == "candidate"
    page.get_by_role("link", name=f"Promote v{second}…").click()
    page.get_by_role("button", name=f"Promote v{second}").click()
    expect(page.get_by_role("status")).to_have_text(f"v{second} promoted.")
    expect(page.locator(f'tr[data-model="{second}"]')).to_contain_text("production")
    expect(page.locator("#rollout-state")).to_contain_text(f"v{second} replacing v{first}")
    assert _status(world, second) == "production" and _status(world, first) == "retired"
    page.get_by_role("link", name=f"Roll back v{second} to v{first}…").click()
    page.get_by_role("button", name=f"Roll back to v{first}").click()
    expect(page.get_by_role("status")).to_contain_text(f"v{first} rolled back")
    expect(page.locator(f'tr[data-model="{first}"]')).to_contain_text("production")
    assert _status(world, first) == "production" and _status(world, second) == "retired"
    audit = world.fleet.client.get("/api/v1/audit?limit=1000", headers=ADMIN).json()
    done = [e["action"] for e in audit if e["actor"] == "operator:bootstrap-admin"]
    assert "model.promote" in done and "model.rollback" in done


def test_a_viewer_gets_no_buttons_and_a_forged_post_is_refused(page: Page, world: World) -> None:
    candidate = world.fleet.upload("forged")
    for role in (Role.VIEWER, Role.OPERATOR):
        _login(page, world, _key(world, role))
        page.goto(f"{world.url}/ui/models")
        expect(page.locator(f'tr[data-model="{candidate}"]')).to_contain_text("candidate")
        expect(page.get_by_role("link", name="Promote", exact=False)).to_have_count(0)
        expect(page.get_by_text("need the admin role")).to_be_visible()
        csrf = page.locator('input[name="csrf"]').first.input_value()
        forged = page.request.post(
            f"{world.url}/ui/models/{candidate}/promote", form={"csrf": csrf}
        )
        assert forged.status == 403 and "needs the admin role" in forged.text()
        assert _status(world, candidate) == "candidate"
        page.get_by_role("button", name="Log out").click()
    _login(page, world, _key(world, Role.VIEWER))
    page.goto(f"{world.url}/ui/runs")
    expect(page.get_by_role("link", name="Cancel run", exact=False)).to_have_count(0)
    page.goto(f"{world.url}/ui/audit")
    expect(page.get_by_role("heading", name="Refused (403)")).to_be_visible()
    expect(page.locator("#who")).to_contain_text("(viewer)")  # still logged in, still the nav


def test_an_operator_follows_a_run_and_cancels_it(page: Page, world: World) -> None:
    _login(page, world, _key(world, Role.OPERATOR))
    page.get_by_role("link", name="Runs").click()
    short = world.run_id[:8]
    expect(page.get_by_role("heading", name=f"Run {short}: running")).to_contain_text(
        "round 1 of 2 completed"
    )
    rounds = page.locator(".rounds tbody tr")
    expect(rounds).to_have_count(2)
    expect(rounds.first).to_contain_text("train_loss 0.5")
    expect(rounds.first).to_contain_text("120.6 KiB")  # 123,456 bytes up
    expect(page.locator("#no-superlink")).to_contain_text("FEDGE_COORDINATOR_SUPERLINK")
    page.get_by_role("link", name=f"Cancel run {short}…").click()
    page.get_by_role("button", name="Cancel the run").click()
    expect(page.get_by_role("status")).to_have_text(f"run {short} cancelled.")
    expect(page.locator("#run-history")).to_contain_text("cancelled")
    expect(page.get_by_text("No run is in progress.")).to_be_visible()


def test_the_site_page_draws_forecasts_against_actuals(page: Page, world: World) -> None:
    north = world.sites["north"].site_id.hex()
    _login(page, world, _key(world, Role.VIEWER))
    page.locator(f'tr[data-site="{north}"] th a').click()
    expect(page).to_have_url(f"{world.url}/ui/sites/{north}")
    expect(page.get_by_role("img", name="Cell c0, target 0")).to_be_visible()
    forecast = page.locator("svg#chart polyline.forecast")
    expect(forecast).to_have_count(1)
    assert len(forecast.get_attribute("points").split()) == 20  # type: ignore[union-attr]
    assert len(page.locator("svg#chart polyline.actual").get_attribute("points").split()) == 19  # type: ignore[union-attr]
    expect(page.get_by_text("2 warning, 1 critical")).to_be_visible()
    page.get_by_label("Target", exact=True).select_option("2")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("img", name="Cell c0, target 2")).to_be_visible()


def test_late_and_offline_sites_stand_out_and_the_filters_narrow_the_fleet(
    page: Page, world: World
) -> None:
    _login(page, world, _key(world, Role.VIEWER))
    settings = world.fleet.client.app.state.coordinator.settings  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "dashboard_offline_seconds", -1.0)  # every site is offline
        page.reload()
        offline = page.locator("#fleet tbody tr.row-offline")
        expect(offline).to_have_count(3)
        expect(offline.first.locator(".state-offline")).to_have_text("offline")
        expect(page.locator("#fleet-counts")).to_contain_text("3 offline")
        patch.setattr(settings, "dashboard_offline_seconds", 1.0e9)
        patch.setattr(settings, "dashboard_late_seconds", -1.0)
        page.get_by_label("Filter").fill("south")  # htmx swaps the table as one types
        expect(page.locator("#fleet tbody tr")).to_have_count(1)
        expect(page.locator("#fleet tbody tr.row-late")).to_contain_text("rural, south")
        page.get_by_label("State").select_option("ok")
        expect(page.get_by_text("No site matches the filter.")).to_be_visible()


def test_the_decisions_page_shows_the_mix_of_the_newest_actions(page: Page, world: World) -> None:
    _login(page, world, _key(world, Role.VIEWER))
    page.get_by_role("link", name="Decisions").click()
    expect(page.locator("#decisions-summary")).to_contain_text("3 sites with actions")
    # no fresh forecasts yet: every site got the safe default, always-on
    expect(page.locator("#mode-mix tbody tr")).to_have_text(["active3"])  # th, td
    sources = page.locator("#decision-sources tbody tr")
    expect(sources).to_have_count(2)
    expect(sources.first).to_contain_text("safe_default 3")
    expect(sources.first).to_contain_text("applied 1, not acknowledged 2")
    expect(page.locator("#slice-shares tbody tr")).to_have_count(4)  # eMBB, URLLC, mMTC, pool


def test_the_api_docs_render_offline(page: Page, world: World) -> None:
    page.goto(f"{world.url}/docs")
    expect(page.get_by_role("heading", name="fedge coordinator")).to_be_visible(
        timeout=30_000
    )  # 1.4 MB of script
    expect(page.locator(".opblock").first).to_be_visible()  # the operations, from /openapi.json
    expect(page.get_by_text("/api/v1/sites/{site_id}/revoke")).to_be_visible()


def test_the_api_reference_renders_offline(browser: Browser, world: World) -> None:
    """ReDoc, bundled: its only outside reference (the badge's logo on Redocly's CDN) is
    refused by the page's own policy before any request is made."""
    context = browser.new_context()
    context.set_default_timeout(10_000)
    left: list[str] = []

    def offline(route: Route) -> None:
        if route.request.url.startswith(world.url + "/"):
            route.continue_()
        else:
            left.append(route.request.url)
            route.abort()

    context.route("**/*", offline)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: console.append(str(exc)))
    try:
        page.goto(f"{world.url}/redoc")
        # ReDoc renders the whole reference in the page (1.1 MB of script): give it time
        expect(page.get_by_role("heading", name="fedge coordinator")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("/api/v1/sites/{site_id}/revoke").first).to_be_attached()
    finally:
        context.close()
    assert left == []
    assert all("Content Security Policy" in m and "cdn.redoc.ly" in m for m in console), console


def test_the_fleet_updates_without_a_reload_keeping_filter_and_focus(
    page: Page, world: World
) -> None:
    _login(page, world, _key(world, Role.VIEWER))
    rows = page.locator("#fleet tbody tr")
    expect(rows).to_have_count(len(world.sites))
    page.get_by_label("Filter").fill("north")
    expect(rows).to_have_count(1)  # the north site
    north = page.locator(f"#fleet-site-{world.sites['north'].site_id.hex()}")
    north.focus()
    page.evaluate("window.notReloaded = true")
    world.fleet.enroll(archetype="urban", region="northwest")
    expect(rows).to_have_count(2, timeout=15_000)  # polled every 5 s, with the filter
    expect(page.get_by_text("urban, northwest")).to_be_visible()
    expect(north).to_be_focused()  # a keyboard user keeps their place
    assert page.evaluate("window.notReloaded") is True
