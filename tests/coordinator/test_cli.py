"""``fedge coordinator serve`` as operators run it: a real process on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fedge.coordinator import DEV_ADMIN_KEY
from tests.support.ports import free_port, service, wait_for_port

FEDGE = str(Path(sys.executable).with_name("fedge"))


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "FEDGE_COORDINATOR_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
        "FEDGE_COORDINATOR_MODEL_STORE": str(tmp_path / "models"),
        "FEDGE_COORDINATOR_IDENTITY_FILE": str(tmp_path / "coordinator.key"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        **extra,
    }


def test_serve_answers_and_keeps_the_key_file(tmp_path: Path) -> None:
    port = free_port()
    cmd = [FEDGE, "coordinator", "serve", "--port", str(port)]
    with service(cmd, tmp_path / "log", _env(tmp_path)) as proc:
        wait_for_port(port, timeout=90)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz", timeout=60).json() == {
            "status": "ok",
            "database": "sqlite",
        }
        assert httpx.get(f"{base}/api/v1/sites").status_code == 401
        keys = httpx.get(f"{base}/api/v1/keys", headers={"X-API-Key": DEV_ADMIN_KEY})
        assert keys.status_code == 200
        runs = httpx.get(f"{base}/api/v1/runs", headers={"X-API-Key": DEV_ADMIN_KEY})
        assert runs.status_code == 200
        # Runs are planned and keyed here and trained elsewhere: the API never loads torch.
        libraries = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "/torch/" not in libraries and "/sqlalchemy/" in libraries
    assert (tmp_path / "coordinator.key").stat().st_mode & 0o077 == 0
    assert "coordinator on http://127.0.0.1" in (tmp_path / "log").read_text()


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_stops_at_once_with_a_sites_poll_waiting(tmp_path: Path, workers: int) -> None:
    """SIGTERM (a unit manager's stop) with an agent's long poll in flight: the poll is
    answered (empty) and the process exits in seconds, not after the poll's 30 s wait."""
    import signal
    import threading

    from fedge.core import sign_request
    from tests.support.flower import enroll, make_site

    port = free_port()
    cmd = [FEDGE, "coordinator", "serve", "--port", str(port), "--workers", str(workers)]
    site = make_site(tmp_path / "site", store=tmp_path / "unused.db")
    path = "/api/v1/site/actions?after=0&wait=30"
    answers: list[httpx.Response] = []
    with service(cmd, tmp_path / "log", _env(tmp_path)) as proc:
        wait_for_port(port, timeout=90)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, headers={"X-API-Key": DEV_ADMIN_KEY}) as admin:
            enroll(admin, site)

        def poll() -> None:
            headers = sign_request(site.identity, "GET", path)
            answers.append(httpx.get(base + path, headers=headers, timeout=60))

        waiter = threading.Thread(target=poll, daemon=True)
        waiter.start()
        time.sleep(1.5)  # the poll is in and waiting (nothing will wake it but the stop)
        assert not answers
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        stopped = time.monotonic() - started
        waiter.join(10)
    # uvicorn shuts down, then re-raises the signal it was stopped by: -15 is a clean stop
    assert proc.returncode in (0, -signal.SIGTERM) and stopped < 8, (proc.returncode, stopped)
    assert [(a.status_code, a.json()) for a in answers] == [(200, {"actions": []})]


def test_production_without_secrets_exits_2_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [FEDGE, "coordinator", "serve"],
        env=_env(tmp_path, FEDGE_COORDINATOR_ENVIRONMENT="production"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: invalid coordinator settings: settings: Value error, admin_api_key keeps its "
        "development default"
    ]


def test_workers_each_listen_and_share_keep_alive_connections(tmp_path: Path) -> None:
    """``--workers 2``: a listening socket per worker, so a burst of keep-alive
    connections is spread over both (one shared socket let one worker take them all)."""
    import psutil

    port = free_port()
    cmd = [FEDGE, "coordinator", "serve", "--port", str(port), "--workers", "2"]
    with service(cmd, tmp_path / "log", _env(tmp_path)) as proc:
        wait_for_port(port, timeout=90)
        base = f"http://127.0.0.1:{port}"
        clients = [httpx.Client(base_url=base, timeout=60) for _ in range(16)]
        try:
            deadline = time.monotonic() + 60
            while True:  # both workers up: each holds a LISTEN socket on the port
                listeners = _on_port(proc.pid, port, psutil.CONN_LISTEN)
                if len(listeners) == 2 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert len(listeners) == 2, listeners
            for c in clients:
                assert c.get("/healthz").status_code == 200
            serving = _on_port(proc.pid, port, psutil.CONN_ESTABLISHED)
            assert len(serving) == 2  # all 16 on one worker: 2 in 65,536 by chance
        finally:
            for c in clients:
                c.close()


def test_workers_read_the_env_file_too(tmp_path: Path) -> None:
    """The parent hands ``--env-file`` to its workers in a variable of its own, which the
    workers' strict settings must not take for an unknown setting."""
    env_file = tmp_path / "coordinator.env"
    env_file.write_text(
        f"FEDGE_COORDINATOR_DATABASE_URL=sqlite:///{tmp_path / 'from-file.db'}\n"
        f"FEDGE_COORDINATOR_MODEL_STORE={tmp_path / 'models'}\n"
        f"FEDGE_COORDINATOR_IDENTITY_FILE={tmp_path / 'coordinator.key'}\n"
    )
    env = {k: v for k, v in _env(tmp_path).items() if not k.startswith("FEDGE_COORDINATOR_")}
    port = free_port()
    cmd = [FEDGE, "coordinator", "serve", "--port", str(port), "--workers", "2",
           "--env-file", str(env_file)]  # fmt: skip
    with service(cmd, tmp_path / "log", env):
        wait_for_port(port, timeout=90)
        for _ in range(4):
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=60).status_code == 200
    assert (tmp_path / "from-file.db").exists()


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("shared", [False, True], ids=["plain", "reuseport"])
def test_a_port_in_use_is_one_clear_error(tmp_path: Path, workers: int, shared: bool) -> None:
    """Taken by anyone, even a socket that allows SO_REUSEPORT sharing (as a second
    coordinator's workers would): exit 2 with one line, before the database is touched."""
    with socket.socket() as taken:
        if shared:
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [FEDGE, "coordinator", "serve", "--port", str(port), "--workers", str(workers)],
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use; "
        "is another coordinator running?"
    ]
    assert not (tmp_path / "c.db").exists()


def test_defaults_write_nothing_into_the_working_directory(tmp_path: Path) -> None:
    work, state = tmp_path / "checkout", tmp_path / "state"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDGE_COORDINATOR_")}
    env |= {"XDG_STATE_HOME": str(state), "FLWR_TELEMETRY_ENABLED": "0"}
    port = free_port()
    with service([FEDGE, "coordinator", "serve", "--port", str(port)], tmp_path / "log", env,
                 cwd=work):  # fmt: skip
        wait_for_port(port, timeout=90)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=60).status_code == 200
    assert list(work.iterdir()) == []
    home = state / "fedge" / "coordinator"
    assert home.stat().st_mode & 0o777 == 0o700
    assert {"coordinator.db", "coordinator.key", "models"} <= {p.name for p in home.iterdir()}


def _on_port(parent: int, port: int, status: str) -> set[int]:
    """Processes under ``parent`` with a TCP socket on local ``port`` in ``status``."""
    import psutil

    pids = set()
    for child in psutil.Process(parent).children(recursive=True):
        try:
            conns = child.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        if any(c.laddr and c.laddr.port == port and c.status == status for c in conns):
            pids.add(child.pid)
    return pids
