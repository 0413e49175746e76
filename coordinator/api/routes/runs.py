"""Federation runs: operators start them (once a SuperLink is configured; before, 503
names the setting), read them and cancel them; the ServerApp of each run reports its rounds and final
model with the run token. ``GET /retraining`` shows the retraining policy that starts runs
on its own."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool

from fedge.coordinator._retraining import RetrainingStatePublic
from fedge.coordinator._schema import (
    RoundPublic,
    RoundReport,
    RunCreate,
    RunFailure,
    RunModelReport,
    RunPublic,
)
from fedge.coordinator.api._bodies import Problem
from fedge.coordinator.api.deps import (
    CoordinatorDep,
    OperatorDep,
    RunTokenDep,
    SuperLinkDep,
    ViewerDep,
    json_body,
    openapi_body,
)
from fedge.coordinator.api.routes._common import ERRORS, PREFIX

router = APIRouter(prefix=f"{PREFIX}/runs", tags=["runs"], responses=ERRORS)
#: What starts runs: 503 until ``superlink`` is set, or while the SuperLink is down.
control = APIRouter(
    prefix=f"{PREFIX}/runs",
    tags=["runs"],
    responses={
        **ERRORS,
        503: {
            "model": Problem,
            "description": "No SuperLink is configured (``setting`` names the setting), "
            "or the configured one is not reachable.",
        },
    },
)

RunId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
RoundNumber = Annotated[int, Path(ge=1, le=10_000)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such run."}}
_REPORT: dict[int | str, dict[str, Any]] = {
    409: {
        "description": "The run has ended (completed, failed, interrupted, cancelled) "
        "or the round is final."
    },
    422: {"description": "A bad report (round out of range, not an ONNX model, NaN metrics)."},
}


def _public(row: object) -> RunPublic:
    return RunPublic.model_validate(row, from_attributes=True)


@router.get("")
def list_runs(
    coordinator: CoordinatorDep,
    _: ViewerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[RunPublic]:
    """Newest first."""
    return [_public(r) for r in coordinator.federation.runs(limit)]


@router.get("/{run_id}", responses=_NOT_FOUND)
def get_run(run_id: RunId, coordinator: CoordinatorDep, _: ViewerDep) -> RunPublic:
    return _public(coordinator.federation.run(run_id))


@control.post(
    "",
    status_code=202,
    responses={422: {"model": Problem, "description": "A bad run config (forecast, ...)."}},
)
async def start_run(spec: RunCreate, by: OperatorDep, federation: SuperLinkDep) -> RunPublic:
    """Submit a run of fedge's ServerApp to the SuperLink; it starts as ``starting``."""
    return _public(await run_in_threadpool(federation.start, by.actor, spec))


@control.post("/{run_id}/rerun", status_code=202, responses=_NOT_FOUND)
def rerun(run_id: RunId, by: OperatorDep, federation: SuperLinkDep) -> RunPublic:
    """The same run again, from the start (an interrupted or failed run, or any other)."""
    return _public(federation.rerun(by.actor, run_id))


@router.delete(
    "/{run_id}",
    responses={
        **_NOT_FOUND,
        409: {"description": "The run has ended (completed, failed, interrupted, cancelled)."},
    },
)
def cancel_run(run_id: RunId, by: OperatorDep, coordinator: CoordinatorDep) -> RunPublic:
    """Cancel a live run: it is ``cancelled`` at once, its open round ``interrupted``, and
    the SuperLink is asked to stop it (as on a coordinator restart)."""
    return _public(coordinator.federation.cancel(by.actor, run_id))


@router.put("/{run_id}/rounds/{number}", responses=_REPORT)
def report_round(
    run_id: RunId,
    number: RoundNumber,
    report: RoundReport,
    request: Request,
    coordinator: CoordinatorDep,
    token: RunTokenDep,
) -> RoundPublic:
    """The ServerApp: round ``number`` started (``running``) or ended (``completed``)."""
    request.state.actor = f"run:{run_id}"
    row = coordinator.federation.report_round(run_id, token, number, report)
    return RoundPublic.model_validate(row, from_attributes=True)


async def _checked_token(run_id: RunId, coordinator: CoordinatorDep, token: RunTokenDep) -> str:
    await run_in_threadpool(coordinator.federation.check_token, run_id, token)
    assert token is not None  # check_token refuses a missing one
    return token


@router.post("/{run_id}/model", responses=_REPORT, openapi_extra=openapi_body(RunModelReport))
def report_model(
    run_id: RunId,
    request: Request,
    coordinator: CoordinatorDep,
    token: Annotated[str, Depends(_checked_token)],
    report: Annotated[RunModelReport, Depends(json_body(RunModelReport))],
) -> RunPublic:
    """The ServerApp: the final global model; stored as a candidate, the run completes.
    The run token is checked before the body (a model, up to the model limit) is read."""
    request.state.actor = f"run:{run_id}"
    return _public(coordinator.federation.report_model(run_id, token, report))


@router.post("/{run_id}/failure", responses=_REPORT)
def report_failure(
    run_id: RunId,
    failure: RunFailure,
    request: Request,
    coordinator: CoordinatorDep,
    token: RunTokenDep,
) -> RunPublic:
    """The ServerApp: the run failed (its reason)."""
    request.state.actor = f"run:{run_id}"
    return _public(coordinator.federation.report_failure(run_id, token, failure.detail))


retraining = APIRouter(prefix=f"{PREFIX}/retraining", tags=["runs"], responses=ERRORS)


@retraining.get("")
def retraining_state(
    coordinator: CoordinatorDep,
    _: ViewerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> RetrainingStatePublic:
    """The retraining policy: its settings, its last drift check, the latest run starts
    (each with its trigger: schedule, drift or operator, and its statistic)."""
    return coordinator.retraining.state(limit)
