"""``make bench-coordinator``: the real coordinator (uvicorn, ``fedge coordinator serve``)
on a free port, against SQLite and against a PostgreSQL this benchmark starts itself.

Three loads, each a closed loop of keep-alive connections from a lean asyncio client that
sends pre-encoded requests (so the client spends little of the shared CPU):

- ``models``: ``GET /api/v1/models`` (viewer key) with 10 versions stored;
- ``decisions_batch``: ``POST /api/v1/decisions``, 64 enrolled sites per request (strategic);
- ``forecast_ingest``: ``POST /api/v1/site/forecasts`` as an agent posts it each step:
  one forecast per cell and horizon (3 cells x 12 horizons) and the cells' actuals of the
  completed step, each request signed ahead of time (ML-DSA-65 + Ed25519) with its own
  nonce. ``accepted_rps`` counts the 201s only.

Targets: decisions batch and signed forecast ingest >= 1,000 requests/s with p99 <= 50 ms.
The signed ingest runs at 4, 8 and 16 client connections (``sweep``); its headline is the
most accepted requests/s among the runs whose p99 meets the target.
``--seconds 1 --databases sqlite`` is a quick check that the benchmark runs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import write_result

SITES = 64
CELLS, HORIZONS = 3, 12  # an agent's forecasts per step: one per cell and horizon
FORECASTS_PER_REQUEST = CELLS * HORIZONS
INGEST_CONNECTIONS = (4, 8, 16)  # client concurrencies of the signed-ingest sweep
SIGNED_PER_SECOND = 1500  # signed ahead of time per second of load (signing is slow)
TARGET = {
    "decisions_batch": {"rps": 1000.0, "p99_ms": 50.0},
    "forecast_ingest": {"accepted_rps": 1000.0, "p99_ms": 50.0},
}


# --- a lean HTTP/1.1 keep-alive load generator --------------------------------------------


def encode(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


#: CPU seconds used so far, by part ("server", "database"); the client is this process.
CpuMeter = Callable[[], dict[str, float]]


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return total


def _cpu_of(server: int, database: int | None) -> dict[str, float]:
    """A :data:`CpuMeter` of the coordinator (and PostgreSQL) process trees."""
    parts = {"server": tree_cpu(server)}
    if database is not None:
        parts["database"] = tree_cpu(database)
    return parts


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _load(
    port: int,
    requests: list[bytes],
    connections: int,
    duration: float,
    cpu: CpuMeter | None = None,
) -> dict[str, Any]:
    """Closed loop: each connection sends the next request when its answer is in. With
    ``cpu``, the CPU microseconds per request of the client and of each measured part."""
    latencies: list[float] = []
    errors: dict[int, int] = {}
    accepted = 0
    cursor = 0
    deadline = 0.0

    async def worker() -> None:
        nonlocal cursor, accepted
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline and cursor < len(requests):
                request = requests[cursor]
                cursor += 1
                t0 = time.perf_counter()
                status = await _exchange(reader, writer, request)
                latencies.append(time.perf_counter() - t0)
                if status >= 300:
                    errors[status] = errors.get(status, 0) + 1
                else:
                    accepted += 1
        finally:
            writer.close()

    # warm-up on one connection, then the measured run
    deadline = time.perf_counter() + 1.0
    await asyncio.gather(*(worker() for _ in range(2)))
    latencies.clear()
    errors.clear()
    accepted = 0
    load_before = os.getloadavg()
    cpu_before = {"client": _own_cpu(), **(cpu() if cpu else {})}
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    cpu_after = {"client": _own_cpu(), **(cpu() if cpu else {})}
    lat = np.array(latencies) * 1000.0
    count = max(1, len(latencies))
    return {
        "rps": round(len(latencies) / elapsed, 1),
        "accepted_rps": round(accepted / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "requests": len(latencies),
        "errors": errors,
        "connections": connections,
        "seconds": round(elapsed, 2),
        "loadavg_1m_before": round(load_before[0], 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "cpu_us_per_request": {
            part: round((cpu_after[part] - cpu_before[part]) / count * 1e6) for part in cpu_after
        },
    }


# --- services -----------------------------------------------------------------------------


def postmaster_pid(root: Path) -> int:
    """The pid of the PostgreSQL server that :func:`postgres` started in ``root``."""
    return int((root / "data" / "postmaster.pid").read_text().split()[0])


@contextmanager
def postgres(root: Path) -> Iterator[str]:
    """A throw-away PostgreSQL (the tests' helper: initdb + pg_ctl on a free port)."""
    from tests.coordinator.conftest import Postgres, _pg_bin

    bindir = _pg_bin()
    if bindir is None:
        raise SystemExit("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    server = Postgres(bindir, root)
    server.start()
    try:
        yield server.new_database()
    finally:
        server.stop()


@contextmanager
def coordinator(root: Path, url: str, policies: Path, workers: int) -> Iterator[tuple[int, int]]:
    """The port and pid of a running ``fedge coordinator serve``."""
    from tests.support.ports import free_port, service, wait_for_port

    port = free_port()
    env = {
        **os.environ,
        "FEDGE_COORDINATOR_DATABASE_URL": url,
        "FEDGE_COORDINATOR_MODEL_STORE": str(root / "models"),
        "FEDGE_COORDINATOR_IDENTITY_FILE": str(root / "coordinator.key"),
        "FEDGE_COORDINATOR_POLICY_DIR": str(policies),
    }
    fedge = str(Path(sys.executable).with_name("fedge"))
    cmd = [fedge, "coordinator", "serve", "--port", str(port), "--workers", str(workers)]
    with service(cmd, root / "coordinator.log", env) as proc:
        wait_for_port(port, timeout=300)  # a loaded machine starts the workers slowly
        time.sleep(1.0 + workers)  # every worker up
        yield port, proc.pid


def _policies(root: Path) -> tuple[Path, str]:
    trained = Path("runs/decisions")
    if (trained / "energy.onnx").exists() or (trained / "manifest.json").exists():
        return trained, "trained (runs/decisions)"
    from tests.coordinator.policies import write_policies

    write_policies(root / "policies")
    return root / "policies", "small hand-set ONNX policies (tests/coordinator/policies.py)"


def _prepare(port: int, signed: int) -> dict[str, Any]:
    """Keys, 64 enrolled sites, 10 model versions, and the pre-encoded requests."""
    import httpx

    from fedge.coordinator import Role, sign_request
    from tests.coordinator.helpers import Fleet

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        fleet = Fleet.with_roles(client, list(Role))  # type: ignore[arg-type]
        sites = [fleet.enroll() for _ in range(SITES)]
        for i in range(10):
            fleet.upload(f"bench-{i}-{time.time_ns()}")
    viewer = {"X-API-Key": fleet.keys[Role.VIEWER]}
    operator = {"X-API-Key": fleet.keys[Role.OPERATOR]}
    rng = np.random.default_rng(0)
    ids = [s.site_id.hex() for s in sites]
    from tests.coordinator.policies import ENERGY_OBS

    decisions = []
    for _ in range(64):  # 64 distinct bodies, cycled
        obs = rng.random((SITES, ENERGY_OBS)).round(4).tolist()
        body = json.dumps({"kind": "strategic", "site_ids": ids, "observations": obs}).encode()
        decisions.append(encode("POST", "/api/v1/decisions", operator, body))
    models = encode("GET", "/api/v1/models", viewer)
    forecasts = []
    for n in range(signed):  # signed ahead of time (ML-DSA signing is the slow part)
        site, step = sites[n % SITES], 5_000_000 + n // SITES  # each site's next step
        values = rng.random((CELLS, HORIZONS + 1, 3)).round(4).tolist()
        rows = [
            {"cell": f"c{c}", "step": step + h, "made_step": step, "values": values[c][h]}
            for c in range(CELLS)
            for h in range(1, HORIZONS + 1)
        ]
        actuals = [{"cell": f"c{c}", "step": step, "values": values[c][0]} for c in range(CELLS)]
        body = json.dumps({"model_version": "v1", "forecasts": rows, "actuals": actuals}).encode()
        headers = sign_request(site, "POST", "/api/v1/site/forecasts", body)
        forecasts.append(encode("POST", "/api/v1/site/forecasts", headers, body))
    return {"models": models, "decisions": decisions, "forecasts": forecasts}


LOADS = ("models", "decisions_batch", "forecast_ingest")


def _measure(
    port: int, connections: int, duration: float, cpu: CpuMeter, loads: tuple[str, ...] = LOADS
) -> dict[str, Any]:
    started = time.perf_counter()
    ingest = "forecast_ingest" in loads
    signed = max(200, int(duration * SIGNED_PER_SECOND)) * len(INGEST_CONNECTIONS) * ingest
    requests = _prepare(port, signed)
    print(f"  prepared in {time.perf_counter() - started:.0f} s", flush=True)
    n = int(duration * 5000)
    out = {}
    if "models" in loads:
        models = [requests["models"]] * n
        out["models"] = asyncio.run(_load(port, models, connections, duration, cpu))
    if "decisions_batch" in loads:
        decisions = (requests["decisions"] * (n // 64 + 1))[:n]
        out["decisions_batch"] = asyncio.run(_load(port, decisions, connections, duration, cpu))
    # Throughput at the latency target: the same load at several client concurrencies
    # (closed loop, so latency ~ connections / throughput); the headline is the one with
    # the most accepted requests/s whose p99 is within the target, and the sweep is kept.
    if ingest:
        sweep, unused = [], list(requests["forecasts"])
        share = len(unused) // len(INGEST_CONNECTIONS)
        for n_conn in INGEST_CONNECTIONS:
            batch, unused = unused[:share], unused[share:]  # every nonce is sent once only
            sweep.append(asyncio.run(_load(port, batch, n_conn, duration, cpu)))
        within = [f for f in sweep if f["p99_ms"] <= TARGET["forecast_ingest"]["p99_ms"]]
        best = max(within or sweep, key=lambda f: f["accepted_rps"])
        out["forecast_ingest"] = {**best, "within_p99_target": bool(within), "sweep": sweep}
        runs = [(f"forecast_ingest@{f['connections']}", f) for f in sweep]
    else:
        runs = []
    for name, figures in [*((k, v) for k, v in out.items() if k != "forecast_ingest"), *runs]:
        print(f"  {name}: {figures['rps']} req/s ({figures['accepted_rps']} accepted), "
              f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, "
              f"errors {figures['errors']}, {figures['connections']} connections, "
              f"CPU us/request {figures['cpu_us_per_request']}",
              flush=True)  # fmt: skip
    return out


def _try_uvloop() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0, help="per load")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--loads", default=",".join(LOADS), help="a subset of " + ",".join(LOADS))
    args = parser.parse_args()
    loads = tuple(args.loads.split(","))
    if unknown := set(loads) - set(LOADS):
        parser.error(f"unknown loads {sorted(unknown)}; known: {', '.join(LOADS)}")
    _try_uvloop()
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    figures: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="fedge-bench-coordinator-", dir="/tmp"))
    try:
        from fedge.security import SiteIdentity, save_identity

        save_identity(root / "key", SiteIdentity.generate(), b"fedge-dev-kek", log2_n=10)
        policies, policy_kind = _policies(root)
        for db in args.databases.split(","):
            work = root / db
            work.mkdir()
            shutil.copy(root / "key", work / "coordinator.key")
            print(f"{db}:", flush=True)
            if db == "sqlite":
                url = f"sqlite:///{work / 'c.db'}"
                with coordinator(work, url, policies, args.workers) as (port, pid):
                    meter = functools.partial(_cpu_of, pid, None)
                    figures[db] = _measure(port, args.connections, args.seconds, meter, loads)
            else:
                # its own /tmp directory: the server may run as the postgres user
                pg = Path(tempfile.mkdtemp(prefix="fedge-bench-pg-", dir="/tmp"))
                with (
                    postgres(pg) as url,
                    coordinator(work, url, policies, args.workers) as (port, pid),
                ):
                    meter = functools.partial(_cpu_of, pid, postmaster_pid(pg))
                    figures[db] = _measure(port, args.connections, args.seconds, meter, loads)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        for leftover in Path("/tmp").glob("fedge-bench-pg-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    load = os.getloadavg()
    path = write_result(
        "coordinator",
        {
            **figures,
            "target": TARGET,
            "setup": {
                "workers": args.workers,
                "connections": args.connections,
                "seconds_per_load": args.seconds,
                "loads": list(loads),
                "sites_per_decision_batch": SITES,
                "forecasts_per_request": FORECASTS_PER_REQUEST,
                "actuals_per_request": CELLS,
                "policies": policy_kind,
                "client": "asyncio keep-alive, pre-encoded requests, same machine",
            },
            "loadavg": {"1m": load[0], "5m": load[1], "15m": load[2]},
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
