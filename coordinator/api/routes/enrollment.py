"""Enrollment: an operator issues a token; the site spends it and proves its keys.

Every refusal on these routes is audited with its reason, whatever its status (400s and
422s too, not only 401/403): ``request.state.audit_refusals`` asks the app's refusal
handler for it, so the entries stay under the same per-client denial budget.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from fedge.coordinator._schema import SitePublic, TokenCreate, TokenIssued
from fedge.coordinator.api._bodies import (
    AuthorityKeys,
    EnrollBegin,
    EnrollChallenge,
    EnrollComplete,
    Problem,
)
from fedge.coordinator.api._codec import b64, unb64
from fedge.coordinator.api.deps import CoordinatorDep, OperatorDep
from fedge.coordinator.api.routes._common import ERRORS, PREFIX


async def _audit_refusals(request: Request) -> None:
    """Anyone may call these routes: what they refuse is the trail of an attack."""
    request.state.audit_refusals = True


router = APIRouter(
    prefix=f"{PREFIX}/enrollment",
    tags=["enrollment"],
    responses=ERRORS,
    dependencies=[Depends(_audit_refusals)],
)

_BEGIN_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    400: {
        "model": Problem,
        "description": "The request cannot be opened or used: malformed or tampered, sealed "
        "to a key generation the coordinator does not hold, a site id that is not its key's "
        "fingerprint, or a site that is already enrolled.",
    },
    401: {
        "model": Problem,
        "description": "The request's signature does not verify; its token is unknown, "
        "already used or expired; or too many other sites are enrolling with it.",
    },
    422: {"model": Problem, "description": "The body does not parse (not base64, too long)."},
}
_COMPLETE_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    400: {"model": Problem, "description": "The site is already enrolled."},
    401: {
        "model": Problem,
        "description": "No enrollment in progress for the site (never begun, its challenge "
        "expired, or ended by too many wrong proofs); a wrong proof (the enrollment stays "
        "pending); or a token another site has used meanwhile.",
    },
    422: {"model": Problem, "description": "The body does not parse (site id, base64)."},
}


@router.get("/authority")
def authority(coordinator: CoordinatorDep) -> AuthorityKeys:
    """The keys a site seals its enrollment request to (check the id out of band)."""
    keys = coordinator.identity.public_keys()
    return AuthorityKeys(site_id=keys.site_id.hex(), public_keys_base64=b64(keys.to_bytes()))


@router.post("/tokens", status_code=201)
def issue_token(spec: TokenCreate, coordinator: CoordinatorDep, by: OperatorDep) -> TokenIssued:
    """A one-time token (only its hash is stored); hand it to the site out of band."""
    token, expires_at = coordinator.issue_token(by, spec.ttl_seconds)
    return TokenIssued(token=token, expires_at=expires_at)


@router.post("/begin", responses=_BEGIN_ERRORS)
async def begin(body: EnrollBegin, coordinator: CoordinatorDep) -> EnrollChallenge:
    """Check the sealed request and its token (not spent here); answer a KEM challenge.
    The same request asked again gets the same challenge while it is valid."""
    request = unb64(body.request_base64, "request_base64")
    challenge = await run_in_threadpool(coordinator.enroll_begin, request)
    return EnrollChallenge(challenge_base64=b64(challenge))


@router.post("/complete", status_code=201, responses=_COMPLETE_ERRORS)
async def complete(body: EnrollComplete, coordinator: CoordinatorDep) -> SitePublic:
    """Register the site once its proof of KEM-key possession checks out; this is what
    spends the token."""
    proof = unb64(body.proof_base64, "proof_base64")
    row = await run_in_threadpool(
        coordinator.enroll_complete,
        bytes.fromhex(body.site_id),
        proof,
        body.archetype,
        body.region,
    )
    return SitePublic.model_validate(row, from_attributes=True)
