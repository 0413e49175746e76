"""Request and answer bodies that are not database records (bytes travel as base64)."""

from __future__ import annotations

from pydantic import BaseModel, Field

HEX_SITE_ID = r"^[0-9a-f]{32}$"


class AuthorityKeys(BaseModel):
    """The coordinator's public keys, which sites seal enrollment requests to."""

    site_id: str
    public_keys_base64: str


class EnrollBegin(BaseModel):
    request_base64: str = Field(min_length=1, max_length=16384)


class EnrollChallenge(BaseModel):
    challenge_base64: str


class EnrollComplete(BaseModel):
    site_id: str = Field(max_length=32, pattern=HEX_SITE_ID)
    proof_base64: str = Field(min_length=1, max_length=256)
    archetype: str | None = Field(default=None, max_length=64)
    region: str | None = Field(default=None, max_length=64)


class Health(BaseModel):
    status: str
    database: str


class Problem(BaseModel):
    """Every error answer: one line saying what is wrong."""

    detail: str
    #: A feature that is not configured (503): the setting that turns it on; a body over
    #: its route's limit (413): the setting that sets the limit.
    setting: str | None = None
