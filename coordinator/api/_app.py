"""The FastAPI application: routes, error answers, audit of denials, body limits, metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fedge.coordinator._errors import (
    ConflictError,
    CoordinatorError,
    ForbiddenError,
    InvalidInputError,
    NotConfiguredError,
    NotFoundError,
    UnauthenticatedError,
    UnavailableError,
)
from fedge.coordinator._service import Coordinator
from fedge.coordinator._settings import CoordinatorSettings
from fedge.coordinator.api._hot import HotRoutes
from fedge.coordinator.api._limits import (
    BodyLimits,
    DenialBuckets,
    Denials,
    LimitBodies,
    too_many,
)
from fedge.coordinator.api.routes import ROUTERS, decisions, runs, site
from fedge.coordinator.dashboard import mount as mount_dashboard
from fedge.security import (
    InvalidSignature,
    InvalidToken,
    RevokedSender,
    SecurityError,
    UnknownSender,
)

_log = logging.getLogger("fedge.coordinator.api")

_STATUS: dict[type[Exception], int] = {
    UnauthenticatedError: 401,
    ForbiddenError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    InvalidInputError: 422,
    UnavailableError: 503,
    InvalidToken: 401,
    InvalidSignature: 401,
    RevokedSender: 401,
    UnknownSender: 401,
}


class Metrics:
    """Per-app Prometheus collectors (a private registry, so apps never share counters),
    with the coordinator's own (``fedge.coordinator._telemetry``): its state and events."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(coordinator.telemetry)
        self.requests = Counter(
            "fedge_coordinator_requests",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fedge_coordinator_request_seconds",
            "HTTP request latency by route.",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.denials = Counter(
            "fedge_coordinator_denials",
            "Requests refused with 401, 403, 413, or 429 (a client over its denial budget).",
            ["status"],
            registry=self.registry,
        )


class MeasureRequests:
    """Requests and latency by route template. Plain ASGI: Starlette's ``BaseHTTPMiddleware``
    cost more than the decisions route's own work per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            method = scope.get("method", "")
            self.metrics.requests.labels(method, path, str(status)).inc()
            self.metrics.latency.labels(method, path).observe(time.perf_counter() - started)


def _status_of(exc: Exception) -> int:
    for kind in type(exc).__mro__:
        if kind in _STATUS:
            return _STATUS[kind]
    if isinstance(exc, SecurityError):
        return 400
    return 503  # DatabaseError, SettingsError: the service, not the caller, is at fault


#: How ``serve --workers N`` hands its ``--env-file`` to the workers. Not under the
#: settings' prefix, where it would be refused as an unknown setting.
ENV_FILE_VARIABLE = "FEDGE_SERVE_ENV_FILE"
#: And its ``--log-format``.
LOG_FORMAT_VARIABLE = "FEDGE_SERVE_LOG_FORMAT"


def worker_app() -> FastAPI:
    """One worker of ``fedge coordinator serve --workers N`` (the parent has migrated the
    database and interrupted stale runs; a worker must not interrupt its siblings' runs)."""
    import os

    from fedge.coordinator._settings import load_settings
    from fedge.core import configure_logging

    configure_logging(os.environ.get(LOG_FORMAT_VARIABLE, "text"))
    env_file = os.environ.get(ENV_FILE_VARIABLE)
    settings = load_settings(**({"_env_file": env_file} if env_file else {}))
    return create_app(settings, Coordinator(settings, recover=False))


def create_app(settings: CoordinatorSettings, coordinator: Coordinator | None = None) -> FastAPI:
    """The coordinator's ASGI app; opens (and migrates) the database right away."""
    if coordinator is None:
        settings.make_state_dir()
        coordinator = Coordinator(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        coordinator.federation.join()
        coordinator.close()

    app = FastAPI(
        title="fedge coordinator",
        version="1",
        description="Enrollment, sites, model versions and rounds of a fedge fleet.",
        lifespan=lifespan,
        # /docs and /redoc are served from the package's own Swagger UI and ReDoc (the
        # dashboard's static files); FastAPI's pages load theirs from a CDN, blank on a
        # network with no way out.
        docs_url=None,
        redoc_url=None,
    )
    app.state.coordinator = coordinator
    app.state.metrics = metrics = Metrics(coordinator)
    app.state.denials = denials = Denials(
        DenialBuckets(settings.denial_burst, settings.denial_refill_per_minute),
        coordinator.audit,
        lambda status: metrics.denials.labels(str(status)).inc(),
    )
    # Every route is mounted: one whose feature is off (no policies, no SuperLink) answers
    # 503 naming the setting that turns it on, not a 404 that reads like a wrong URL.
    # First: the hottest routes match soonest (each router before costs a match per request).
    app.include_router(site.router)
    app.include_router(decisions.router)
    for router in ROUTERS:
        if router is not site.router:
            app.include_router(router)
    app.include_router(runs.control)
    mount_dashboard(app)  # the operator's pages at /ui, over the same service and roles

    async def refuse(request: Request, exc: Exception) -> Response:
        status = _status_of(exc)
        audit_any = status < 500 and getattr(request.state, "audit_refusals", False)
        if status in (401, 403) or audit_any:
            route = request.scope.get("route")
            wait = await denials.refuse(
                request.scope,
                status,
                getattr(request.state, "actor", "anonymous"),
                f"{request.method} {getattr(route, 'path', request.url.path)}",
                f"{status}: {exc}",
            )
            if wait > 0:
                return too_many(wait)
        if status >= 500:
            _log.error(
                "%s %s: %s", request.method, request.url.path, exc, exc_info=exc,
                extra={"event": "api.error", "method": request.method,
                       "route": getattr(request.scope.get("route"), "path", "unmatched"),
                       "status": status},
            )  # fmt: skip
        headers = {"WWW-Authenticate": "X-API-Key"} if status == 401 else None
        body = {"detail": str(exc)}
        if isinstance(exc, NotConfiguredError):
            body["setting"] = exc.setting
        return JSONResponse(body, status_code=status, headers=headers)

    async def unavailable(request: Request, exc: Exception) -> Response:
        _log.error(
            "%s %s: database error", request.method, request.url.path, exc_info=exc,
            extra={"event": "api.database_error", "method": request.method,
                   "route": getattr(request.scope.get("route"), "path", "unmatched"),
                   "status": 503},
        )  # fmt: skip
        return JSONResponse({"detail": f"database error: {type(exc).__name__}"}, status_code=503)

    async def invalid(_: Request, exc: Exception) -> Response:
        """One line, without echoing the input (NaN in it would not even serialise)."""
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}"
            for err in exc.errors()
        )
        return JSONResponse({"detail": problems or "invalid request"}, status_code=422)

    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(CoordinatorError, refuse)
    app.add_exception_handler(SecurityError, refuse)
    app.add_exception_handler(SQLAlchemyError, unavailable)

    # Innermost: the sites' per-step calls skip the router, inside the limits and metrics.
    app.add_middleware(HotRoutes, api=app, router=site.router, endpoints=[site.ingest_forecasts])
    # Added first, so it runs inside the metrics: a refused body is still counted.
    app.add_middleware(LimitBodies, limits=BodyLimits.of(settings), denials=denials)
    app.add_middleware(MeasureRequests, metrics=metrics)

    return app
