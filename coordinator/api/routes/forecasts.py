"""Forecasts the sites reported, newest first (viewers and up)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fedge.coordinator._schema import ForecastPublic
from fedge.coordinator.api._bodies import HEX_SITE_ID
from fedge.coordinator.api.deps import CoordinatorDep, ViewerDep
from fedge.coordinator.api.routes._common import ERRORS, PREFIX

router = APIRouter(prefix=f"{PREFIX}/forecasts", tags=["forecasts"], responses=ERRORS)


@router.get("")
def list_forecasts(
    coordinator: CoordinatorDep,
    _: ViewerDep,
    site_id: Annotated[str | None, Query(pattern=HEX_SITE_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[ForecastPublic]:
    return [
        ForecastPublic.model_validate(r, from_attributes=True)
        for r in coordinator.forecasts(site_id, limit)
    ]
