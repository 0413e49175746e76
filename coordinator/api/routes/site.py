"""Calls made by sites themselves, authenticated by their signed requests."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from fedge.coordinator._health import write_forecasts
from fedge.coordinator._schema import ForecastBatch, IngestResult
from fedge.coordinator.api.deps import CoordinatorDep, parse_json, site_request
from fedge.coordinator.api.routes._common import ERRORS, PREFIX

router = APIRouter(prefix=f"{PREFIX}/site", tags=["site"], responses=ERRORS)


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with its nested models written in place, for a route that
    reads its body itself (no components to refer to)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def _batch(body: bytes) -> ForecastBatch:
    return parse_json(ForecastBatch, body)


@router.post(
    "/forecasts",
    status_code=201,
    responses={422: {"description": "A field of the batch is out of its bounds."}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline_schema(ForecastBatch)}},
        }
    },
)
async def ingest_forecasts(request: Request, coordinator: CoordinatorDep) -> IngestResult:
    """A batch of the site's forecasts and actuals (the signature covers the body's hash),
    stored in the transaction that stores the request's nonce."""
    _, batch, stored = await site_request(request, coordinator, write_forecasts, _batch)
    return IngestResult(received=len(batch.forecasts) + len(batch.actuals), stored=stored)
