"""The dashboard's pages, fragments (polled by htmx) and actions, under ``/ui``.

Every page needs a session (else a redirect to the login form); every action checks the
role its API route checks, with the same ``require_role``, then calls the same service
method; every POST carries the session's CSRF token. A refusal is audited like the API's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from fedge.coordinator._access import Operator, require_role
from fedge.coordinator._errors import (
    ConflictError,
    CoordinatorError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    UnauthenticatedError,
)
from fedge.coordinator._schema import Role, RunCreate
from fedge.coordinator.api._bodies import HEX_SITE_ID
from fedge.coordinator.api._limits import too_many
from fedge.coordinator.api.deps import CoordinatorDep
from fedge.coordinator.dashboard import _views as views
from fedge.coordinator.dashboard._session import (
    CSRF_FIELD,
    CSRF_HEADER,
    LOGIN_COOKIE,
    LOGIN_FORM_SECONDS,
    SESSION_COOKIE,
    CsrfError,
    DashboardSession,
    SessionError,
    SessionSigner,
    check_csrf,
)

T = TypeVar("T")
HERE: Final = Path(__file__).resolve().parent
STATIC: Final = HERE / "static"
#: The role each action needs: the one its API route needs (api/routes/models.py, runs.py,
#: audit.py). ``tests/coordinator/test_dashboard.py`` holds both to the same answers.
NEEDS: Final = {
    "view": Role.VIEWER,
    "promote": Role.ADMIN,
    "rollback": Role.ADMIN,
    "start_run": Role.OPERATOR,
    "cancel_run": Role.OPERATOR,
    "audit": Role.ADMIN,
}
#: What the pages may load: only this origin, no inline script or style, no framing.
_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_STATUS: Final[dict[type[Exception], int]] = {
    UnauthenticatedError: 401,
    ForbiddenError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    InvalidInputError: 422,
}
_DONE: Final = {
    "promote": "promoted",
    "rollback": "rolled back; the version it replaced serves again",
    "start": "started",
    "cancel": "cancelled",
}

router = APIRouter(prefix="/ui", include_in_schema=False)


def _utc(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(ts: float | None) -> str:
    if ts is None:
        return "never"
    age = time.time() - ts
    if age < 0:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if age >= size:
            return f"{int(age // size)} {unit} ago"
    return f"{int(age)} s ago"


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(utc=_utc, ago=_ago, bytes=_bytes)


def mount(app: FastAPI) -> None:
    """Add the dashboard to the coordinator's app: pages, static files, session errors."""
    coordinator = app.state.coordinator
    settings = coordinator.settings
    app.state.dashboard = SessionSigner(
        settings.kek.get_secret_value().encode(), settings.dashboard_session_seconds
    )
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    app.add_exception_handler(SessionError, _to_login)
    app.add_exception_handler(CsrfError, _csrf_refused)
    # The API's Swagger and ReDoc pages, from the package's own copies (no CDN).
    app.add_api_route("/docs", _api_docs, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", _api_reference, methods=["GET"], include_in_schema=False)


async def _api_docs(request: Request) -> Response:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url or "/openapi.json",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url="/ui/static/swagger-ui-bundle.js",
        swagger_css_url="/ui/static/swagger-ui.css",
        swagger_favicon_url="/ui/static/favicon-32x32.png",
    )


#: ReDoc styles itself with inline <style> and runs its search in a blob: worker; its
#: sidebar's badge would load a logo from Redocly's CDN: refused here, before any request.
_REFERENCE_CSP: Final = (
    "default-src 'self'; script-src 'self' blob:; worker-src 'self' blob:; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; "
    "base-uri 'none'"
)


async def _api_reference(request: Request) -> Response:
    # FastAPI's ReDoc page also loads Google's web fonts: off, the page falls back to system
    # fonts rather than wait on a host it cannot reach.
    page = get_redoc_html(
        openapi_url=request.app.openapi_url or "/openapi.json",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url="/ui/static/redoc.standalone.js",
        redoc_favicon_url="/ui/static/favicon-32x32.png",
        with_google_fonts=False,
    )
    page.headers["Content-Security-Policy"] = _REFERENCE_CSP
    return page


