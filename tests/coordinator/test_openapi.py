"""Schemathesis over the OpenAPI schema (bounded examples): no input gets a 5xx, on every
route, the ones that start runs included. Also: the Alembic migrations produce exactly the
tables the SQLModel classes describe."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi import FastAPI, Response
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup, ServerError
from sqlmodel import SQLModel

from fedge.coordinator import DEV_ADMIN_KEY, CoordinatorSettings
from fedge.coordinator.api import create_app
from tests.coordinator.policies import write_policies
from tests.support.ports import free_port

#: Where the app's SuperLink would be: nobody listens there, so a run request that passes
#: validation ends in the documented 503 "not reachable", and nothing starts.
SUPERLINK = f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, identity_file: Path) -> Iterator[FastAPI]:
    root = tmp_path_factory.mktemp("openapi")
    shutil.copy(identity_file, root / "coordinator.key")
    write_policies(root / "policies")
    application = create_app(
        CoordinatorSettings(
            database_url=f"sqlite:///{root / 'c.db'}",
            model_store=root / "models",
            identity_file=root / "coordinator.key",
            policy_dir=root / "policies",
            superlink=SUPERLINK,
            flwr_home=root / "flwr",
            denial_burst=1_000_000,  # thousands of refusals from one client, each answered
        )
    )
    yield application
    application.state.coordinator.close()


def _unreachable(case: Any, response: Any) -> bool:
    """The one 5xx a valid request may get: starting a run while the SuperLink is down."""
    return (
        response.status_code == 503
        and case.method.upper() == "POST"
        and case.path == "/api/v1/runs"
        and f"the SuperLink at {SUPERLINK} is not reachable" in response.json()["detail"]
    )


def _fuzz(app: FastAPI, operations: int, examples: int) -> dict[str, set[int]]:
    """Every operation, ``examples`` generated cases each, with and without an admin key;
    the statuses each operation answered."""
    api = schemathesis.openapi.from_asgi("/openapi.json", app)
    found = [result.ok() for result in api.get_all_operations()]  # type: ignore[union-attr]
    assert len(found) == operations
    seen: dict[str, set[int]] = {}
    for operation in found:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            for headers in ({"X-API-Key": DEV_ADMIN_KEY}, {}):
                response = case.call(headers=headers)
                seen.setdefault(f"{case.method.upper()} {case.path}", set()).add(
                    response.status_code
                )
                if not _unreachable(case, response):
                    case.validate_response(response, checks=[not_a_server_error])

        run()
    return seen


def test_no_server_errors(app: FastAPI) -> None:
    seen = _fuzz(app, operations=44, examples=20)
    # The run routes were exercised, not merely listed: refused, validated, and passed on.
    assert {401, 422, 503} <= seen["POST /api/v1/runs"], seen["POST /api/v1/runs"]
    assert {401, 404} <= seen["POST /api/v1/runs/{run_id}/rerun"]


def test_the_check_does_catch_a_server_error() -> None:
    broken = FastAPI()

    @broken.get("/items/{item}")
    def item(item: int) -> Response:
        return Response(status_code=503 if item == 3 else 200)

    api = schemathesis.openapi.from_asgi("/openapi.json", broken)
    operation = next(iter(api.get_all_operations())).ok()  # type: ignore[union-attr]
    fine = operation.Case(path_parameters={"item": 4})
    fine.validate_response(fine.call(), checks=[not_a_server_error])
    failing = operation.Case(path_parameters={"item": 3})
    try:
        failing.validate_response(failing.call(), checks=[not_a_server_error])
    except FailureGroup as group:  # pytest.raises does not take exception groups
        assert any(isinstance(e, ServerError) for e in group.exceptions)
    else:
        pytest.fail("a 503 went unnoticed")


def test_migrations_match_the_models(app: FastAPI) -> None:
    engine = app.state.coordinator.engine
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert diff == []


def test_schema_documents_every_route(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    assert all(p in ("/healthz", "/metrics") or p.startswith("/api/v1/") for p in paths)
    promote = paths["/api/v1/models/{model_id}/promote"]["post"]
    assert {"401", "403", "404", "409"} <= set(promote["responses"])
