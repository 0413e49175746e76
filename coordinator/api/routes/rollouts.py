"""Model rollouts per version and per site (viewers and up)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from fedge.coordinator._rollout import RolloutDetail, RolloutPublic
from fedge.coordinator.api.deps import CoordinatorDep, ViewerDep
from fedge.coordinator.api.routes._common import ERRORS, PREFIX

router = APIRouter(prefix=f"{PREFIX}/rollouts", tags=["rollouts"], responses=ERRORS)


@router.get("")
def list_rollouts(
    coordinator: CoordinatorDep,
    _: ViewerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> list[RolloutPublic]:
    """Newest first, with counts of canaries, deliveries and verdicts."""
    return coordinator.rollouts.recent(limit)


@router.get("/{rollout_id}", responses={404: {"description": "No such rollout."}})
def get_rollout(
    rollout_id: Annotated[int, Path(ge=1, le=2**31 - 1)],
    coordinator: CoordinatorDep,
    _: ViewerDep,
) -> RolloutDetail:
    """One rollout with every site it reaches: role, delivery and verdict."""
    return coordinator.rollouts.detail(rollout_id)
