"""The cluster topology live decisions use."""

from __future__ import annotations

from fastapi import APIRouter

from fedge.coordinator.api.routes._common import ERRORS, PREFIX

router = APIRouter(prefix=PREFIX, responses=ERRORS)
