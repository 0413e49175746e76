"""Coordinator failover: ``python -m bench.failover`` -> the ``failover`` key of
``bench/results/deploy.json`` (the bundle and image figures there are left as they are).

Per trial: a fresh database on a throw-away PostgreSQL, one enrolled site, two real
``fedge coordinator serve`` replicas with short decision intervals (strategic 1 s,
tactical 0.5 s); the leader is killed with SIGKILL mid-loop. Measured from the kill:

* ``election_s``: until the other replica's ``fedge_coordinator_leader`` gauge reads 1;
* ``failover_s``: until it has stored a decision tick (a new leader serving ticks);
* ``lost_ticks``: slots missing between the first and the last recorded, per kind;
* ``duplicated_ticks``: slots decided twice (more than one action per site and slot).

Both counts must be 0; the failover target is 10 s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import RESULTS_DIR, commit, machine

TARGET_FAILOVER_S = 10.0


def _trial(root: Path, url: str, identity: Path) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from fedge.coordinator import CoordinatorSettings, Role
    from fedge.coordinator.api import create_app
    from tests.coordinator.helpers import Fleet
    from tests.coordinator.policies import write_policies
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

    settings = CoordinatorSettings(
        database_url=url, model_store=root / "models", identity_file=identity,
        state_dir=root / "setup",
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        Fleet.with_roles(client, [Role.OPERATOR]).enroll()
    write_policies(root / "policies")
    env = replica_env(
        root, url, identity, policy_dir=str(root / "policies"),
        strategic_interval_seconds="1", tactical_interval_seconds="0.5",
    )  # fmt: skip
    with replicas(root, 2, env) as group:
        leader = wait_until(group.leader, 60, "one leader")
        (follower,) = group.others(leader)
        wait_until(lambda: all(len(s) >= 4 for s in decision_slots(url).values()), 60, "ticks")
        leader.kill()
        killed = time.time()
        wait_until(follower.leader, 30, "the election")
        elected = time.time()
        wait_until(lambda: newest_claim(url) > killed, 30, "the new leader's tick")
        serving = time.time()
        at_kill = {k: s[-1] for k, s in decision_slots(url).items()}
        wait_until(
            lambda: all(s[-1] >= at_kill[k] + 2 for k, s in decision_slots(url).items()),
            30, "the new leader's own slots",
        )  # fmt: skip
    slots, actions = decision_slots(url), actions_per_kind(url)
    return {
        "election_s": round(elected - killed, 3),
        "failover_s": round(serving - killed, 3),
        "slots": {k: len(v) for k, v in slots.items()},
        "lost_ticks": sum(lost_slots(v) for v in slots.values()),
        "duplicated_ticks": sum(repeated_slots(v) for v in slots.values())
        + sum(max(0, actions.get(k, 0) - len(set(v))) for k, v in slots.items()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()

    from fedge.security import SiteIdentity, save_identity
    from tests.coordinator.conftest import Postgres, _pg_bin

    bindir = _pg_bin()
    if bindir is None:
        raise SystemExit("failover: no PostgreSQL binaries (initdb, pg_ctl)")
    work = Path(tempfile.mkdtemp(prefix="fedge-failover-", dir="/tmp"))
    server = Postgres(bindir, work)
    server.start()
    trials = []
    try:
        identity = work / "coordinator.key"
        save_identity(identity, SiteIdentity.generate(), b"fedge-dev-kek", log2_n=10)
        for i in range(args.trials):
            root = work / f"trial-{i}"
            root.mkdir()
            trials.append(_trial(root, server.new_database(), identity))
            print(json.dumps(trials[-1]), flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    failover = [t["failover_s"] for t in trials]
    figures = {
        "machine": machine(),
        "commit": commit(),
        "replicas": 2,
        "intervals_s": {"strategic": 1.0, "tactical": 0.5},
        "target_failover_s": TARGET_FAILOVER_S,
        "trials": trials,
        "failover_s": {"median": statistics.median(failover), "max": max(failover)},
        "election_s": {"median": statistics.median(t["election_s"] for t in trials)},
        "lost_ticks": sum(t["lost_ticks"] for t in trials),
        "duplicated_ticks": sum(t["duplicated_ticks"] for t in trials),
    }
    path = RESULTS_DIR / "deploy.json"
    payload = json.loads(path.read_text()) if path.exists() else {"benchmark": "deploy"}
    payload["failover"] = figures
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps({k: figures[k] for k in ("failover_s", "lost_ticks", "duplicated_ticks")}))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
