"""Health and forecast-error reports from sites (signed requests)."""

from __future__ import annotations

from fastapi import APIRouter

from fedge.coordinator.api.routes._common import ERRORS, PREFIX

router = APIRouter(prefix=PREFIX, responses=ERRORS)
