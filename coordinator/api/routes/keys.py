"""Operator API keys (admin only); a new key's secret is shown once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from fedge.coordinator._schema import ApiKeyCreate, ApiKeyIssued, ApiKeyPublic
from fedge.coordinator.api.deps import AdminDep, CoordinatorDep
from fedge.coordinator.api.routes._common import ERRORS, PREFIX

router = APIRouter(prefix=f"{PREFIX}/keys", tags=["keys"], responses=ERRORS)


@router.get("")
def list_keys(coordinator: CoordinatorDep, _: AdminDep) -> list[ApiKeyPublic]:
    return [ApiKeyPublic.model_validate(r, from_attributes=True) for r in coordinator.api_keys()]


@router.post("", status_code=201, responses={409: {"description": "The name is taken."}})
def create_key(spec: ApiKeyCreate, coordinator: CoordinatorDep, by: AdminDep) -> ApiKeyIssued:
    row, key = coordinator.create_api_key(by, spec)
    return ApiKeyIssued.model_validate({**row.model_dump(), "key": key})


@router.post("/{key_id}/revoke", responses={404: {"description": "No such key."}})
def revoke_key(
    key_id: Annotated[int, Path(ge=1, le=2**31 - 1)], coordinator: CoordinatorDep, by: AdminDep
) -> ApiKeyPublic:
    return ApiKeyPublic.model_validate(coordinator.revoke_api_key(by, key_id), from_attributes=True)
