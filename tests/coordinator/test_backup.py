"""Backup and restore on PostgreSQL, with the commands of docs/deploy.md ("Back up and
restore") run as written: a registry with enrolled sites, model versions, a rollout, runs
and its audit log is dumped, restored into a second cluster of its own (a second
``initdb``), and a coordinator on the restored database and model store answers the
same: sites, model versions, runs, audit, and the production model sealed to a site."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fedge.coordinator import CoordinatorSettings, Role
from fedge.coordinator._schema import RunCreate
from fedge.coordinator.api import create_app
from fedge.core import RUN_TOKEN_HEADER, sign_request
from fedge.security import KeyDirectory, OneShotOpener
from tests.coordinator.conftest import Postgres, _pg_bin
from tests.coordinator.helpers import ADMIN, Fleet

DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
READS = ("/api/v1/sites", "/api/v1/models", "/api/v1/runs", "/api/v1/audit?limit=1000")


def backup_commands() -> str:
    """The shell block of the doc's "Back up and restore" section."""
    text = DOC.read_text()
    section = text[text.index("## Back up and restore") :]
    found = re.search(r"```sh\n(.*?)```", section, re.S)
    assert found is not None, "no ```sh block under 'Back up and restore'"
    return found.group(1)


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def test_a_restored_database_serves_the_same_registry(
    postgres: Any, tmp_path: Path, identity_file: Path
) -> None:
    bindir = _pg_bin()
    assert bindir is not None  # the postgres fixture skipped otherwise
    url = postgres.new_database()
    key = tmp_path / "coordinator.key"
    shutil.copy(identity_file, key)
    settings = CoordinatorSettings(
        database_url=url, model_store=tmp_path / "models", identity_file=key,
        state_dir=tmp_path / "state",
    )  # fmt: skip
    with TestClient(create_app(settings)) as client:
        fleet = Fleet.with_roles(client, [Role.OPERATOR, Role.ADMIN])
        site = fleet.enroll()
        fleet.enroll(archetype="rural", region="south")
        first = fleet.upload("first")
        promoted = client.post(f"/api/v1/models/{first}/promote", headers=fleet.as_(Role.ADMIN))
        assert promoted.status_code == 200, promoted.text
        fleet.upload("second", parent=first)
        federation = client.app.state.coordinator.federation  # type: ignore[attr-defined]
        run, token, _ = federation.create("operator:test", RunCreate(num_rounds=2))
        failed = client.post(
            f"/api/v1/runs/{run.id}/failure", json={"detail": "backup test"},
            headers={RUN_TOKEN_HEADER: token},
        )  # fmt: skip
        assert failed.status_code == 200, failed.text
        before = {path: client.get(path, headers=ADMIN).json() for path in READS}
    assert len(before["/api/v1/sites"]) == 2 and len(before["/api/v1/models"]) == 2

    # a second cluster of its own; as root it runs as postgres, so outside pytest's tmp
    root = Path(tempfile.mkdtemp(prefix="fedge-pg-restore-", dir="/tmp"))
    target = Postgres(bindir, root)
    target.start()
    try:
        backup = tmp_path / "backup"
        backup.mkdir()
        env = {
            **os.environ,
            "PATH": f"{bindir}:{os.environ['PATH']}",
            "FEDGE_DB": _libpq(url),
            "FEDGE_MODEL_STORE": str(tmp_path / "models"),
            "BACKUP": str(backup),
            "RESTORE_SERVER": f"postgresql://fedge@127.0.0.1:{target.port}/postgres",
            "RESTORE_MODEL_STORE": str(tmp_path / "restored-models"),
        }
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", backup_commands()],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        restored = settings.model_copy(
            update={
                "database_url": url.replace(f":{postgres.port}/", f":{target.port}/"),
                "model_store": Path(env["RESTORE_MODEL_STORE"]),
                "state_dir": tmp_path / "restored",
            }
        )
        with TestClient(create_app(restored)) as client:
            after = {path: client.get(path, headers=ADMIN).json() for path in READS}
            path = "/api/v1/site/model"
            model = client.get(path, headers=sign_request(site, "GET", path))
        assert after == before
        assert model.status_code == 200, model.text
        assert model.headers["X-Fedge-Model-Version"] == f"v{first}"
        coordinator_keys = fleet.authority()
        directory = KeyDirectory()
        directory.register(coordinator_keys)
        assert OneShotOpener(site, directory).open(model.content).sender == coordinator_keys.site_id
    finally:
        target.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_restore_refuses_a_database_that_exists(postgres: Any, tmp_path: Path) -> None:
    """``pg_restore --create --exit-on-error`` onto a server that has the database already
    fails instead of merging two registries."""
    bindir = _pg_bin()
    assert bindir is not None
    url = postgres.new_database()  # empty: the dump restores no tables, the refusal is first
    (tmp_path / "models").mkdir()
    env = {
        **os.environ,
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "FEDGE_DB": _libpq(url),
        "FEDGE_MODEL_STORE": str(tmp_path / "models"),
        "BACKUP": str(tmp_path),
        "RESTORE_SERVER": f"postgresql://fedge@127.0.0.1:{postgres.port}/postgres",
        "RESTORE_MODEL_STORE": str(tmp_path / "restored"),
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", backup_commands()],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "already exists" in done.stderr


@pytest.mark.parametrize("missing", ["FEDGE_DB", "BACKUP"])
def test_the_commands_refuse_a_missing_variable(missing: str) -> None:
    env = {k: "x" for k in ("FEDGE_DB", "FEDGE_MODEL_STORE", "BACKUP", "RESTORE_SERVER",
                            "RESTORE_MODEL_STORE")}  # fmt: skip
    del env[missing]
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", backup_commands()],
        env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, timeout=30,
        check=False,
    )  # fmt: skip
    assert done.returncode != 0 and missing in done.stderr
