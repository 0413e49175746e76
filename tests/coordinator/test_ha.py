"""High availability on one PostgreSQL. A leader whose lock connection ends steps down
and is elected again. Two ``fedge coordinator serve`` replicas: one leads (the decision
ticks, the sweep of orphaned runs); it is killed with SIGKILL in the middle of its loop,
with a run it was driving; the other takes over within 10 s, decides every slot exactly
once (none lost, none twice), interrupts the orphaned run, and answers the API
throughout."""

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
from fedge.coordinator._schema import RunCreate
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


def _steps_down_and_is_elected_again(
    client: TestClient, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The lock's connection ended under the leader (``pg_terminate_backend``): its
    schedulers stop at once, and the replica, alone, takes the lock again on a new
    connection, with the lock of the run it drives; once the run ended (as when reported
    to another replica) it lets go of that lock and removes the run's key export."""
    import psycopg
    from sqlmodel import Session

    from fedge.coordinator._leader import RUN_LOCK_CLASS, run_lock_key
    from fedge.coordinator._schema import Run, RunStatus

    coordinator = client.app.state.coordinator  # type: ignore[attr-defined]
    leadership = coordinator.leadership
    wait_until(lambda: leadership.elected, 30, "the election")
    assert coordinator.rollouts._loop.running
    run = coordinator.federation.create("operator:test", RunCreate(num_rounds=1))[0]
    keys = coordinator.federation._keys_dir(run.id)
    assert keys.is_dir()
    admin = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)

    def run_lock_free() -> bool:
        lock = (RUN_LOCK_CLASS, run_lock_key(run.id))
        row = admin.execute("SELECT pg_try_advisory_lock(%s, %s)", lock).fetchone()
        if row is not None and row[0]:
            admin.execute("SELECT pg_advisory_unlock(%s, %s)", lock)
            return True
        return False

    assert not run_lock_free()
    assert "fedge_coordinator_leaders 1.0" in client.get("/metrics").text  # from pg_locks
    pid = leadership._conn.info.backend_pid
    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    def events(name: str) -> int:
        return sum(getattr(r, "event", "") == name for r in caplog.records)

    wait_until(lambda: events("coordinator.step_down") == 1, 30, "the step-down")
    wait_until(lambda: events("coordinator.leader") == 2, 30, "the new election")
    assert leadership.elected and leadership._conn.info.backend_pid != pid
    assert coordinator.rollouts._loop.running  # started again
    assert "fedge_coordinator_leader 1.0" in client.get("/metrics").text
    assert not run_lock_free()  # taken again with the new connection
    with Session(coordinator.engine) as session:
        row = session.get(Run, run.id)
        assert row is not None
        row.status = RunStatus.FAILED
        session.add(row)
        session.commit()
    wait_until(lambda: not keys.exists(), 30, "the ended run's key export removed")
    assert run_lock_free()
    admin.close()


def test_a_killed_leader_is_replaced_without_losing_or_repeating_a_slot(
    postgres: Any, tmp_path: Path, identity_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = postgres.new_database()
    key = tmp_path / "coordinator.key"
    shutil.copy(identity_file, key)
    caplog.set_level("INFO", logger="fedge.coordinator.events")
    with TestClient(
        create_app(CoordinatorSettings(database_url=url, model_store=tmp_path / "models",
                                       identity_file=key, state_dir=tmp_path / "setup"))
    ) as client:  # fmt: skip
        Fleet.with_roles(client, [Role.OPERATOR]).enroll()  # one site: an action per slot
        _steps_down_and_is_elected_again(client, url, caplog)
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

            body = wait_until(ended, 30, "the orphaned run's end")
            assert body["status"] == "interrupted" and "failed over" in body["detail"], body

            # the new leader goes on past the slots it caught up
            at_kill = {k: s[-1] for k, s in decision_slots(url).items()}
            wait_until(
                lambda: all(s[-1] >= at_kill[k] + 2 for k, s in decision_slots(url).items()),
                30, "the new leader's own slots",
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
        assert "fedge_coordinator_leaders 1.0" in client.get("/metrics").text


def test_the_leaders_gauge_counts_the_lock_holders_in_the_database(postgres: Any) -> None:
    """Every replica reports the same count, read from ``pg_locks``: none before anyone
    takes the schedulers' lock, one while a session holds it, none once it is gone."""
    import psycopg
    from sqlmodel import Session, create_engine

    from fedge.coordinator._leader import LEADER_LOCK, leaders

    url = postgres.new_database()
    engine = create_engine(url)

    def held() -> int:
        with Session(engine) as session:
            return leaders(session)

    assert held() == 0
    holder = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s)", (LEADER_LOCK,))
    holder.execute("SELECT pg_advisory_lock(%s)", (LEADER_LOCK + 1,))  # another lock: not counted
    assert held() == 1
    holder.close()
    wait_until(lambda: held() == 0, 30, "the lock released with its session")
    engine.dispose()


@pytest.mark.parametrize("run_id", ["", "zz" * 16])
def test_a_run_lock_key_needs_a_hex_run_id(run_id: str) -> None:
    from fedge.coordinator import InvalidInputError
    from fedge.coordinator._leader import run_lock_key

    assert run_lock_key("ff" * 16) == 0x7FFF_FFFF and run_lock_key("00" * 16) == -0x8000_0000
    with pytest.raises(InvalidInputError, match="not a run id"):
        run_lock_key(run_id)


def test_a_new_leader_resumes_after_the_newest_recent_slot(
    tmp_path: Path, identity_file: Path
) -> None:
    """The first slot after an election: the one after the newest recorded while that is
    at most ``CATCH_UP_SLOTS`` old; else one interval on, as after a fresh start."""
    from sqlmodel import Session

    from fedge.coordinator._actions import DecisionTick

    key = tmp_path / "coordinator.key"
    shutil.copy(identity_file, key)
    write_policies(tmp_path / "policies")
    settings = CoordinatorSettings(
        database_url=f"sqlite:///{tmp_path / 'c.db'}", model_store=tmp_path / "m",
        identity_file=key, policy_dir=tmp_path / "policies",
        strategic_interval_seconds=60.0, tactical_interval_seconds=10.0,
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        live = client.app.state.coordinator.live  # type: ignore[attr-defined]
        live.stop()  # its own ticks would be the newest slots
        now = 1_000_000.0  # strategic slot 16666, tactical slot 100000
        assert live.first_slots(now) == {"strategic": 16668, "tactical": 100002}
        old = 100_000 - live.CATCH_UP_SLOTS - 1
        with Session(live.engine) as session:
            session.add(DecisionTick(kind="strategic", slot=16664, claimed_at=now - 120))
            session.add(DecisionTick(kind="tactical", slot=old, claimed_at=now - 130))
            session.commit()
        assert live.first_slots(now) == {"strategic": 16665, "tactical": 100002}
