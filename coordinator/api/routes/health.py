"""Liveness and Prometheus metrics (unauthenticated, like every scrape target)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from fedge.coordinator._errors import DatabaseError
from fedge.coordinator.api._bodies import Health
from fedge.coordinator.api.deps import CoordinatorDep

router = APIRouter(tags=["health"])


@router.get("/healthz", responses={503: {"description": "The database is unreachable."}})
def healthz(coordinator: CoordinatorDep) -> Health:
    try:
        with coordinator.reader.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise DatabaseError(f"database unreachable: {type(exc).__name__}") from exc
    return Health(status="ok", database=coordinator.engine.dialect.name)


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    body = await run_in_threadpool(generate_latest, request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
