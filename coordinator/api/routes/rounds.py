"""Federation rounds as the coordinator recorded them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fedge.coordinator._schema import RoundPublic
from fedge.coordinator.api.deps import CoordinatorDep, ViewerDep
from fedge.coordinator.api.routes._common import ERRORS, PREFIX

router = APIRouter(prefix=f"{PREFIX}/rounds", tags=["rounds"], responses=ERRORS)


@router.get("")
def list_rounds(
    coordinator: CoordinatorDep,
    _: ViewerDep,
    run_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[RoundPublic]:
    return [
        RoundPublic.model_validate(r, from_attributes=True)
        for r in coordinator.rounds(run_id, limit)
    ]
