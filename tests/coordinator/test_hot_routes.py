"""The signed forecast ingest skips the router (``fedge.coordinator.api._hot``): its
answers, refusals included, come from the endpoint and the app's own error handlers,
never from the stack behind; the metrics still name its route; an endpoint FastAPI must
route is refused up front. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from fedge.coordinator import sign_request
from fedge.coordinator.api._hot import HotRoutes, NotAHotRouteError
from fedge.coordinator.api.routes import forecasts, site
from tests.coordinator.helpers import Fleet

PATH = "/api/v1/site/forecasts"


def _batch(step: int) -> bytes:
    rows = [{"cell": "c0", "step": step + 1, "made_step": step, "values": [0.5]}]
    return json.dumps({"model_version": "v1", "forecasts": rows}).encode()


def test_ingest_is_answered_without_the_router(fleet: Fleet) -> None:
    identity = fleet.enroll()
    api = fleet.client.app
    behind: list[str] = []

    async def router(scope: Scope, receive: Receive, send: Send) -> None:
        behind.append(f"{scope['method']} {scope['path']}")
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    hot = HotRoutes(router, api, site.router, [site.ingest_forecasts])  # type: ignore[arg-type]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await hot({**scope, "app": api}, receive, send)  # as Starlette sets it

    async def exchange() -> list[httpx.Response]:
        good, tampered, invalid = _batch(1), _batch(2), b'{"model_version": "v1"}'
        signed = [
            (good, sign_request(identity, "POST", PATH, good)),
            (tampered, sign_request(identity, "POST", PATH, _batch(3))),
            (invalid, sign_request(identity, "POST", PATH, invalid)),
        ]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hot") as client:
            answers = [await client.post(PATH, content=b, headers=h) for b, h in signed]
            answers.append(await client.get(PATH))
            return answers

    stored, refused, invalid, elsewhere = asyncio.run(exchange())
    assert (stored.status_code, stored.json()) == (201, {"received": 1, "stored": 1})
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "X-API-Key"
    assert "signature" in refused.json()["detail"]
    assert invalid.status_code == 422 and "forecasts" in invalid.json()["detail"]
    assert elsewhere.status_code == 418 and behind == [f"GET {PATH}"]

    through_app = _batch(4)
    headers = {**sign_request(identity, "POST", PATH, through_app)}
    assert fleet.client.post(PATH, content=through_app, headers=headers).status_code == 201
    scrape = fleet.client.get("/metrics").text
    assert f'fedge_coordinator_requests_total{{method="POST",route="{PATH}",status="201"}} 1.0' in (
        scrape
    )


def test_an_endpoint_fastapi_must_route_is_refused() -> None:
    from fastapi import FastAPI

    async def nothing(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError("not reached")

    with pytest.raises(NotAHotRouteError, match="dependencies or parameters"):
        HotRoutes(nothing, FastAPI(), forecasts.router, [forecasts.list_forecasts])
    with pytest.raises(NotAHotRouteError, match="not a route of this router: ingest_forecasts"):
        HotRoutes(nothing, FastAPI(), forecasts.router, [site.ingest_forecasts])
