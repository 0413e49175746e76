"""A round that too few nodes answer within ``round-timeout`` fails the run, and the run
ends ``failed`` at the coordinator with how many answered of how many it needed."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedge.federation import FederationError, FederationPlan, load_run_keys, run_rounds
from fedge.federation.client_app import app as deployed_app
from tests.coordinator.test_federation import coordinator
from tests.support.flower import (
    deployment,
    enroll,
    export_authority,
    make_site,
    supernode_command,
    write_store,
)
from tests.support.grid import LocalGrid
from tests.support.ports import free_port, service

DATA = '{"kind": "generator", "num_sites": 2, "days": 10, "seed": 0}'
PLAN = FederationPlan(
    data_spec=DATA, num_rounds=2, local_epochs=0.1, codec="int8", val_days=2, test_days=2,
    min_nodes=2, round_timeout=30.0,
)  # fmt: skip


def test_a_round_with_fewer_answers_than_min_nodes_fails_saying_how_many(
    tmp_path: Path,
) -> None:
    """Two nodes prove their site; one of them fails every training message. With
    min-nodes=2 the round fails, naming answered and needed."""
    pub = tmp_path / "coordinator.pub"
    store = tmp_path / "agent.db"
    write_store(store)
    sites = [make_site(tmp_path / f"s{i}", store=store) for i in range(2)]
    _, directory = export_authority(tmp_path, sites, pub)
    failing = ClientApp()  # proves its site as the deployed app does; its training breaks

    @failing.query()
    def hello(msg: Message, context: Context) -> Message:
        return deployed_app(msg, context)

    @failing.train()
    def train(msg: Message, context: Context) -> Message:
        raise RuntimeError("the node's training process died")

    grid = LocalGrid(deployed_app)
    grid.add_node(1, sites[0].config(pub))
    grid.add_node(2, sites[1].config(pub), app=failing)
    with pytest.raises(FederationError, match=r"round 1: 1 of the 2 nodes it needs \(min-nodes\)"):
        run_rounds(grid, PLAN, keys=load_run_keys(directory))
    # With one node needed the same round completes: the failure is the shortfall alone.
    outcome = run_rounds(grid, replace(PLAN, min_nodes=1), keys=load_run_keys(directory))
    assert [r.participants for r in outcome.rounds] == [1, 1]


def _wait(client: httpx.Client, run: str, until: Any, timeout: float = 420) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    rounds: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/runs/{run}").json()
        rounds = client.get("/api/v1/rounds", params={"run_id": run}).json()
        if until(body, rounds):
            return body
        time.sleep(0.25)
    raise AssertionError(f"run {run} never got there: {body} {rounds}")


@pytest.mark.slow
def test_a_supernode_killed_mid_run_fails_the_run_at_the_coordinator(tmp_path: Path) -> None:
    """A real coordinator, SuperLink and two SuperNodes, min-nodes=2: one SuperNode is
    killed (SIGKILL, its whole process group) once round 1 completed. A later round gets
    one answer of the two it needs within round-timeout; the run ends failed, saying so."""
    store = tmp_path / "store.db"
    write_store(store)
    kept, doomed = (make_site(tmp_path / f"site{i}", store=store) for i in range(2))
    with deployment(tmp_path / "flower", sites=[kept]) as flower:
        node = supernode_command(flower.address, doomed.node_config(flower.coordinator_keys))
        with (
            service(node, tmp_path / "doomed.log", flower.node_env) as proc,
            coordinator(tmp_path, f"sqlite:///{tmp_path / 'c.db'}", flower, free_port()) as (
                client,
                _,
            ),
        ):
            enroll(client, doomed)
            started = client.post(
                "/api/v1/runs",
                json={"num_rounds": 3, "codec": "int8",
                      "config": {"min-nodes": 2, "round-timeout": 20.0, "local-epochs": 0.2}},
            )  # fmt: skip
            assert started.status_code == 202, started.text
            run = started.json()["id"]
            _wait(client, run, lambda _, rounds: any(r["status"] == "completed" for r in rounds))
            os.killpg(proc.pid, signal.SIGKILL)
            body = _wait(client, run, lambda b, _: b["status"] not in ("starting", "running"))
            rounds = client.get("/api/v1/rounds", params={"run_id": run}).json()
    assert body["status"] == "failed", body
    assert "1 of the 2 nodes it needs (min-nodes)" in body["detail"], body["detail"]
    assert "round-timeout 20 s" in body["detail"]
    assert rounds[0]["status"] == "completed" and rounds[0]["metrics"]["accepted"] == 2
    assert "completed" not in [r["status"] for r in rounds[1:]]
    assert body["model_version_id"] is None
