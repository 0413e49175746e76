"""Model delivery to sites and their verdicts (signed requests)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from fastapi.concurrency import run_in_threadpool

from fedge.coordinator._rollout import VerdictReport
from fedge.coordinator.api.deps import CoordinatorDep, SiteDep, json_body, openapi_body
from fedge.coordinator.api.routes._common import ERRORS, PREFIX

router = APIRouter(prefix=f"{PREFIX}/site", tags=["site"], responses=ERRORS)

VERSION_HEADER = "X-Fedge-Model-Version"
#: A version name, or empty: a site that has none yet may send ``have=``.
HAVE_PATTERN = r"^(v[1-9][0-9]{0,9})?$"


@router.get(
    "/model",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "Sealed bundle."},
        304: {"description": "``have`` is already the version assigned to the site."},
        404: {"description": "No model version is assigned to the site or in production."},
    },
)
async def sealed_model(
    site_id: SiteDep,
    coordinator: CoordinatorDep,
    have: Annotated[str | None, Query(max_length=11, pattern=HAVE_PATTERN)] = None,
) -> Response:
    """The bundle of the version the current rollout assigns to the calling site, sealed
    to it (one-shot envelope); a site that was offline gets the current assignment."""
    envelope, version = await run_in_threadpool(coordinator.sealed_assigned_model, site_id, have)
    if envelope is None:
        return Response(status_code=304, headers={VERSION_HEADER: version})
    return Response(
        envelope, media_type="application/octet-stream", headers={VERSION_HEADER: version}
    )


@router.post(
    "/model/verdict",
    status_code=204,
    response_class=Response,
    openapi_extra=openapi_body(VerdictReport),
    responses={
        409: {
            "description": "The version is not the one assigned to the site, or the site's "
            "verdict on it is already recorded otherwise."
        },
        422: {"description": "Bad fields (types, bounds, non-finite scores)."},
    },
)
async def verdict(
    site_id: SiteDep,
    report: Annotated[VerdictReport, Depends(json_body(VerdictReport))],
    coordinator: CoordinatorDep,
) -> Response:
    """The site's shadow gate on its assigned version; advances the rollout."""
    await run_in_threadpool(coordinator.rollouts.verdict, site_id.hex(), report, time.time())
    return Response(status_code=204)
