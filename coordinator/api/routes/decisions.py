"""Energy (DQN) and slice (PPO) decisions for a batch of sites; mounted only when the
coordinator has policies (``policy_dir``), so the schema shows what is served."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter, Response

from coordinator._schema import DecisionAnswer, DecisionRequest
from coordinator.api.deps import CoordinatorDep, OperatorDep
from coordinator.api.routes._common import ERRORS, PREFIX

router = APIRouter(prefix=f"{PREFIX}/decisions", tags=["decisions"], responses=ERRORS)


@router.post(
    "",
    response_model=DecisionAnswer,
    responses={
        404: {"description": "A site in the batch is not an active enrolled site."},
        422: {"description": "Observations of the wrong shape or non-finite."},
    },
)
async def decide(body: DecisionRequest, coordinator: CoordinatorDep, _: OperatorDep) -> Response:
    """One answer per site, each recorded with the policy version that made it."""
    # Inference (~0.1 ms for 64 sites) runs here; the answer leaves only once the group
    # commit has stored it (coordinator._decision_log).
    version, actions = coordinator.answer(body.kind, body.site_ids, body.observations)
    await asyncio.wrap_future(coordinator.record(body.kind, body.site_ids, version, actions))
    answer: dict[str, Any] = {
        "kind": body.kind.value,
        "version": version,
        "site_ids": body.site_ids,
        "actions": actions,
    }
    return Response(json.dumps(answer, separators=(",", ":")), media_type="application/json")
