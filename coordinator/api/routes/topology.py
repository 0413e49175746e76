"""The cluster topology live decisions use (viewers read it, admins replace it)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from fedge.coordinator._topology import Topology, TopologyAnswer
from fedge.coordinator.api.deps import AdminDep, CoordinatorDep, ViewerDep
from fedge.coordinator.api.routes._common import ERRORS, PREFIX

router = APIRouter(prefix=f"{PREFIX}/topology", tags=["topology"], responses=ERRORS)


@router.get("")
def get_topology(coordinator: CoordinatorDep, _: ViewerDep) -> TopologyAnswer:
    return coordinator.topology()


@router.put("", responses={422: {"description": "A bad topology; the one in force stays."}})
async def put_topology(coordinator: CoordinatorDep, by: AdminDep, body: Topology) -> TopologyAnswer:
    """Replace the topology whole: names unique, every site enrolled and in one cluster
    at most, no cluster empty. A refused one leaves the topology in force unchanged."""
    return await run_in_threadpool(coordinator.set_topology, by, body)
