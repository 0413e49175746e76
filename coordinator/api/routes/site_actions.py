"""Actions for sites, long-polled, and their acknowledgements (signed requests); the
actions as operators see them (viewers and up)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from fedge.coordinator._actions import (
    MAX_POLL_ACTIONS,
    MAX_WAIT_SECONDS,
    AckBatch,
    ActionPublic,
    SiteActions,
)
from fedge.coordinator.api._bodies import HEX_SITE_ID
from fedge.coordinator.api.deps import (
    CoordinatorDep,
    SiteDep,
    ViewerDep,
    parse_json,
    site_request,
)
from fedge.coordinator.api.routes._common import ERRORS, PREFIX
from fedge.coordinator.api.routes.site import inline_schema

router = APIRouter(prefix=PREFIX, responses=ERRORS)

#: How often a waiting poll reads its own actions anyway. Actions stored by this process
#: or any other on the database wake it sooner (the notifier's watch, every 0.1 s); this
#: is the net under that.
RECHECK_SECONDS = 1.0


@router.get("/site/actions", tags=["site"])
async def poll_actions(
    site_id: SiteDep,
    coordinator: CoordinatorDep,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_SECONDS, allow_inf_nan=False)] = 0.0,
) -> SiteActions:
    """The caller's actions with an id above ``after``, oldest first (at most 100): at
    once when there are any, else as soon as one is stored, else empty after ``wait`` s."""
    deadline = time.monotonic() + wait
    site_hex = site_id.hex()
    book, notifier = coordinator.action_book, coordinator.action_notifier
    while True:
        seen = notifier.generation  # before the read: a wake during it is not lost
        actions = await run_in_threadpool(book.for_site, site_hex, after, MAX_POLL_ACTIONS)
        left = deadline - time.monotonic()
        if actions or left <= 0 or notifier.stopping:
            return SiteActions(actions=actions)
        await notifier.wait(min(left, RECHECK_SECONDS), seen)


def _acks(body: bytes) -> AckBatch:
    return parse_json(AckBatch, body)


@router.post(
    "/site/actions/ack",
    tags=["site"],
    status_code=204,
    response_class=Response,
    responses={
        404: {"description": "An action id that is not one of the caller's actions."},
        409: {"description": "An ack that contradicts the action's earlier ack."},
        422: {"description": "A bad ack body."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline_schema(AckBatch)}},
        }
    },
)
async def ack_actions(request: Request, coordinator: CoordinatorDep) -> Response:
    """The site applied or rejected its actions; repeating an ack changes nothing, and a
    refused batch stores none of its acks."""
    site_id, batch, _ = await site_request(request, coordinator, None, _acks)
    await run_in_threadpool(coordinator.ack_actions, site_id, batch)
    return Response(status_code=204)


@router.get("/actions", tags=["actions"])
def list_actions(
    coordinator: CoordinatorDep,
    _: ViewerDep,
    site_id: Annotated[str | None, Query(pattern=HEX_SITE_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[ActionPublic]:
    """Actions newest first, with the sites' acks."""
    return [ActionPublic.of(r) for r in coordinator.actions(site_id, limit)]
