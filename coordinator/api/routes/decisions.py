"""Energy (DQN) and slice (PPO) decisions for a batch of sites; mounted only when the
coordinator has policies (``policy_dir``), so the schema shows what is served."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from coordinator._schema import DecisionAnswer, DecisionRequest
from coordinator.api.deps import CoordinatorDep, OperatorDep
from coordinator.api.routes._common import ERRORS, PREFIX

router = APIRouter(prefix=f"{PREFIX}/decisions", tags=["decisions"], responses=ERRORS)


@router.post(
    "",
    responses={
        404: {"description": "A site in the batch is not an active enrolled site."},
        422: {"description": "Observations of the wrong shape or non-finite."},
    },
)
async def decide(
    body: DecisionRequest, coordinator: CoordinatorDep, _: OperatorDep
) -> DecisionAnswer:
    """One answer per site, each recorded with the policy version that made it."""
    version, actions = await run_in_threadpool(
        coordinator.decide, body.kind, body.site_ids, body.observations
    )
    return DecisionAnswer(kind=body.kind, version=version, site_ids=body.site_ids, actions=actions)
