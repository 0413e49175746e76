"""The coordinator runs fedge's ServerApp on a real SuperLink with two real SuperNodes (each
with its own key file, enrolled through the coordinator's API, so every run is sealed with
the coordinator's per-run key export) and records every round and the resulting model
version; a coordinator killed with SIGKILL mid-run loses nothing it had recorded and marks
the run and its open round interrupted. Runs that end early: one an operator cancels, which
the SuperLink then stops, and one that asks for more nodes than there are, which fails with
the reason instead of waiting for them forever.

Every test here shares the module's one deployment (a deployment takes tens of seconds to
start; each test's coordinator enrolls the two sites anew, with its own identity and
database)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedge.coordinator import DEV_ADMIN_KEY
from tests.coordinator.helpers import onnx_model
from tests.support.flower import Deployment, deployment, enroll, flower_env, flwr_json
from tests.support.ports import free_port, service, wait_for_port

pytestmark = pytest.mark.slow
FEDGE = str(Path(sys.executable).with_name("fedge"))
ADMIN = {"X-API-Key": DEV_ADMIN_KEY}


@pytest.fixture(scope="module")
def flower(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(tmp_path_factory.mktemp("flower"), nodes=2) as running:
        yield running


@contextmanager
def coordinator(
    root: Path, database_url: str, flower: Deployment, port: int, *, enroll_sites: bool = True
) -> Iterator[tuple[httpx.Client, Any]]:
    env = flower_env(
        FEDGE_COORDINATOR_DATABASE_URL=database_url,
        FEDGE_COORDINATOR_MODEL_STORE=str(root / "models"),
        FEDGE_COORDINATOR_IDENTITY_FILE=str(root / "coordinator.key"),
        FEDGE_COORDINATOR_SUPERLINK=flower.address,
        FEDGE_COORDINATOR_SUPERLINK_INSECURE="true",  # the test SuperLink is plaintext, on loopback
        FEDGE_COORDINATOR_FLWR_HOME=str(root / "flwr-home"),
    )
    cmd = [FEDGE, "coordinator", "serve", "--port", str(port)]
    with service(cmd, root / f"coordinator-{time.monotonic_ns()}.log", env) as proc:
        wait_for_port(port, timeout=120)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=ADMIN, timeout=30) as c:
            if enroll_sites:  # the sites enroll; they learn the coordinator's keys doing so
                for site in flower.sites:
                    enroll(c, site)
                authority = c.get("/api/v1/enrollment/authority").json()
                flower.coordinator_keys.write_bytes(
                    base64.b64decode(authority["public_keys_base64"])
                )
            yield c, proc


def _wait(client: httpx.Client, run: str, until: Any, timeout: float = 480) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/api/v1/runs/{run}").json()
        rounds = client.get("/api/v1/rounds", params={"run_id": run}).json()
        if until(body, rounds):
            return body
        time.sleep(0.25)
    raise AssertionError(f"run {run} never got there: {body} {rounds}")


def test_two_supernodes_complete_two_recorded_rounds(flower: Deployment, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    with coordinator(tmp_path, url, flower, free_port()) as (client, _):
        started = client.post(
            "/api/v1/runs", json={"num_rounds": 2, "config": {"local-epochs": 0.2}}
        )
        assert started.status_code == 202, started.text
        run = started.json()["id"]
        body = _wait(client, run, lambda b, _: b["status"] not in ("starting", "running"))
        assert body["status"] == "completed", body
        assert body["flwr_run_id"]
        rounds = client.get("/api/v1/rounds", params={"run_id": run}).json()
        assert [(r["number"], r["status"]) for r in rounds] == [(1, "completed"), (2, "completed")]
        for r in rounds:
            assert r["participants"] == 2 and r["strategy"] == "fedavg" and r["codec"] == "fp32"
            assert r["bytes_up"] > 10_000 and r["bytes_down"] > 10_000  # ~10 arrays each way
            assert r["finished_at"] >= r["started_at"] > 0
            assert {"train_loss", "eval_rmse"} <= set(r["metrics"])
            assert (r["metrics"]["sampled"], r["metrics"]["accepted"]) == (2, 2)
        # The run's key export (the coordinator's identity under a per-run KEK) is gone.
        assert not (tmp_path / "flwr-home" / "run-keys" / run).exists()
        model = client.get(f"/api/v1/models/{body['model_version_id']}").json()
        assert model["status"] == "candidate" and model["created_by"] == f"run:{run}"
        # The model kept is the round with the best validation loss (not always the last).
        best = int(model["metrics"]["best_round"])
        assert best in (1, 2)
        assert model["metrics"]["eval_rmse"] == rounds[best - 1]["metrics"]["eval_rmse"]
    blob = (tmp_path / "models" / f"{model['sha256']}.onnx").read_bytes()
    assert hashlib.sha256(blob).hexdigest() == model["sha256"]
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(blob)
    shape = [1, *session.get_inputs()[0].shape[1:]]
    (forecast,) = session.run(None, {session.get_inputs()[0].name: np.zeros(shape, np.float32)})
    assert np.isfinite(forecast).all()


@pytest.fixture(scope="module")
def served(
    flower: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, Path]]:
    """One coordinator (and its root) for the runs that end early: a start and two
    enrollments fewer."""
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


# Last in the module: the ServerApp it leaves and its re-run go down with the deployment.
def test_sigkill_mid_run_loses_no_completed_round(
    flower: Deployment, tmp_path: Path, postgres: Any
) -> None:
    url = postgres.new_database()
    port = free_port()
    with coordinator(tmp_path, url, flower, port) as (client, proc):
        blob = base64.b64encode(onnx_model("before-the-run")).decode()
        upload = client.post("/api/v1/models", json={"onnx_base64": blob})
        assert upload.status_code == 201
        run = client.post(
            "/api/v1/runs", json={"num_rounds": 4, "config": {"local-epochs": 0.2}}
        ).json()["id"]

        def one_done_one_open(_: dict[str, Any], rounds: list[dict[str, Any]]) -> bool:
            states = [r["status"] for r in rounds]
            return "completed" in states and "running" in states

        _wait(client, run, one_done_one_open)
        before = client.get("/api/v1/rounds", params={"run_id": run}).json()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    completed = [r for r in before if r["status"] == "completed"]
    open_round = next(r["number"] for r in before if r["status"] == "running")
    with coordinator(tmp_path, url, flower, port, enroll_sites=False) as (client, _):
        body = client.get(f"/api/v1/runs/{run}").json()
        assert body["status"] == "interrupted" and "restarted" in body["detail"]
        after = client.get("/api/v1/rounds", params={"run_id": run}).json()
        assert [r for r in after if r["status"] == "completed"][: len(completed)] == completed
        assert {r["number"]: r["status"] for r in after}[open_round] == "interrupted"
        assert client.get(f"/api/v1/models/{upload.json()['id']}").status_code == 200
        # The ServerApp, still running on the SuperLink, is refused and ends: nothing more
        # is recorded for this run.
        time.sleep(5)
        later = client.get("/api/v1/rounds", params={"run_id": run}).json()
        assert [r["status"] for r in later] == [r["status"] for r in after]
        assert "running" not in [r["status"] for r in later]
        rerun = client.post(f"/api/v1/runs/{run}/rerun")
        assert rerun.status_code == 202 and rerun.json()["rerun_of"] == run
