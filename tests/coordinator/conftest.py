"""Coordinator fixtures: every API test runs on SQLite and on a real PostgreSQL that the
session starts itself (``initdb`` + ``pg_ctl`` on a free loopback port, in a temp dir)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fedge.coordinator import CoordinatorSettings, Role
from fedge.coordinator.api import create_app
from tests.coordinator.helpers import Fleet
from tests.support.ports import free_port

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Postgres:
    """A throw-away PostgreSQL server; each test gets its own database in it."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir, self.root = bindir, root
        self.port = free_port()
        self._count = 0
        self._prefix: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no postgres user for initdb")
            os.chown(root, owner.pw_uid, owner.pw_gid)
            self._prefix = ["runuser", "-u", "postgres", "--"]

    def _run(self, *cmd: str) -> None:
        subprocess.run([*self._prefix, *cmd], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        data = self.root / "data"
        self._run(
            str(self.bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "fedge",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(self.root / "log"),
            "-w", "-t", "60", "-o", opts, "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"
        )

    def new_database(self) -> str:
        import psycopg

        self._count += 1
        name = f"fedge_test_{self._count}"
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=fedge dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://fedge@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    # As root the server runs as postgres, which must be able to reach the directory.
    root = Path(tempfile.mkdtemp(prefix="fedge-pg-", dir="/tmp" if os.geteuid() == 0 else None))
    server = Postgres(bindir, root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def identity_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One coordinator key file for the session (scrypt makes each new one slow)."""
    from fedge.security import SiteIdentity, save_identity

    path = tmp_path_factory.mktemp("coordinator-key") / "coordinator.key"
    save_identity(path, SiteIdentity.generate(), b"fedge-dev-kek", log2_n=10)
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'coordinator.db'}"
    server: Postgres = request.getfixturevalue("postgres")
    return server.new_database()


@pytest.fixture
def settings(database_url: str, tmp_path: Path, identity_file: Path) -> CoordinatorSettings:
    key = tmp_path / "coordinator.key"
    shutil.copy(identity_file, key)
    return CoordinatorSettings(
        database_url=database_url, model_store=tmp_path / "models", identity_file=key
    )


@pytest.fixture
def client(settings: CoordinatorSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def fleet(client: TestClient) -> Fleet:
    """The client plus one API key per role."""
    return Fleet.with_roles(client, list(Role))
