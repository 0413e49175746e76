"""Dependencies of the routes, as ``Annotated`` aliases: who is calling, and with what."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ValidationError

from fedge.coordinator._access import GroupWrite, Operator, StaleKeysError, require_role
from fedge.coordinator._errors import UnauthenticatedError
from fedge.coordinator._runs import Federation
from fedge.coordinator._schema import Role
from fedge.coordinator._service import Coordinator
from fedge.core import (
    NONCE_HEADER,
    RUN_TOKEN_HEADER,
    SIGNATURE_HEADER,
    SITE_HEADER,
    TIMESTAMP_HEADER,
)

_api_key = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An operator API key (fedge-op....)."
)


_run_token = APIKeyHeader(
    name=RUN_TOKEN_HEADER,
    auto_error=False,
    scheme_name="RunToken",
    description="The token the coordinator gave a run's ServerApp.",
)


async def get_coordinator(request: Request) -> Coordinator:
    # async: FastAPI runs a plain ``def`` dependency in the thread pool, a hop per request
    coordinator: Coordinator = request.app.state.coordinator
    return coordinator


CoordinatorDep = Annotated[Coordinator, Depends(get_coordinator)]


async def _superlink(coordinator: CoordinatorDep) -> Federation:
    """The federation, once a SuperLink is configured: 503 naming the setting before it."""
    coordinator.federation.require_superlink()
    return coordinator.federation


#: What starts runs; declared after the caller's role, so a 401/403 comes first.
SuperLinkDep = Annotated[Federation, Depends(_superlink)]


async def _operator(
    request: Request,
    coordinator: CoordinatorDep,
    key: Annotated[str | None, Security(_api_key)],
) -> Operator:
    # A key seen within the cache's lifetime costs no I/O, and no trip to the thread pool.
    operator = coordinator.cached_operator(key)
    if operator is None:
        operator = await run_in_threadpool(coordinator.operator, key)
    request.state.actor = operator.actor
    return operator


def _needs(role: Role) -> Callable[[Operator], Awaitable[Operator]]:
    async def check(operator: Annotated[Operator, Depends(_operator)]) -> Operator:
        require_role(operator, role)
        return operator

    return check


ViewerDep = Annotated[Operator, Depends(_needs(Role.VIEWER))]
OperatorDep = Annotated[Operator, Depends(_needs(Role.OPERATOR))]
AdminDep = Annotated[Operator, Depends(_needs(Role.ADMIN))]


async def site_request(
    request: Request,
    coordinator: Coordinator,
    write: GroupWrite | None = None,
    payload: Callable[[bytes], Any] | None = None,
) -> tuple[bytes, Any, Any]:
    """Admit a signed site request (see ``fedge.coordinator._access.SiteRequests``): the
    site id, ``payload(body)``, and ``write``'s result for it, stored with the nonce.

    ``payload`` parses the body once the signature holds (so an unsigned request learns
    nothing about its body); when it raises, the nonce alone is stored, then the error."""
    body = await request.body()
    query = request.scope["query_string"]  # as sent: no URL object to build
    target = request.scope["path"] + (f"?{query.decode('latin-1')}" if query else "")
    headers = {
        h: request.headers.get(h)
        for h in (SITE_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)
    }
    request.state.actor = f"site:{(headers[SITE_HEADER] or '?')[:40]}"
    requests = coordinator.site_requests
    with requests.arriving():  # the writer's group waits for it (see ``SiteRequests``)
        signed = requests.parse(method=request.method, target=target, body=body, headers=headers)
        keys = requests.cached_keys(signed.site_id)
        if keys is None:
            keys = await run_in_threadpool(requests.load_keys, signed.site_id)
        try:
            # ~0.4 ms of ML-DSA + Ed25519 in the event loop costs less than a thread hop
            previous = requests.verify(signed, keys)
        except UnauthenticatedError:  # the keys may have rotated since they were cached
            keys = await run_in_threadpool(requests.load_keys, signed.site_id)
            previous = requests.verify(signed, keys)
        parsed: Any = None
        problem: Exception | None = None
        if payload is not None:
            try:
                parsed = payload(body)
            except RequestValidationError as exc:
                problem, write = exc, None
    try:
        result = await asyncio.wrap_future(requests.submit(signed, keys, previous, write, parsed))
    except StaleKeysError:  # rotated or revoked through another worker: read them again
        keys = await run_in_threadpool(requests.load_keys, signed.site_id)
        previous = requests.verify(signed, keys)
        result = await asyncio.wrap_future(requests.submit(signed, keys, previous, write, parsed))
    if problem is not None:
        raise problem
    return signed.site_id, parsed, result


async def _site(request: Request, coordinator: CoordinatorDep) -> bytes:
    """The site id of a correctly signed request (see ``fedge.coordinator._access``)."""
    site_id, _, _ = await site_request(request, coordinator)
    return site_id


SiteDep = Annotated[bytes, Depends(_site)]
RunTokenDep = Annotated[str | None, Security(_run_token)]


Body = TypeVar("Body", bound=BaseModel)


def parse_json(model: type[Body], body: bytes) -> Body:
    """``body`` validated as ``model``; a 422 naming the fields otherwise."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(
            [
                {**e, "loc": ("body", *e.get("loc", ()))}
                for e in exc.errors(include_url=False, include_input=False)
            ]
        ) from exc


def json_body(model: type[Body]) -> Callable[[Request], Awaitable[Body]]:
    """A dependency that reads and validates the JSON body as ``model``. FastAPI reads a
    declared body before any dependency; declared after the caller's credentials, this one
    leaves the body of a refused request unread."""

    async def parse(request: Request) -> Body:
        return parse_json(model, await request.body())

    return parse


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """The ``openapi_extra`` that documents a :func:`json_body` route's request body."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    if "$defs" in schema:  # nested models would need components of their own
        raise TypeError(f"{model.__name__} nests models; document its body another way")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
