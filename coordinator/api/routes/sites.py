"""Enrolled sites: list, inspect, revoke (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool

from fedge.coordinator._rollout import site_detail
from fedge.coordinator._schema import SiteDetail, SitePublic, SiteState
from fedge.coordinator.api._bodies import HEX_SITE_ID
from fedge.coordinator.api.deps import AdminDep, CoordinatorDep, ViewerDep
from fedge.coordinator.api.routes._common import ERRORS, PREFIX

router = APIRouter(prefix=f"{PREFIX}/sites", tags=["sites"], responses=ERRORS)

SiteId = Annotated[str, Path(pattern=HEX_SITE_ID)]


@router.get("")
def list_sites(
    coordinator: CoordinatorDep, _: ViewerDep, status: Annotated[SiteState | None, Query()] = None
) -> list[SitePublic]:
    return [SitePublic.model_validate(r, from_attributes=True) for r in coordinator.sites(status)]


@router.get("/{site_id}", responses={404: {"description": "No such site."}})
async def get_site(site_id: SiteId, coordinator: CoordinatorDep, _: ViewerDep) -> SiteDetail:
    """The site with the model version assigned to it and the one it reports serving."""
    return await run_in_threadpool(site_detail, coordinator.reader, site_id)


@router.post("/{site_id}/revoke", responses={404: {"description": "No such site."}})
def revoke_site(site_id: SiteId, coordinator: CoordinatorDep, by: AdminDep) -> SitePublic:
    """From now on the site's signed requests and envelopes are refused."""
    return SitePublic.model_validate(coordinator.revoke_site(by, site_id), from_attributes=True)
