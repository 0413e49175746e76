"""The routes every site calls each step, straight to their endpoint.

Starlette's exception middleware, FastAPI's exit-stack middleware, the router's matching
and the route's request/response wrapping (dependency solving included, with nothing to
solve) cost about as much CPU per signed forecast batch as verifying its two signatures.
An endpoint that reads its request itself (``async def endpoint(request) -> Response``,
no dependencies, no parameters) needs none of them. This pure ASGI layer, inside the
metrics and the body limits, sends an exact ``(method, path)`` match to such an endpoint,
names its route in the scope (so the metrics and the audit of refusals name it as
before) and answers its exceptions with the app's own handlers. Everything else goes
down the usual stack; the route stays in the router, so OpenAPI documents it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from fedge.coordinator._errors import CoordinatorError

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Any], Response | Awaitable[Response]]


class NotAHotRouteError(CoordinatorError, TypeError):
    """An endpoint asked for the direct path would lose what FastAPI does for it
    (dependencies, parameters, a declared body, a response model to validate against)."""


def _checked(route: APIRoute) -> Endpoint:
    dependant = route.dependant
    extras = (
        dependant.dependencies, dependant.path_params, dependant.query_params,
        dependant.header_params, dependant.cookie_params, dependant.body_params,
    )  # fmt: skip
    problem = (
        "has dependencies or parameters"
        if any(extras)
        else "does not take the request"
        if dependant.request_param_name is None
        else "is not a coroutine function"
        if not route.dependant.is_coroutine_callable
        else None
    )
    if problem is not None:
        raise NotAHotRouteError(f"{route.name} ({route.path}) {problem}: FastAPI must route it")
    endpoint: Endpoint = route.endpoint
    return endpoint


class HotRoutes:
    """Pure ASGI: the routes of ``endpoints`` (in ``router``, which ``api`` includes)
    called directly, as the module says."""

    def __init__(
        self,
        app: ASGIApp,
        api: FastAPI,
        router: APIRouter,
        endpoints: Iterable[Callable[..., Any]],
    ) -> None:
        # ``router`` is included in ``api`` as it is (no prefix, no dependencies added):
        # its routes' paths and dependants are the ones served.
        self.app, self.api = app, api
        wanted = list(endpoints)
        self._routes: dict[tuple[str, str], tuple[APIRoute, Endpoint]] = {}
        for route in router.routes:
            if isinstance(route, APIRoute) and route.endpoint in wanted:
                endpoint = _checked(route)
                for method in route.methods or ():
                    self._routes[(method, route.path)] = (route, endpoint)
                wanted.remove(route.endpoint)
        if wanted:
            names = ", ".join(getattr(e, "__name__", repr(e)) for e in wanted)
            raise NotAHotRouteError(f"not a route of this router: {names}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = (
            self._routes.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        )
        if hot is None:
            await self.app(scope, receive, send)
            return
        route, endpoint = hot
        scope["route"], scope["endpoint"], scope["path_params"] = route, endpoint, {}
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise  # as the exception middleware does: the server error middleware's
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Handler | None:
        handlers = self.api.exception_handlers
        for kind in type(exc).__mro__:
            if kind in handlers:
                handler: Handler = handlers[kind]
                return handler
        return None
