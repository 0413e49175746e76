"""A site rotates its own keys: the rotation statement, in a request signed with the
current key; the previous generation stays valid for ``rotation_grace_seconds``."""

from __future__ import annotations

import base64
import binascii
from typing import Final

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from fedge.coordinator._errors import InvalidInputError
from fedge.coordinator._schema import SitePublic
from fedge.coordinator.api._bodies import Problem
from fedge.coordinator.api.deps import CoordinatorDep, SiteDep
from fedge.coordinator.api.routes._common import ERRORS, PREFIX

router = APIRouter(prefix=f"{PREFIX}/site", tags=["site"], responses=ERRORS)

#: A statement is 16 + 4 + 1984 + 1216 + 2 x 3373 bytes (~13.3 kB of base64).
_MAX_STATEMENT_CHARS: Final = 16_384


class RotationRequest(BaseModel):
    """``SiteIdentity.rotate``'s statement: the new public keys, signed by both keys."""

    statement_base64: str = Field(min_length=1, max_length=_MAX_STATEMENT_CHARS)


@router.post(
    "/rotate",
    responses={
        409: {"model": Problem, "description": "The site's keys changed meanwhile; retry."},
        422: {
            "model": Problem,
            "description": "A statement that is not base64, names another site, has the "
            "wrong generation or a bad signature; nothing is stored.",
        },
    },
)
async def rotate(
    site_id: SiteDep, body: RotationRequest, coordinator: CoordinatorDep
) -> SitePublic:
    """Replace the calling site's keys with the statement's (generation + 1)."""
    try:
        statement = base64.b64decode(body.statement_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError("statement_base64 is not base64") from exc
    row = await run_in_threadpool(coordinator.rotate_site, site_id, statement)
    return SitePublic.model_validate(row, from_attributes=True)