# --- sessions ----------------------------------------------------------------------------


def _signer(request: Request) -> SessionSigner:
    signer: SessionSigner = request.app.state.dashboard
    return signer


async def _session(request: Request, coordinator: CoordinatorDep) -> DashboardSession:
    cookie = request.cookies.get(SESSION_COOKIE)
    session = await run_in_threadpool(_signer(request).session, coordinator.reader, cookie)
    request.state.actor = session.operator.actor
    return session


SessionDep = Annotated[DashboardSession, Depends(_session)]


def _tls(request: Request) -> bool:
    """Served over TLS: the request came over https, or the public URL is https."""
    public = request.app.state.coordinator.settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


async def _to_login(request: Request, exc: Exception) -> Response:
    """No valid session: to the login form (an htmx fragment request: the whole page)."""
    target = "/ui/login"
    if request.method == "GET" and request.url.path != "/ui/login":
        target += "?next=" + quote(
            request.url.path + (f"?{request.url.query}" if request.url.query else ""), safe=""
        )
    response: Response
    if request.headers.get("HX-Request"):
        response = Response(status_code=200, headers={"HX-Redirect": target})
    else:
        response = RedirectResponse(target, status_code=303)
    if request.cookies.get(SESSION_COOKIE):
        response.delete_cookie(SESSION_COOKIE, path="/ui", httponly=True, samesite="strict")
    return response


async def _refusal(
    request: Request, status: int, message: str, session: DashboardSession | None = None
) -> Response:
    """An audited denial (401, 403), answered as the API's are: 429 past the budget."""
    actor = getattr(request.state, "actor", "anonymous")
    wait = await request.app.state.denials.refuse(
        request.scope, status, actor, f"{request.method} {request.url.path}", f"{status}: {message}"
    )
    if wait > 0:
        return too_many(wait)
    return _error_page(request, status, message, session)


async def _csrf_refused(request: Request, exc: Exception) -> Response:
    return await _refusal(request, 403, str(exc))


def _error_page(
    request: Request, status: int, message: str, session: DashboardSession | None = None
) -> Response:
    return _page(request, "error.html", {"status": status, "message": message}, session, status)


def _page(
    request: Request,
    template: str,
    context: dict[str, Any],
    session: DashboardSession | None = None,
    status: int = 200,
) -> Response:
    base: dict[str, Any] = {
        "session": session,
        "can": _abilities(session),
        "csrf_field": CSRF_FIELD,
    }
    response = templates.TemplateResponse(
        request, template, {**base, **context}, status_code=status
    )
    response.headers.update(_HEADERS)
    return response


def _allowed(operator: Operator, action: str) -> bool:
    try:
        require_role(operator, NEEDS[action])
    except ForbiddenError:
        return False
    return True


