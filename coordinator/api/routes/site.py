"""Calls made by sites themselves, authenticated by their signed requests."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool

from fedge.coordinator._schema import ForecastBatch, IngestResult
from fedge.coordinator.api.deps import CoordinatorDep, SiteDep
from fedge.coordinator.api.routes._common import ERRORS, PREFIX

router = APIRouter(prefix=f"{PREFIX}/site", tags=["site"], responses=ERRORS)


@router.get(
    "/model",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "Sealed bundle."},
        404: {"description": "No model version is in production."},
    },
)
async def sealed_model(site_id: SiteDep, coordinator: CoordinatorDep) -> Response:
    """The production model bundle, sealed to the calling site (one-shot envelope)."""
    envelope, row = await run_in_threadpool(coordinator.sealed_production_model, site_id)
    return Response(
        envelope,
        media_type="application/octet-stream",
        headers={"X-Fedge-Model-Version": f"v{row.id}"},
    )


@router.post("/forecasts", status_code=201)
async def ingest_forecasts(
    site_id: SiteDep, body: ForecastBatch, coordinator: CoordinatorDep
) -> IngestResult:
    """A batch of the site's forecasts (the signature covers the body's hash)."""
    stored = await run_in_threadpool(coordinator.ingest_forecasts, site_id, body)
    return IngestResult(received=len(body.forecasts), stored=stored)
