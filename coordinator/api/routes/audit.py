"""The append-only audit log (admin only), paged by id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fedge.coordinator._schema import AuditPublic
from fedge.coordinator.api.deps import AdminDep, CoordinatorDep
from fedge.coordinator.api.routes._common import ERRORS, PREFIX

router = APIRouter(prefix=f"{PREFIX}/audit", tags=["audit"], responses=ERRORS)


@router.get("")
def audit_log(
    coordinator: CoordinatorDep,
    _: AdminDep,
    after_id: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[AuditPublic]:
    return [
        AuditPublic.model_validate(r, from_attributes=True)
        for r in coordinator.audit_log(limit, after_id)
    ]
