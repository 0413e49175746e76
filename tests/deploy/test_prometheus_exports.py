"""The coordinator's operator metrics and log events after real operations on its API
(the app from its factory, SQLite): sites enrolled and revoked, two promotions and a
rollback, runs that complete, fail and are cancelled with their rounds reported by the
run token, a decision tick, forecast batches accepted and refused. One coordinator for
the module; each test reads its scrape or its log lines."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from fedge.coordinator import CoordinatorSettings, Role
from fedge.coordinator._audit import audit_entry
from fedge.coordinator._schema import Run, RunStatus
from fedge.coordinator._service import Coordinator
from fedge.coordinator.api import create_app
from fedge.core import RUN_TOKEN_HEADER, LogFormat, configure_logging, sign_request
from fedge.security import SiteIdentity, save_identity
from tests.coordinator.helpers import Fleet, onnx_model
from tests.coordinator.policies import write_policies

ROUNDS = [  # (participants, accepted, rejected) of each completed round
    (3, 3, 0),
    (4, 3, 1),
]


@dataclass
class Scenario:
    scrape: str
    events: list[dict[str, Any]]
    site_ids: list[str]
    run_ids: dict[str, str]  # completed, failed, cancelled

    def value(self, series: str) -> float:
        """The sample of exactly ``series`` (name and labels as exposed)."""
        for line in self.scrape.splitlines():
            name, _, value = line.rpartition(" ")
            if name == series:
                return float(value)
        raise AssertionError(f"{series} not in the scrape")

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]


def _run(coordinator: Coordinator, rounds: int) -> tuple[str, str]:
    """A live run as ``Federation.start`` leaves it once ``flwr run`` took it (no SuperLink
    here: the ServerApp's reports below are what a real one sends)."""
    run_id, token = secrets.token_hex(16), secrets.token_urlsafe(16)
    with Session(coordinator.engine) as session:
        session.add(
            Run(
                id=run_id,
                num_rounds=rounds,
                status=RunStatus.RUNNING,
                flwr_run_id="1",
                token_hash=hashlib.sha256(token.encode()).hexdigest(),
                created_at=time.time(),
                created_by="operator:test",
            )
        )
        session.commit()
    return run_id, token


def _report_rounds(client: TestClient, run_id: str, token: str, rounds: list[tuple[int, int, int]]) -> None:  # fmt: skip
    for number, (participants, accepted, rejected) in enumerate(rounds, 1):
        now = time.time()
        body = {"status": "completed", "strategy": "fedavg", "participants": participants,
                "bytes_up": 1000 * number, "bytes_down": 2000 * number,
                "metrics": {"accepted": accepted, "rejected": rejected},
                "started_at": now - 2.0, "finished_at": now}  # fmt: skip
        answer = client.put(f"/api/v1/runs/{run_id}/rounds/{number}", json=body,
                            headers={RUN_TOKEN_HEADER: token})  # fmt: skip
        assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    root = tmp_path_factory.mktemp("coordinator-metrics")
    save_identity(root / "coordinator.key", SiteIdentity.generate(), b"fedge-dev-kek", log2_n=10)
    write_policies(root / "policies")
    settings = CoordinatorSettings(
        database_url=f"sqlite:///{root / 'c.db'}", model_store=root / "models",
        identity_file=root / "coordinator.key", policy_dir=root / "policies",
    )  # fmt: skip
    stream = io.StringIO()
    root_logger = logging.getLogger()
    saved = (list(root_logger.handlers), root_logger.level)
    configure_logging(LogFormat.JSON, stream=stream)
    try:
        with TestClient(create_app(settings)) as client:
            coordinator: Coordinator = client.app.state.coordinator  # type: ignore[attr-defined]
            fleet = Fleet.with_roles(client, list(Role))
            sites = [fleet.enroll() for _ in range(3)]
            revoked = sites[2].site_id.hex()
            answer = client.post(f"/api/v1/sites/{revoked}/revoke", headers=fleet.as_(Role.ADMIN))
            assert answer.status_code == 200, answer.text
            first, second = fleet.upload("v1"), fleet.upload("v2")
            for model in (first, second):
                answer = client.post(
                    f"/api/v1/models/{model}/promote", headers=fleet.as_(Role.ADMIN)
                )
                assert answer.status_code == 200, answer.text
            answer = client.post("/api/v1/models/rollback", headers=fleet.as_(Role.ADMIN))
            assert answer.status_code == 200, answer.text

            completed, token = _run(coordinator, len(ROUNDS))
            _report_rounds(client, completed, token, ROUNDS)
            answer = client.post(
                f"/api/v1/runs/{completed}/model", headers={RUN_TOKEN_HEADER: token},
                json={"onnx_base64": base64.b64encode(onnx_model("from-run")).decode(),
                      "metrics": {"eval_rmse": 0.1}},
            )  # fmt: skip
            assert answer.status_code == 200, answer.text
            failed, token = _run(coordinator, 2)
            answer = client.post(f"/api/v1/runs/{failed}/failure",
                                 json={"detail": "SuperNodes gone"},
                                 headers={RUN_TOKEN_HEADER: token})  # fmt: skip
            assert answer.status_code == 200, answer.text
            cancelled, _ = _run(coordinator, 2)
            answer = client.delete(f"/api/v1/runs/{cancelled}", headers=fleet.as_(Role.ADMIN))
            assert answer.status_code == 200, answer.text

            assert coordinator.live is not None
            coordinator.live.tick("strategic", time.time())

            path = "/api/v1/site/forecasts"
            batch = {"model_version": "v1",
                     "forecasts": [{"cell": "c1", "step": 11, "made_step": 10,
                                    "values": [1.0, 2.0, 3.0]}],
                     "actuals": [{"cell": "c1", "step": 10, "values": [1.0, 2.0, 3.0]}]}  # fmt: skip
            body = json.dumps(batch).encode()
            for _ in range(2):  # the second is a batch sent again: stored once
                headers = sign_request(sites[0], "POST", path, body)
                assert client.post(path, content=body, headers=headers).status_code == 201
            assert client.post(path, content=body).status_code == 401  # unsigned
            bad = json.dumps({**batch, "forecasts": []}).encode()
            headers = sign_request(sites[0], "POST", path, bad)
            assert client.post(path, content=bad, headers=headers).status_code == 422

            with Session(coordinator.engine) as session:  # a change that does not happen
                session.add(audit_entry("operator:test", "model.promote", "model:999999", "ok", ""))
                session.flush()
                session.rollback()
                session.add(audit_entry("operator:test", "test.after", "", "ok", ""))
                session.commit()  # the same session: only this entry is logged

            scrape = client.get("/metrics").text
    finally:
        for handler in list(root_logger.handlers):
            root_logger.removeHandler(handler)
        for handler in saved[0]:
            root_logger.addHandler(handler)
        root_logger.setLevel(saved[1])
        shutil.rmtree(root, ignore_errors=True)
    events = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    yield Scenario(scrape, events, [s.site_id.hex() for s in sites],
                   {"completed": completed, "failed": failed, "cancelled": cancelled})  # fmt: skip


def test_runs_rounds_and_models_are_counted_from_the_registry(scenario: Scenario) -> None:
    v = scenario.value
    assert v('fedge_coordinator_runs{state="completed"}') == 1
    assert v('fedge_coordinator_runs{state="failed"}') == 1
    assert v('fedge_coordinator_runs{state="cancelled"}') == 1
    assert v('fedge_coordinator_runs{state="running"}') == 0
    assert v("fedge_coordinator_rounds_completed_total") == len(ROUNDS)
    participants, accepted, rejected = ROUNDS[-1]
    assert v("fedge_coordinator_last_round_participants") == participants
    assert v("fedge_coordinator_last_round_accepted") == accepted
    assert v("fedge_coordinator_last_round_rejected") == rejected
    assert v('fedge_coordinator_last_round_bytes{direction="up"}') == 1000 * len(ROUNDS)
    assert v("fedge_coordinator_last_round_duration_seconds") >= 0
    assert v("fedge_coordinator_model_promotions_total") == 2
    assert v("fedge_coordinator_model_rollbacks_total") == 1
    rollouts = {
        state: v(f'fedge_coordinator_rollouts{{state="{state}"}}')
        for state in ("canary", "fleet", "completed", "rolled_back", "superseded")
    }
    assert sum(rollouts.values()) == 2, rollouts  # one per promotion
    assert rollouts["canary"] == rollouts["fleet"] == 0, rollouts  # the rollback ended it


def test_sites_by_state_partition_the_enrolled_sites(scenario: Scenario) -> None:
    states = {s: scenario.value(f'fedge_coordinator_sites{{state="{s}"}}')
              for s in ("ok", "late", "offline", "never_seen", "revoked")}  # fmt: skip
    assert states["revoked"] == 1
    assert sum(states.values()) == len(scenario.site_ids)
    assert states["ok"] >= 1  # the site that posted forecasts was heard just now
    assert scenario.value("fedge_coordinator_database_up") == 1


def test_ingest_and_decision_ticks_are_counted_where_they_happen(scenario: Scenario) -> None:
    v = scenario.value
    assert v('fedge_coordinator_ingest_batches_total{outcome="accepted"}') == 2
    assert v('fedge_coordinator_ingest_batches_total{outcome="unauthenticated"}') == 1
    assert v('fedge_coordinator_ingest_batches_total{outcome="invalid"}') == 1
    assert v('fedge_coordinator_ingest_rows_total{outcome="stored"}') == 2
    assert v('fedge_coordinator_ingest_rows_total{outcome="duplicate"}') == 2
    assert v('fedge_coordinator_decision_ticks_total{kind="strategic"}') == 1
    assert v('fedge_coordinator_decision_tick_seconds_count{kind="strategic"}') == 1
    assert v('fedge_coordinator_decision_tick_failures_total{kind="strategic"}') == 0
    modes = re.findall(r'^fedge_coordinator_decision_modes\{mode="\w+"\} (\S+)$',
                       scenario.scrape, re.M)  # fmt: skip
    assert sum(map(float, modes)) == 2  # the two active sites, one strategic action each


def test_no_series_carries_a_site_label(scenario: Scenario) -> None:
    for site in scenario.site_ids:
        assert site not in scenario.scrape
    assert "site=" not in scenario.scrape and "site_id=" not in scenario.scrape


def test_state_changes_are_logged_as_events(scenario: Scenario) -> None:
    for event in scenario.events:
        assert {"ts", "level", "logger", "message"} <= set(event)
    enrolled = {e["target"] for e in scenario.of("site.enroll")}
    assert enrolled == set(scenario.site_ids)
    [revoked] = scenario.of("site.revoke")
    assert revoked["target"] == scenario.site_ids[2] and revoked["actor"] == "operator:admin-key"
    assert len(scenario.of("model.promote")) == 2
    [rollback] = scenario.of("model.rollback")
    assert rollback["level"] == "warning" and "retired model:" in rollback["detail"]
    rounds = scenario.of("round.completed")
    assert [(r["participants"], r["accepted"], r["rejected"]) for r in rounds] == ROUNDS
    assert {r["run"] for r in rounds} == {scenario.run_ids["completed"]}
    [done] = scenario.of("run.completed")
    assert done["run"] == scenario.run_ids["completed"] and done["model"] is not None
    [failed] = scenario.of("run.failed")
    assert failed["level"] == "warning" and failed["detail"] == "SuperNodes gone"
    assert failed["target"] == f"run:{scenario.run_ids['failed']}"
    [cancelled] = scenario.of("run.cancel")
    assert cancelled["target"] == f"run:{scenario.run_ids['cancelled']}"
    [tick] = scenario.of("decision.tick")
    assert tick["kind"] == "strategic" and tick["actions"] == 2 and tick["seconds"] >= 0


def test_a_rolled_back_change_is_not_logged(scenario: Scenario) -> None:
    """The entry flushed then rolled back in the fixture never reaches the log, not even
    when its session commits another change afterwards."""
    assert all(e.get("target") != "model:999999" for e in scenario.events)
    assert len(scenario.of("test.after")) == 1
    assert [e["outcome"] for e in scenario.of("model.promote")] == ["ok", "ok"]
