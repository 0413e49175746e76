"""Model versions: list, upload (operator), promote and roll back (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from fedge.coordinator._schema import ModelStatus, ModelVersionCreate, ModelVersionPublic
from fedge.coordinator.api.deps import (
    AdminDep,
    CoordinatorDep,
    OperatorDep,
    ViewerDep,
    json_body,
    openapi_body,
)
from fedge.coordinator.api.routes._common import ERRORS, PREFIX

router = APIRouter(prefix=f"{PREFIX}/models", tags=["models"], responses=ERRORS)

ModelId = Annotated[int, Path(ge=1, le=2**31 - 1)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such model version."}}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "The version's status does not allow this."}
}


def _public(row: object) -> ModelVersionPublic:
    return ModelVersionPublic.model_validate(row, from_attributes=True)


@router.get("")
def list_models(
    coordinator: CoordinatorDep,
    _: ViewerDep,
    status: Annotated[ModelStatus | None, Query()] = None,
) -> list[ModelVersionPublic]:
    return [_public(r) for r in coordinator.models(status)]


@router.get("/{model_id}", responses=_NOT_FOUND)
def get_model(model_id: ModelId, coordinator: CoordinatorDep, _: ViewerDep) -> ModelVersionPublic:
    return _public(coordinator.model(model_id))


@router.post(
    "",
    status_code=201,
    openapi_extra=openapi_body(ModelVersionCreate),
    responses={
        **_NOT_FOUND,
        **_CONFLICT,
        422: {
            "description": "Not a fedge forecaster ONNX Runtime can load and run, or bad fields."
        },
    },
)
def upload_model(
    by: OperatorDep,
    spec: Annotated[ModelVersionCreate, Depends(json_body(ModelVersionCreate))],
    coordinator: CoordinatorDep,
) -> ModelVersionPublic:
    """Store a fedge forecaster (ONNX with its forecast spec) as a new candidate version.
    The key is checked before the body is read: a refused upload is never parsed."""
    return _public(coordinator.upload_model(by, spec))


@router.post("/rollback", responses=_CONFLICT)
def rollback(coordinator: CoordinatorDep, by: AdminDep) -> ModelVersionPublic:
    """Retire the production version; the version it replaced serves again."""
    return _public(coordinator.rollback(by))


@router.post("/{model_id}/promote", responses={**_NOT_FOUND, **_CONFLICT})
def promote(model_id: ModelId, coordinator: CoordinatorDep, by: AdminDep) -> ModelVersionPublic:
    """Make a candidate the production version; the current one is retired."""
    return _public(coordinator.promote(by, model_id))
