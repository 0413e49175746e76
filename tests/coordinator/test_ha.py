"""High availability: two ``fedge coordinator serve`` replicas on one PostgreSQL. One
leads (the decision ticks, the sweep of orphaned runs); the leader is killed with SIGKILL
in the middle of its loop, with a run it was driving; the other takes over within 10 s,
decides every slot exactly once (none lost, none twice), interrupts the orphaned run, and
answers the API throughout."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from fedge.coordinator import CoordinatorSettings, Role
from fedge.coordinator.api import create_app
from tests.coordinator.helpers import ADMIN, Fleet
from tests.coordinator.policies import write_policies
from tests.support.ports import free_port
from tests.support.replicas import (
    actions_per_kind,
    decision_slots,
    lost_slots,
    newest_claim,
    repeated_slots,
    replica_env,
    replicas,
    wait_until,
)


def test_a_killed_leader_is_replaced_without_losing_or_repeating_a_slot(
    postgres: Any, tmp_path: Path, identity_file: Path
) -> None:
    url = postgres.new_database()
    key = tmp_path / "coordinator.key"
    shutil.copy(identity_file, key)
    with TestClient(
        create_app(CoordinatorSettings(database_url=url, model_store=tmp_path / "models",
                                       identity_file=key, state_dir=tmp_path / "setup"))
    ) as client:  # fmt: skip
        Fleet.with_roles(client, [Role.OPERATOR]).enroll()  # one site: an action per slot
    write_policies(tmp_path / "policies")
    # Accepts connections and never answers: a run's `flwr run` waits on it.
    superlink = socket.create_server(("127.0.0.1", free_port()))
    env = replica_env(
        tmp_path, url, key,
        policy_dir=str(tmp_path / "policies"),
        strategic_interval_seconds="1",
        tactical_interval_seconds="0.5",
        superlink=f"127.0.0.1:{superlink.getsockname()[1]}",
        superlink_insecure="true",
    )  # fmt: skip
    try:
        with replicas(tmp_path, 2, env) as group:
            leader = wait_until(group.leader, 30, "one leader")
            (follower,) = group.others(leader)
            assert follower.leader() is False
            # the leader is deciding: a few slots of each kind
            wait_until(
                lambda: all(len(s) >= 3 for s in decision_slots(url).values())
                and len(decision_slots(url)) == 2,
                30, "the leader's ticks",
            )  # fmt: skip
            started = httpx.post(
                f"{leader.base}/api/v1/runs", json={"num_rounds": 1}, headers=ADMIN, timeout=30
            )
            assert started.status_code == 202, started.text
            run = started.json()["id"]
            assert started.json()["status"] == "starting"

            leader.kill()
            killed_at = time.time()
            assert wait_until(follower.leader, 10, "the follower's election") is True
            wait_until(lambda: newest_claim(url) > killed_at, 10, "a tick by the new leader")
            took = time.time() - killed_at
            assert took < 10, took
            sites = httpx.get(f"{follower.base}/api/v1/sites", headers=ADMIN, timeout=10)
            assert sites.status_code == 200 and len(sites.json()) == 1

            # the orphaned run ends (interrupted: it is re-run, not resumed)
            def ended() -> dict[str, Any] | None:
                body: dict[str, Any] = httpx.get(
                    f"{follower.base}/api/v1/runs/{run}", headers=ADMIN, timeout=10
                ).json()
                return body if body["status"] != "starting" else None

            body = wait_until(ended, 10, "the orphaned run's end")
            assert body["status"] == "interrupted" and "failed over" in body["detail"], body

            # the new leader goes on past the slots it caught up
            at_kill = {k: s[-1] for k, s in decision_slots(url).items()}
            wait_until(
                lambda: all(s[-1] >= at_kill[k] + 2 for k, s in decision_slots(url).items()),
                15, "the new leader's own slots",
            )  # fmt: skip
            assert follower.leader() is True
            log = follower.log.read_text()
            assert '"event": "coordinator.leader"' in log
        slots = decision_slots(url)
        actions = actions_per_kind(url)
    finally:
        superlink.close()
    assert set(slots) == {"strategic", "tactical"}
    for kind, taken in slots.items():
        assert lost_slots(taken) == 0, (kind, taken)
        assert repeated_slots(taken) == 0, (kind, taken)
        assert actions[kind] == len(taken), (kind, actions, taken)  # one site: one each


def test_leadership_on_sqlite_is_the_process_itself(tmp_path: Path, identity_file: Path) -> None:
    key = tmp_path / "coordinator.key"
    shutil.copy(identity_file, key)
    settings = CoordinatorSettings(
        database_url=f"sqlite:///{tmp_path / 'c.db'}", model_store=tmp_path / "m",
        identity_file=key,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        coordinator = client.app.state.coordinator  # type: ignore[attr-defined]
        assert coordinator.leadership.elected and not coordinator.leadership.distributed
        assert "fedge_coordinator_leader 1.0" in client.get("/metrics").text


@pytest.mark.parametrize("run_id", ["", "zz" * 16])
def test_a_run_lock_key_needs_a_hex_run_id(run_id: str) -> None:
    from fedge.coordinator import InvalidInputError
    from fedge.coordinator._leader import run_lock_key

    assert run_lock_key("ff" * 16) == 0x7FFF_FFFF and run_lock_key("00" * 16) == -0x8000_0000
    with pytest.raises(InvalidInputError, match="not a run id"):
        run_lock_key(run_id)
