"""Enrollment: an operator issues a token; the site spends it and proves its keys."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from fedge.coordinator._schema import SitePublic, TokenCreate, TokenIssued
from fedge.coordinator.api._bodies import (
    AuthorityKeys,
    EnrollBegin,
    EnrollChallenge,
    EnrollComplete,
)
from fedge.coordinator.api._codec import b64, unb64
from fedge.coordinator.api.deps import CoordinatorDep, OperatorDep
from fedge.coordinator.api.routes._common import ERRORS, PREFIX

router = APIRouter(prefix=f"{PREFIX}/enrollment", tags=["enrollment"], responses=ERRORS)


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


@router.post("/begin", responses={400: {"description": "Malformed request."}})
async def begin(body: EnrollBegin, coordinator: CoordinatorDep) -> EnrollChallenge:
    """Spend the token inside the sealed request; answer a KEM challenge."""
    request = unb64(body.request_base64, "request_base64")
    challenge = await run_in_threadpool(coordinator.enroll_begin, request)
    return EnrollChallenge(challenge_base64=b64(challenge))


@router.post("/complete", status_code=201)
async def complete(body: EnrollComplete, coordinator: CoordinatorDep) -> SitePublic:
    """Register the site once its proof of KEM-key possession checks out."""
    proof = unb64(body.proof_base64, "proof_base64")
    row = await run_in_threadpool(
        coordinator.enroll_complete,
        bytes.fromhex(body.site_id),
        proof,
        body.archetype,
        body.region,
    )
    return SitePublic.model_validate(row, from_attributes=True)
