"""The shipped SuperLink unit's command line serves TLS, and the coordinator starts (and
stops) a run on it over TLS with the CA from its settings; with another CA it is refused.

The SuperLink runs exactly the unit's ``ExecStart=`` and ``Environment=``, with the
``/etc/fedge/tls`` files replaced by a CA and certificate made here, a free loopback port
and a temp ``FLWR_HOME``."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fedge.coordinator import DEV_ADMIN_KEY, CoordinatorSettings
from fedge.coordinator.api import create_app
from fedge.security import SiteIdentity, save_identity
from tests.deploy.units import UNITS, environment, exec_start
from tests.edge_agent.test_tls import make_ca
from tests.support.flower import BIN
from tests.support.ports import free_port, service, wait_for_port

pytestmark = [
    pytest.mark.slow,  # each `flwr` call costs seconds of CLI start-up
    pytest.mark.skipif(
        not (BIN / "flower-superlink").exists(), reason="flower-superlink is not installed"
    ),
]
ADMIN = {"X-API-Key": DEV_ADMIN_KEY}
UNIT = UNITS / "fedge-superlink.service"


def _arg(argv: list[str], flag: str, value: str) -> list[str]:
    """``argv`` with ``flag``'s value replaced (the unit must set the flag)."""
    i = argv.index(flag)
    return [*argv[: i + 1], value, *argv[i + 2 :]]


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="module")
def superlink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """The unit's SuperLink on a free port; its address, CA and the test's root."""
    root = tmp_path_factory.mktemp("superlink")
    ca, cert, key = make_ca(root, "superlink")
    moves = {
        "/usr/local/bin/": f"{BIN}/",
        "/etc/fedge/tls/ca.pem": str(ca),
        "/etc/fedge/tls/superlink.pem": str(cert),
        "/etc/fedge/tls/superlink.key": str(key),
        "/var/lib/fedge/superlink": str(root / "state"),
    }
    port = free_port()
    argv = _arg(_arg(exec_start(UNIT, moves), "--port", str(port)), "--host", "127.0.0.1")
    assert "--insecure" not in argv
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.update(environment(UNIT, moves))
    assert env["FLWR_TELEMETRY_ENABLED"] == "0"
    (root / "state").mkdir(mode=0o700)
    log = root / "superlink.log"
    with service(argv, log, env):
        wait_for_port(port)
        deadline = time.monotonic() + 30
        while f"running on https://127.0.0.1:{port}" not in _text(log):
            assert time.monotonic() < deadline, _text(log)[-2000:]
            time.sleep(0.1)
        yield f"127.0.0.1:{port}", ca, root


def _settings(root: Path, superlink: str, **extra: Any) -> CoordinatorSettings:
    root.mkdir()
    key = root / "coordinator.key"
    save_identity(key, SiteIdentity.generate(), b"fedge-dev-kek", log2_n=10)
    return CoordinatorSettings(
        database_url=f"sqlite:///{root / 'coordinator.db'}",
        model_store=root / "models",
        identity_file=key,
        flwr_home=root / "flwr",
        superlink=superlink,
        public_url=f"http://127.0.0.1:{free_port()}",  # where the ServerApp reports: nobody
        **extra,
    )


def _until(client: TestClient, run: str, done: Any, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/runs/{run}", headers=ADMIN).json()
        if done(body):
            return body
        time.sleep(0.2)
    raise AssertionError(f"run {run} never got there: {body}")


# A run that waits for two nodes (there are none) until it is cancelled.
WAITING = {"num_rounds": 1, "config": {"min-nodes": 2, "round-timeout": 600}}


def test_the_coordinator_starts_and_stops_a_run_over_tls(
    superlink: tuple[str, Path, Path], tmp_path: Path
) -> None:
    address, ca, root = superlink
    settings = _settings(tmp_path / "c", address, superlink_root_certificates=ca)
    with TestClient(create_app(settings)) as client:
        started = client.post("/api/v1/runs", json=WAITING, headers=ADMIN)
        assert started.status_code == 202, started.text
        run = started.json()["id"]
        body = _until(
            client, run, lambda b: b["flwr_run_id"] is not None or b["status"] != "starting"
        )
        assert body["status"] == "running", body
        config = (tmp_path / "c" / "flwr" / "config.toml").read_text()
        assert f'root-certificates = "{ca.resolve()}"' in config and "insecure" not in config
        assert client.delete(f"/api/v1/runs/{run}", headers=ADMIN).json()["status"] == "cancelled"
    # `flwr stop` reached the SuperLink over TLS too: it answered the stop.
    log = root / "superlink.log"
    deadline = time.monotonic() + 60
    while '"POST /v1/control/stop-run HTTP/1.1" 200' not in _text(log):
        assert time.monotonic() < deadline, _text(log)[-2000:]
        time.sleep(0.2)


def test_a_superlink_certificate_from_another_ca_is_refused(
    superlink: tuple[str, Path, Path], tmp_path: Path
) -> None:
    address, _, root = superlink
    other, _, _ = make_ca(tmp_path, "other")
    before = _text(root / "superlink.log").count("ControlServicer.StartRun")
    settings = _settings(tmp_path / "c", address, superlink_root_certificates=other)
    with TestClient(create_app(settings)) as client:
        started = client.post("/api/v1/runs", json=WAITING, headers=ADMIN)
        assert started.status_code == 202, started.text
        body = _until(client, started.json()["id"], lambda b: b["status"] != "starting")
    assert body["status"] == "failed" and body["flwr_run_id"] is None, body
    assert "flwr run refused" in body["detail"], body
    assert _text(root / "superlink.log").count("ControlServicer.StartRun") == before
