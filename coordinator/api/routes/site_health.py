"""Health and forecast-error reports from sites (signed requests), and the latest of
each for operators (viewers and up)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.concurrency import run_in_threadpool

from fedge.coordinator._health import fleet_health as read_fleet_health
from fedge.coordinator._health import latest_health, write_health
from fedge.coordinator._schema import HealthReport, SiteHealthPublic
from fedge.coordinator.api._bodies import HEX_SITE_ID
from fedge.coordinator.api.deps import (
    CoordinatorDep,
    ViewerDep,
    parse_json,
    site_request,
)
from fedge.coordinator.api.routes._common import ERRORS, PREFIX
from fedge.coordinator.api.routes.site import inline_schema

router = APIRouter(prefix=PREFIX, responses=ERRORS)

SiteId = Annotated[str, Path(pattern=HEX_SITE_ID)]


def _report(body: bytes) -> HealthReport:
    return parse_json(HealthReport, body)


@router.post(
    "/site/health",
    status_code=204,
    tags=["site"],
    response_class=Response,
    responses={422: {"description": "A field of the report is out of its bounds."}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline_schema(HealthReport)}},
        }
    },
)
async def report_health(request: Request, coordinator: CoordinatorDep) -> Response:
    """The site's health and rolling forecast error: kept as its latest and in its history,
    in the transaction that stores the request's nonce."""
    await site_request(request, coordinator, write_health, _report)
    return Response(status_code=204)


@router.get(
    "/sites/{site_id}/health",
    tags=["sites"],
    responses={404: {"description": "No such site, or it has not reported yet."}},
)
async def site_health(
    site_id: SiteId, coordinator: CoordinatorDep, _: ViewerDep
) -> SiteHealthPublic:
    return await run_in_threadpool(latest_health, coordinator.reader, site_id)


@router.get("/health/sites", tags=["sites"])
async def fleet_health(coordinator: CoordinatorDep, _: ViewerDep) -> list[SiteHealthPublic]:
    """The latest report of every site that reported, by site id."""
    return await run_in_threadpool(read_fleet_health, coordinator.reader)