def _abilities(session: DashboardSession | None) -> dict[str, bool]:
    if session is None:
        return dict.fromkeys(NEEDS, False)
    return {action: _allowed(session.operator, action) for action in NEEDS}


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form (what browsers and htmx send), first value of each field."""
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


async def _checked_form(request: Request, session: DashboardSession) -> dict[str, str]:
    form = await _form(request)
    check_csrf(session, form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER))
    return form


async def _act(
    request: Request, session: DashboardSession, action: str, call: Callable[[], T]
) -> T | Response:
    """``call`` once the session's role allows ``action`` (as its API route would); a
    refusal or the service's error as an error page with the API's status."""
    try:
        require_role(session.operator, NEEDS[action])
    except ForbiddenError as exc:
        return await _refusal(request, 403, str(exc), session)
    try:
        return await run_in_threadpool(call)
    except CoordinatorError as exc:
        status = next((s for k, s in _STATUS.items() if isinstance(exc, k)), 503)
        return _error_page(request, status, str(exc), session)


def _done(path: str, action: str, target: str = "") -> Response:
    return RedirectResponse(f"{path}?done={action}&target={quote(target)}", status_code=303)


def _flash(done: str | None, target: str | None) -> str | None:
    if done not in _DONE:
        return None
    return f"{target} {_DONE[done]}." if target else f"{_DONE[done].capitalize()}."


# --- login and logout --------------------------------------------------------------------


def _login_page(
    request: Request, status: int = 200, error: str | None = None, next_url: str = ""
) -> Response:
    token, cookie = _signer(request).login_form()
    response = _page(
        request, "login.html",
        {"login_csrf": token, "error": error, "next": next_url,
         "logged_out": request.query_params.get("out") == "1"},
        status=status,
    )  # fmt: skip
    response.set_cookie(
        LOGIN_COOKIE, cookie, max_age=int(LOGIN_FORM_SECONDS), httponly=True,
        samesite="strict", secure=_tls(request), path="/ui/login",
    )  # fmt: skip
    return response


def _safe_next(value: str | None) -> str:
    """Only a dashboard path: never another site (an open redirect)."""
    if value and value.startswith("/ui") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui"


@router.get("/login")
async def login_form(
    request: Request, next: Annotated[str, Query(max_length=500)] = ""
) -> Response:
    return _login_page(request, next_url=_safe_next(next) if next else "")


@router.post("/login")
async def login(request: Request, coordinator: CoordinatorDep) -> Response:
    form = await _form(request)
    next_url = _safe_next(form.get("next"))
    try:
        _signer(request).check_login_form(request.cookies.get(LOGIN_COOKIE), form.get("login_csrf"))
    except CsrfError as exc:
        return _login_page(request, 403, str(exc), next_url)
    key = form.get("api_key", "").strip()
    try:
        if not key:
            raise UnauthenticatedError("enter an operator API key")
        operator = await run_in_threadpool(coordinator.operator, key)
        cookie, _ = await run_in_threadpool(
            _signer(request).issue, coordinator.reader, operator, key
        )
    except (UnauthenticatedError, SessionError) as exc:
        wait = await request.app.state.denials.refuse(
            request.scope, 401, "anonymous", "POST /ui/login", f"401: {exc}"
        )
        if wait > 0:
            return too_many(wait)
        return _login_page(
            request, 401, "Unknown or revoked API key." if key else str(exc), next_url
        )
    await run_in_threadpool(
        coordinator.audit, operator.actor, "ui.login", "", "ok", operator.role.value
    )
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        SESSION_COOKIE, cookie, max_age=int(_signer(request).session_seconds), httponly=True,
        samesite="strict", secure=_tls(request), path="/ui",
    )  # fmt: skip
    response.delete_cookie(LOGIN_COOKIE, path="/ui/login", httponly=True, samesite="strict")
    return response


@router.post("/logout")
async def logout(request: Request, coordinator: CoordinatorDep, session: SessionDep) -> Response:
    await _checked_form(request, session)
    _signer(request).end(session)
    await run_in_threadpool(coordinator.audit, session.operator.actor, "ui.logout", "", "ok", "")
    response = RedirectResponse("/ui/login?out=1", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/ui", httponly=True, samesite="strict")
    return response


# --- fleet -------------------------------------------------------------------------------

_STATES: Final = [s.value for s in views.Liveness]


def _fleet_context(coordinator: Any, q: str, state: str, page: int) -> dict[str, Any]:
    view = views.fleet(coordinator, q, state if state in _STATES else "", page)
    return {"fleet": view, "q": q, "state": state, "states": _STATES,
            "late": coordinator.settings.dashboard_late_seconds,
            "offline": coordinator.settings.dashboard_offline_seconds}  # fmt: skip


Text = Annotated[str, Query(max_length=200)]
PageNo = Annotated[int, Query(ge=1, le=100_000)]


@router.get("")
async def fleet_page(
    request: Request, coordinator: CoordinatorDep, session: SessionDep,
    q: Text = "", state: Text = "", page: PageNo = 1,
) -> Response:  # fmt: skip
    context = await run_in_threadpool(_fleet_context, coordinator, q, state, page)
    return _page(request, "fleet.html", context, session)


@router.get("/fragments/fleet")
async def fleet_fragment(
    request: Request, coordinator: CoordinatorDep, session: SessionDep,
    q: Text = "", state: Text = "", page: PageNo = 1,
) -> Response:  # fmt: skip
    context = await run_in_threadpool(_fleet_context, coordinator, q, state, page)
    return _page(request, "_fleet_table.html", context, session)


# --- models ------------------------------------------------------------------------------


@router.get("/models")
async def models_page(
    request: Request, coordinator: CoordinatorDep, session: SessionDep,
    done: Text = "", target: Text = "",
) -> Response:  # fmt: skip
    view = await run_in_threadpool(views.models, coordinator)
    return _page(request, "models.html", {"view": view, "flash": _flash(done, target)}, session)


@router.get("/fragments/rollout")
async def rollout_fragment(
    request: Request, coordinator: CoordinatorDep, session: SessionDep
) -> Response:
    view = await run_in_threadpool(views.models, coordinator)
    return _page(request, "_rollout.html", {"view": view}, session)


def _positive(value: int) -> int:
    if not 1 <= value <= 2**31 - 1:
        raise NotFoundError(f"no model version {value}")
    return value


@router.get("/models/{model_id}/promote")
async def promote_confirm(
    model_id: int, request: Request, coordinator: CoordinatorDep, session: SessionDep
) -> Response:
    model = await _act(request, session, "promote", lambda: coordinator.model(_positive(model_id)))
    if isinstance(model, Response):
        return model
    view = await run_in_threadpool(views.models, coordinator)
    current = view.production
    return _page(request, "confirm.html", {
        "title": f"Promote v{model_id}",
        "question": f"Make v{model_id} the production version"
        + (f", retiring v{current.id}" if current is not None else "")
        + "? It is rolled out to the canary sites first, then to the fleet.",
        "action": f"/ui/models/{model_id}/promote",
        "confirm": f"Promote v{model_id}",
        "back": "/ui/models",
    }, session)  # fmt: skip


@router.post("/models/{model_id}/promote")
async def promote(
    model_id: int, request: Request, coordinator: CoordinatorDep, session: SessionDep
) -> Response:
    await _checked_form(request, session)
    done = await _act(
        request,
        session,
        "promote",
        lambda: coordinator.promote(session.operator, _positive(model_id)),
    )
    return done if isinstance(done, Response) else _done("/ui/models", "promote", f"v{model_id}")


@router.get("/models/rollback")
async def rollback_confirm(
    request: Request, coordinator: CoordinatorDep, session: SessionDep
) -> Response:
    view = await _act(request, session, "rollback", lambda: views.models(coordinator))
    if isinstance(view, Response):
        return view
    current = view.production
    if current is None or current.replaced_id is None:
        return _error_page(
            request, 409, "no production version with a version to roll back to", session
        )
    return _page(request, "confirm.html", {
        "title": "Roll back",
        "question": f"Retire v{current.id} and serve v{current.replaced_id} again, on every site?",
        "action": "/ui/models/rollback",
        "confirm": f"Roll back to v{current.replaced_id}",
        "back": "/ui/models",
    }, session)  # fmt: skip


@router.post("/models/rollback")
async def rollback(request: Request, coordinator: CoordinatorDep, session: SessionDep) -> Response:
    await _checked_form(request, session)
    done = await _act(request, session, "rollback", lambda: coordinator.rollback(session.operator))
    if isinstance(done, Response):
        return done
    return _done("/ui/models", "rollback", f"v{done.id}")


# --- runs --------------------------------------------------------------------------------


@router.get("/runs")
async def runs_page(
    request: Request, coordinator: CoordinatorDep, session: SessionDep,
    done: Text = "", target: Text = "",
) -> Response:  # fmt: skip
    view = await run_in_threadpool(views.runs, coordinator)
    return _page(request, "runs.html", {"view": view, "flash": _flash(done, target)}, session)


@router.get("/fragments/runs")
async def runs_fragment(
    request: Request, coordinator: CoordinatorDep, session: SessionDep
) -> Response:
    view = await run_in_threadpool(views.runs, coordinator)
    return _page(request, "_runs_live.html", {"view": view}, session)


@router.post("/runs")
async def start_run(request: Request, coordinator: CoordinatorDep, session: SessionDep) -> Response:
    form = await _checked_form(request, session)
    try:
        spec = RunCreate.model_validate({
            "num_rounds": form.get("num_rounds", "3"),
            "strategy": form.get("strategy", "fedavg"),
            "codec": form.get("codec", "none"),
        })  # fmt: skip
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _error_page(request, 422, f"a bad run: {problems}", session)
    federation = coordinator.federation

    def start() -> Any:
        federation.require_superlink()
        return federation.start(session.operator.actor, spec)

    run = await _act(request, session, "start_run", start)
    return run if isinstance(run, Response) else _done("/ui/runs", "start", f"run {run.id[:8]}")


RUN_ID: Final = r"^[0-9a-f]{32}$"


def _run_id(value: str) -> str:
    import re

    if not re.fullmatch(RUN_ID, value):
        raise NotFoundError(f"no run {value[:40]}")
    return value


@router.get("/runs/{run_id}/cancel")
async def cancel_confirm(
    run_id: str, request: Request, coordinator: CoordinatorDep, session: SessionDep
) -> Response:
    run = await _act(
        request, session, "cancel_run", lambda: coordinator.federation.run(_run_id(run_id))
    )
    if isinstance(run, Response):
        return run
    if not run.status.live:
        return _error_page(
            request, 409, f"run {run_id[:8]} has ended ({run.status.value})", session
        )
    return _page(request, "confirm.html", {
        "title": f"Cancel run {run_id[:8]}",
        "question": f"Cancel run {run_id[:8]} ({run.num_rounds} rounds of {run.strategy})? "
        "Its open round is interrupted and the SuperLink is asked to stop it.",
        "action": f"/ui/runs/{run_id}/cancel",
        "confirm": "Cancel the run",
        "back": "/ui/runs",
    }, session)  # fmt: skip


@router.post("/runs/{run_id}/cancel")
async def cancel_run(
    run_id: str, request: Request, coordinator: CoordinatorDep, session: SessionDep
) -> Response:
    await _checked_form(request, session)
    done = await _act(
        request, session, "cancel_run",
        lambda: coordinator.federation.cancel(session.operator.actor, _run_id(run_id)),
    )  # fmt: skip
    return done if isinstance(done, Response) else _done("/ui/runs", "cancel", f"run {run_id[:8]}")


# --- one site ----------------------------------------------------------------------------


def _site_context(coordinator: Any, site_id: str, cell: str, target: int) -> dict[str, Any]:
    import re

    if not re.fullmatch(HEX_SITE_ID.strip("^$"), site_id):
        raise NotFoundError(f"no site {site_id[:40]}")
    return {"view": views.site(coordinator, site_id, cell or None, target)}


@router.get("/sites/{site_id}")
async def site_page(
    site_id: str, request: Request, coordinator: CoordinatorDep, session: SessionDep,
    cell: Annotated[str, Query(max_length=64)] = "",
    target: Annotated[int, Query(ge=0, le=15)] = 0,
) -> Response:  # fmt: skip
    try:
        context = await run_in_threadpool(_site_context, coordinator, site_id, cell, target)
    except NotFoundError as exc:
        return _error_page(request, 404, str(exc), session)
    template = "_site_live.html" if request.headers.get("HX-Request") else "site.html"
    return _page(request, template, context, session)


# --- decisions ---------------------------------------------------------------------------


@router.get("/decisions")
async def decisions_page(
    request: Request, coordinator: CoordinatorDep, session: SessionDep
) -> Response:
    view = await run_in_threadpool(views.decisions, coordinator)
    context = {"view": view, "policies_on": coordinator.decisions is not None}
    template = "_decisions.html" if request.headers.get("HX-Request") else "decisions.html"
    return _page(request, template, context, session)


# --- audit -------------------------------------------------------------------------------


@router.get("/audit")
async def audit_page(
    request: Request, coordinator: CoordinatorDep, session: SessionDep,
    q: Text = "", outcome: Text = "",
) -> Response:  # fmt: skip
    found = await _act(request, session, "audit", lambda: views.audit(coordinator, q, outcome))
    if isinstance(found, Response):
        return found
    entries, searched = found
    return _page(request, "audit.html", {
        "entries": entries, "searched": searched, "q": q, "outcome": outcome,
        "window": views.AUDIT_WINDOW,
    }, session)  # fmt: skip


__all__ = ["NEEDS", "mount", "router"]
