"""Runs that end early on a real SuperLink with two real (enrolled) SuperNodes (the
package's shared deployment, one coordinator for both tests): one an operator cancels,
which the SuperLink then stops, and one that asks for more nodes than there are, which
fails with the reason instead of waiting for them forever."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.coordinator.test_federation import coordinator
from tests.support.flower import Deployment, flwr_json
from tests.support.ports import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(
    flower: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, Path]]:
    """One coordinator (and its root) for the module: a start and two enrollments each."""
    root = tmp_path_factory.mktemp("coordinator")
    with coordinator(root, f"sqlite:///{root / 'c.db'}", flower, free_port()) as (client, _):
        yield client, root


def _until(client: httpx.Client, run: str, done: Any, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/runs/{run}").json()
        if done(body):
            return body
        time.sleep(0.25)
    raise AssertionError(f"run {run} never got there: {body}")


def test_a_cancelled_run_is_stopped_on_the_superlink(
    flower: Deployment, served: tuple[httpx.Client, Path]
) -> None:
    client, root = served
    # Three nodes wanted, two there: the ServerApp waits (up to its round timeout).
    spec = {"num_rounds": 1, "config": {"min-nodes": 3, "round-timeout": 600}}
    started = client.post("/api/v1/runs", json=spec)
    assert started.status_code == 202, started.text
    run = started.json()["id"]
    body = _until(client, run, lambda b: b["flwr_run_id"] is not None)
    assert body["status"] == "running", body
    cancelled = client.delete(f"/api/v1/runs/{run}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert _on_link(flower, body["flwr_run_id"]) == "finished:stopped"
    assert client.get(f"/api/v1/runs/{run}").json()["status"] == "cancelled"
    assert client.delete(f"/api/v1/runs/{run}").status_code == 409
    assert not (root / "flwr-home" / "run-keys" / run).exists()
    # Cancelled at once, most likely before `flwr run` answered: stopped all the same.
    early = client.post("/api/v1/runs", json=spec).json()["id"]
    assert client.delete(f"/api/v1/runs/{early}").json()["status"] == "cancelled"
    body = _until(client, early, lambda b: b["flwr_run_id"] is not None)
    assert body["status"] == "cancelled"
    assert _on_link(flower, body["flwr_run_id"]) == "finished:stopped"


def _on_link(flower: Deployment, flwr_run_id: str, timeout: float = 120) -> str:
    """The run's status on the SuperLink once it has finished (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        (run,) = flwr_json(flower.env, "ls", "--run-id", flwr_run_id)["runs"]
        status = str(run["status"])
        if status.startswith("finished") or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def test_a_run_short_of_its_min_nodes_fails_with_the_reason(
    served: tuple[httpx.Client, Path],
) -> None:
    client, _ = served
    spec = {"num_rounds": 1, "config": {"min-nodes": 3, "round-timeout": 10}}
    started = client.post("/api/v1/runs", json=spec)
    assert started.status_code == 202, started.text
    run = started.json()["id"]
    body = _until(client, run, lambda b: b["status"] not in ("starting", "running"))
    assert body["status"] == "failed", body
    # The two nodes may not all have proved their sites yet when the round gave up.
    reason = r"round 1: [012] of the 3 nodes it needs \(min-nodes\) .* round-timeout 10 s"
    assert re.search(reason, body["detail"]), body["detail"]
    assert client.get("/api/v1/rounds", params={"run_id": run}).json() == []
