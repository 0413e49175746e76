"""Calls made by sites themselves, authenticated by their signed requests."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel

from fedge.coordinator._errors import ForbiddenError, InvalidInputError, UnauthenticatedError
from fedge.coordinator._health import write_forecasts
from fedge.coordinator._schema import ForecastBatch, IngestResult
from fedge.coordinator._service import Coordinator
from fedge.coordinator.api.deps import parse_json, site_request
from fedge.coordinator.api.routes._common import ERRORS, PREFIX
from fedge.security import SecurityError

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


def _refusal(exc: Exception) -> str:
    """The bounded outcome label of a refused batch."""
    if isinstance(exc, RequestValidationError | InvalidInputError):
        return "invalid"
    if isinstance(exc, UnauthenticatedError | ForbiddenError | SecurityError):
        return "unauthenticated"
    return "unavailable"


def _batch(body: bytes) -> ForecastBatch:
    return parse_json(ForecastBatch, body)


@router.post(
    "/forecasts",
    status_code=201,
    response_model=IngestResult,
    responses={422: {"description": "A field of the batch is out of its bounds."}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline_schema(ForecastBatch)}},
        }
    },
)
async def ingest_forecasts(request: Request) -> Response:
    """A batch of the site's forecasts and actuals (the signature covers the body's hash),
    stored in the transaction that stores the request's nonce.

    Every agent posts here each step, so the route skips what it can of FastAPI's
    per-request work: no dependencies to solve, and its answer encoded once by pydantic
    instead of validated again and re-encoded as a response model."""
    coordinator: Coordinator = request.app.state.coordinator
    try:
        _, batch, stored = await site_request(request, coordinator, write_forecasts, _batch)
    except Exception as exc:
        coordinator.telemetry.ingest_refused(_refusal(exc))
        raise
    coordinator.telemetry.ingested(len(batch.forecasts) + len(batch.actuals), stored)
    result = IngestResult(received=len(batch.forecasts) + len(batch.actuals), stored=stored)
    return Response(result.model_dump_json(), 201, media_type="application/json")
