"""Request bodies are bounded per route (413 before anything reads or parses them, also
when streamed without a length), every request field has a bound, and refusals are
audited within a per-client budget (then 429). The last test floods a real
``fedge coordinator serve`` with 400 MB uploads and bounds its memory."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import select
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError
from sqlalchemy import text

from fedge.coordinator import DEV_ADMIN_KEY, CoordinatorSettings, SettingsError, load_settings
from fedge.coordinator._schema import (
    DecisionRequest,
    ForecastBatch,
    ModelVersionCreate,
    RoundReport,
    RunCreate,
    RunModelReport,
)
from fedge.coordinator._store import MAX_MODEL_BASE64
from fedge.coordinator.api import create_app
from fedge.coordinator.api._bodies import EnrollBegin, EnrollComplete
from fedge.coordinator.api._limits import DenialBuckets, client_of
from tests.coordinator.helpers import ADMIN, onnx_model
from tests.support.ports import free_port, service, wait_for_port

KIB, MIB = 1024, 1024 * 1024
SMALL = {
    "max_body_bytes": 4 * KIB,
    "max_batch_body_bytes": 8 * KIB,
    "max_model_body_bytes": 16 * KIB,
}


def small(settings: CoordinatorSettings, **extra: object) -> CoordinatorSettings:
    return settings.model_copy(update={**SMALL, **extra})


def denied(client: TestClient) -> list[dict[str, Any]]:
    log = client.get("/api/v1/audit?limit=1000", headers=ADMIN).json()
    return [e for e in log if e["outcome"] == "denied"]


# --- bodies with a declared length -------------------------------------------------------


def test_a_declared_body_over_the_limit_is_refused_before_authentication(
    settings: CoordinatorSettings,
) -> None:
    with TestClient(create_app(small(settings))) as client:
        under = client.post("/api/v1/keys", content=b"x" * (4 * KIB))
        assert under.status_code == 401  # within the limit: the credentials decide
        over = client.post("/api/v1/keys", content=b"x" * (4 * KIB + 1))
        assert over.status_code == 413, over.text
        assert over.json() == {
            "detail": "the request body is over the 4096-byte limit of POST /api/v1/keys",
            "setting": "FEDGE_COORDINATOR_MAX_BODY_BYTES",
        }
        assert over.headers["connection"] == "close"
        refusals = denied(client)
        assert [(e["actor"], e["action"], e["detail"][:4]) for e in refusals] == [
            ("anonymous", "POST /api/v1/keys", "401:"),
            ("anonymous", "POST /api/v1/keys", "413:"),
        ]
        scrape = client.get("/metrics").text
        assert 'fedge_coordinator_denials_total{status="413"} 1.0' in scrape


@pytest.mark.parametrize(
    ("path", "size", "setting"),
    [
        ("/api/v1/runs", 4 * KIB, "FEDGE_COORDINATOR_MAX_BODY_BYTES"),
        ("/api/v1/decisions", 8 * KIB, "FEDGE_COORDINATOR_MAX_BATCH_BODY_BYTES"),
        ("/api/v1/site/forecasts", 8 * KIB, "FEDGE_COORDINATOR_MAX_BATCH_BODY_BYTES"),
        ("/api/v1/models", 16 * KIB, "FEDGE_COORDINATOR_MAX_MODEL_BODY_BYTES"),
        (f"/api/v1/runs/{'0' * 32}/model", 16 * KIB, "FEDGE_COORDINATOR_MAX_MODEL_BODY_BYTES"),
    ],
)
def test_each_route_has_its_limit(
    settings: CoordinatorSettings, path: str, size: int, setting: str
) -> None:
    with TestClient(create_app(small(settings))) as client:
        assert client.post(path, content=b"x" * size).status_code != 413
        over = client.post(path, content=b"x" * (size + 1))
        assert over.status_code == 413
        assert over.json()["setting"] == setting


def test_a_model_over_the_default_limit_is_stored(settings: CoordinatorSettings) -> None:
    """Uploads have the larger limit: a body over the default one is a 201."""
    with TestClient(create_app(small(settings))) as client:
        body = {
            "onnx_base64": base64.b64encode(onnx_model("big")).decode(),
            "note": "n" * 200,
            "metrics": {f"{i:064d}": -1.2345678901234567e-300 for i in range(64)},
        }
        assert len(json.dumps(body)) > SMALL["max_body_bytes"]
        assert client.post("/api/v1/models", json=body, headers=ADMIN).status_code == 201


# --- streamed bodies, driven as a server drives the app ----------------------------------


async def _drive(
    app: FastAPI, path: str, headers: dict[str, str], chunks: Iterator[bytes]
) -> tuple[int, dict[str, str], bytes, int]:
    """``POST path`` with a body of ``chunks`` and no declared length (as a chunked upload
    reaches the app); the answer's status, headers, body, and how many chunks were read."""
    read, ended = 0, False
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read, ended
        chunk = None if ended else next(chunks, None)
        if chunk is None:
            if ended:
                return {"type": "http.disconnect"}
            ended = True
            return {"type": "http.request", "body": b"", "more_body": False}
        read += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "client": ("10.1.2.3", 5000), "server": ("127.0.0.1", 8080),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }  # fmt: skip
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    answer = {k.decode(): v.decode() for k, v in start["headers"]}
    return int(start["status"]), answer, body, read


#: Routes that read the body in different places: FastAPI's own body parameter, before
#: the key (keys) or the signature (forecasts); a dependency after the key (models,
#: decisions). The actor is who the 413 is recorded for.
STREAMED = [
    ("/api/v1/keys", ADMIN, 4 * KIB, "anonymous"),
    ("/api/v1/site/forecasts", {}, 8 * KIB, "anonymous"),
    ("/api/v1/models", ADMIN, 16 * KIB, "operator:bootstrap-admin"),
    ("/api/v1/decisions", ADMIN, 8 * KIB, "operator:bootstrap-admin"),
]


@pytest.mark.parametrize(
    ("path", "headers", "limit", "actor"), STREAMED, ids=[s[0] for s in STREAMED]
)
def test_a_streamed_body_is_cut_at_the_limit(
    settings: CoordinatorSettings, path: str, headers: dict[str, str], limit: int, actor: str
) -> None:
    configured = small(settings)
    if path.endswith("/decisions"):
        from tests.coordinator.policies import write_policies

        write_policies(settings.model_store.parent / "policies")
        configured = small(settings, policy_dir=settings.model_store.parent / "policies")
    with TestClient(create_app(configured)) as client:
        app: FastAPI = client.app  # type: ignore[assignment]
        chunks = itertools.repeat(b"A" * KIB, 64)  # 64 KiB, four times the largest limit
        status, answer, body, read = asyncio.run(_drive(app, path, headers, chunks))
        assert status == 413, body
        assert answer["connection"] == "close"
        assert json.loads(body)["detail"].startswith(f"the request body is over the {limit}-byte")
        assert read == limit // KIB + 1  # not one chunk more than it took to pass the limit
        (entry,) = denied(client)
        assert entry["detail"].startswith("413:")
        assert entry["actor"] == actor


def test_an_anonymous_upload_is_refused_before_its_body_is_read(
    settings: CoordinatorSettings,
) -> None:
    with TestClient(create_app(small(settings))) as client:
        app: FastAPI = client.app  # type: ignore[assignment]
        status, _, _, read = asyncio.run(
            _drive(app, "/api/v1/models", {}, itertools.repeat(b"A" * KIB, 64))
        )
        assert (status, read) == (401, 0)
        viewer = client.post("/api/v1/keys", json={"name": "v", "role": "viewer"}, headers=ADMIN)
        as_viewer = {"X-API-Key": viewer.json()["key"]}
        status, _, _, read = asyncio.run(
            _drive(app, "/api/v1/models", as_viewer, itertools.repeat(b"A" * KIB, 64))
        )
        assert (status, read) == (403, 0)


def test_a_run_model_report_without_its_token_is_refused_before_its_body_is_read(
    settings: CoordinatorSettings,
) -> None:
    path = f"/api/v1/runs/{'0' * 32}/model"
    with TestClient(create_app(small(settings))) as client:
        app: FastAPI = client.app  # type: ignore[assignment]
        for headers in ({}, {"X-Fedge-Run-Token": "not-the-token"}):
            status, _, _, read = asyncio.run(
                _drive(app, path, headers, itertools.repeat(b"A" * KIB, 64))
            )
            assert (status, read) == (401, 0)


def test_a_streamed_body_within_the_limit_goes_through(settings: CoordinatorSettings) -> None:
    with TestClient(create_app(small(settings))) as client:
        app: FastAPI = client.app  # type: ignore[assignment]
        body = json.dumps({"name": "streamed", "role": "viewer"}).encode()
        pieces = iter([body[:10], body[10:]])
        headers = {**ADMIN, "Content-Type": "application/json"}
        status, _, answer, _ = asyncio.run(_drive(app, "/api/v1/keys", headers, pieces))
        assert status == 201, answer


# --- denials: audited within a budget per client, then 429 ------------------------------


def test_refusals_beyond_the_budget_are_429_and_not_audited(
    settings: CoordinatorSettings,
) -> None:
    budget = small(settings, denial_burst=5, denial_refill_per_minute=0.001)
    with TestClient(create_app(budget)) as client:
        statuses = [client.get("/api/v1/sites").status_code for _ in range(30)]
        statuses.append(client.post("/api/v1/keys", content=b"x" * (5 * KIB)).status_code)
        assert statuses == [401] * 5 + [429] * 26
        late = client.get("/api/v1/sites", headers={"X-API-Key": "fedge-op.wrong"})
        assert late.status_code == 429
        assert int(late.headers["retry-after"]) > 0
        assert "too many refused requests" in late.json()["detail"]
        assert client.get("/api/v1/sites", headers=ADMIN).status_code == 200  # valid: served
        assert len(denied(client)) == 5
        engine = client.app.state.coordinator.engine  # type: ignore[attr-defined]
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT count(*) FROM audit_log WHERE outcome = 'denied'"))
            assert rows.scalar_one() == 5
        assert 'fedge_coordinator_denials_total{status="429"} 27.0' in client.get("/metrics").text
    with TestClient(create_app(budget), client=("192.0.2.7", 4000)) as other:
        assert other.get("/api/v1/sites").status_code == 401  # a budget of its own


def test_a_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    buckets = DenialBuckets(2, per_minute=6.0, clock=lambda: now[0])  # a token per 10 s
    assert [buckets.take("a"), buckets.take("a")] == [0.0, 0.0]
    assert buckets.take("a") == pytest.approx(10.0)
    now[0] = 4.0
    assert buckets.take("a") == pytest.approx(6.0)
    now[0] = 10.0
    assert buckets.take("a") == 0.0
    assert buckets.take("b") == 0.0  # another client, another bucket
    now[0] = 1000.0
    assert [buckets.take("a"), buckets.take("a"), buckets.take("a")][2] > 0  # burst, no more


def test_the_buckets_are_bounded_and_keep_the_emptied_ones() -> None:
    now = [0.0]
    buckets = DenialBuckets(1, per_minute=1.0, clock=lambda: now[0], max_clients=3)
    buckets.take("attacker")
    now[0] = 120.0  # the quiet clients below are full again by the time the bucket overflows
    for client in ("a", "b"):
        buckets.take(client)
    now[0] = 240.0
    buckets.take("attacker")  # empty again: remembered
    buckets.take("c")
    assert len(buckets) <= 3
    assert buckets.take("attacker") > 0


@pytest.mark.parametrize(
    ("client", "bucket"),
    [
        (("203.0.113.9", 1), "203.0.113.9"),
        (("2001:db8:1:2:aaaa::1", 1), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:bbbb::7", 1), "2001:db8:1:2::/64"),
        (("::ffff:203.0.113.9", 1), "203.0.113.9"),
        (("testclient", 1), "testclient"),
        (None, "unknown"),
    ],
)
def test_clients_are_counted_by_address(client: tuple[str, int] | None, bucket: str) -> None:
    assert client_of({"client": client}) == bucket


# --- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_body_bytes": 0}, "max_body_bytes"),
        ({"max_body_bytes": 1023}, "max_body_bytes"),
        ({"max_body_bytes": 2**31}, "max_body_bytes"),
        ({"max_body_bytes": "1MB"}, "max_body_bytes"),
        ({"max_batch_body_bytes": 1.5}, "max_batch_body_bytes"),
        ({"max_model_body_bytes": -1}, "max_model_body_bytes"),
        ({"max_model_body_bytes": 100 * KIB}, "max_model_body_bytes must be at least max_body"),
        ({"max_batch_body_bytes": 256 * KIB}, "max_batch_body_bytes must be at least max_body"),
        ({"denial_burst": 0}, "denial_burst"),
        ({"denial_burst": "many"}, "denial_burst"),
        ({"denial_refill_per_minute": 0}, "denial_refill_per_minute"),
        ({"denial_refill_per_minute": "nan"}, "denial_refill_per_minute"),
        ({"denial_refill_per_minute": "inf"}, "denial_refill_per_minute"),
    ],
)
def test_bad_limits_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(**overrides)


def test_limits_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDGE_COORDINATOR_MAX_MODEL_BODY_BYTES", str(64 * MIB))
    monkeypatch.setenv("FEDGE_COORDINATOR_DENIAL_BURST", "7")
    settings = load_settings()
    assert (settings.max_model_body_bytes, settings.denial_burst) == (64 * MIB, 7)
    assert settings.max_body_bytes == 512 * KIB and settings.max_batch_body_bytes == 4 * MIB


def test_the_largest_valid_bodies_fit_the_default_limits() -> None:
    """Every field at its bound, as JSON, is under its route's default limit."""
    limits = load_settings()
    number = -1.2345678901234567e-300  # as long as a float's JSON gets
    forecasts = {
        "model_version": "v" * 64,
        "forecasts": [
            {"cell": "c" * 64, "step": 2**40, "made_step": 2**40, "values": [number] * 16}
        ]
        * 2000,
    }
    decisions = {"kind": "tactical", "site_ids": ["f" * 64] * 1024,
                 "observations": [[number] * 64] * 1024}  # fmt: skip
    model = {"onnx_base64": "A" * MAX_MODEL_BASE64, "note": "n" * 200, "parent_id": 2**31,
             "metrics": {f"{i:064d}": number for i in range(64)}}  # fmt: skip
    run = {"num_rounds": 10_000, "strategy": "s" * 32, "codec": "c" * 64,
           "config": {f"{i:064d}": "v" * 4096 for i in range(64)}}  # fmt: skip
    for body, limit in [
        (forecasts, limits.max_batch_body_bytes),
        (decisions, limits.max_batch_body_bytes),
        (model, limits.max_model_body_bytes),
        (run, limits.max_body_bytes),
    ]:
        assert len(json.dumps(body)) < limit
    ForecastBatch.model_validate(forecasts)
    DecisionRequest.model_validate(decisions)
    ModelVersionCreate.model_validate(model)
    RunCreate.model_validate(run)


# --- every string and list of a request has a bound --------------------------------------

GOOD_ROUND = {"status": "running", "strategy": "fedavg", "started_at": 1.0}
OVER: list[tuple[type[BaseModel], dict[str, Any], str]] = [
    (ModelVersionCreate, {"onnx_base64": "A" * (MAX_MODEL_BASE64 + 4)}, "onnx_base64"),
    (ModelVersionCreate, {"onnx_base64": "AAAA", "note": "n" * 201}, "note"),
    (ModelVersionCreate, {"onnx_base64": "AAAA", "metrics": {"m" * 65: 1.0}}, "metrics"),
    (
        ModelVersionCreate,
        {"onnx_base64": "AAAA", "metrics": {str(i): 1.0 for i in range(65)}},
        "metrics",
    ),
    (RunModelReport, {"onnx_base64": "A" * (MAX_MODEL_BASE64 + 4)}, "onnx_base64"),
    (RunModelReport, {"onnx_base64": "AAAA", "metrics": {"m" * 65: 1.0}}, "metrics"),
    (RoundReport, {**GOOD_ROUND, "metrics": {"m" * 65: 1.0}}, "metrics"),
    (RoundReport, {**GOOD_ROUND, "strategy": "s" * 33}, "strategy"),
    (RunCreate, {"config": {"k" * 65: 1}}, "config"),
    (RunCreate, {"config": {"data-spec": "v" * 4097}}, "config"),
    (RunCreate, {"config": {str(i): 1 for i in range(65)}}, "config"),
    (RunCreate, {"codec": "c" * 65}, "codec"),
    (
        DecisionRequest,
        {"kind": "strategic", "site_ids": ["a" * 65], "observations": [[0.0]]},
        "site_ids",
    ),
    (
        DecisionRequest,
        {"kind": "strategic", "site_ids": ["a"], "observations": [[0.0] * 65]},
        "observations",
    ),
    (
        DecisionRequest,
        {"kind": "strategic", "site_ids": ["a"] * 1025, "observations": [[0.0]]},
        "site_ids",
    ),
    (
        ForecastBatch,
        {
            "model_version": "v" * 65,
            "forecasts": [{"cell": "c", "step": 1, "made_step": 1, "values": [1.0]}],
        },
        "model_version",
    ),
    (EnrollBegin, {"request_base64": "A" * 16385}, "request_base64"),
    (EnrollComplete, {"site_id": "a" * 33, "proof_base64": "AA=="}, "site_id"),
    (EnrollComplete, {"site_id": "a" * 32, "proof_base64": "A" * 257}, "proof_base64"),
    (EnrollComplete, {"site_id": "a" * 32, "proof_base64": "AA==", "region": "r" * 65}, "region"),
]


@pytest.mark.parametrize(
    ("model", "body", "field"),
    OVER,
    ids=[f"{m.__name__}.{f}-{i}" for i, (m, _, f) in enumerate(OVER)],
)
def test_request_fields_are_bounded(
    model: type[BaseModel], body: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        model.model_validate(body)
    assert {str(e["loc"][0]) for e in refused.value.errors()} == {field}


def test_bounds_answer_422_through_the_api(settings: CoordinatorSettings) -> None:
    with TestClient(create_app(settings)) as client:
        long_key = {"onnx_base64": "AAAA", "metrics": {"m" * 65: 1.0}}
        answer = client.post("/api/v1/models", json=long_key, headers=ADMIN)
        assert answer.status_code == 422 and "metrics" in answer.json()["detail"]
        report = {**GOOD_ROUND, "metrics": {"m" * 65: 1.0}}
        answer = client.put(f"/api/v1/runs/{'0' * 32}/rounds/1", json=report)
        assert answer.status_code == 422 and "metrics" in answer.json()["detail"]
        name = client.post("/api/v1/keys", json={"name": "n" * 65, "role": "viewer"}, headers=ADMIN)
        assert name.status_code == 422 and "name" in name.json()["detail"]


# --- a real coordinator under a flood of 400 MB uploads -----------------------------------

FLOOD_BYTES = 400 * MIB
CHUNK = MIB


def _upload(port: int, *, chunked: bool, key: str | None) -> int | None:
    """Send ``POST /api/v1/models`` with a 400 MB body, a chunk at a time from a generator,
    reading between chunks; the status of the answer, or None if the connection was closed
    before it could be read."""

    def body() -> Iterator[bytes]:
        yield b'{"onnx_base64": "'
        for _ in range(FLOOD_BYTES // CHUNK):
            yield b"A" * CHUNK

    head = ["POST /api/v1/models HTTP/1.1", f"Host: 127.0.0.1:{port}",
            "Content-Type: application/json",
            "Transfer-Encoding: chunked" if chunked else f"Content-Length: {FLOOD_BYTES + 17}"]  # fmt: skip
    if key is not None:
        head.append(f"X-API-Key: {key}")
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            for chunk in body():
                if select.select([sock], [], [], 0)[0]:
                    break  # answered before the body ended
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        except OSError:  # the server closed the connection on the rest of the body
            pass
        try:
            while b"\r\n" not in answer:
                piece = sock.recv(65536)
                if not piece:
                    break
                answer += piece
        except OSError:
            pass
    return int(answer.split()[1]) if answer.startswith(b"HTTP/1.1 ") else None


@pytest.mark.slow
def test_a_flood_of_huge_uploads_is_refused_within_bounded_memory(tmp_path: Path) -> None:
    import psutil

    port = free_port()
    env = {
        **os.environ,
        "FLWR_TELEMETRY_ENABLED": "0",
        "FEDGE_COORDINATOR_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
        "FEDGE_COORDINATOR_MODEL_STORE": str(tmp_path / "models"),
        "FEDGE_COORDINATOR_IDENTITY_FILE": str(tmp_path / "coordinator.key"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    fedge = str(Path(sys.executable).with_name("fedge"))
    with service(
        [fedge, "coordinator", "serve", "--port", str(port)], tmp_path / "log", env
    ) as proc:
        wait_for_port(port, timeout=90)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz").status_code == 200
        server = psutil.Process(proc.pid)
        peak, stop = [server.memory_info().rss], threading.Event()

        def sample() -> None:
            while not stop.wait(0.02):
                peak.append(server.memory_info().rss)

        sampler = threading.Thread(target=sample)
        sampler.start()
        results: list[int | None] = [None] * 8
        # Half declare their length (refused unread, before authentication), half stream
        # chunks with a valid key (read up to the limit, then cut off).
        clients = [
            threading.Thread(
                target=lambda i=i: results.__setitem__(
                    i, _upload(port, chunked=i % 2 == 1, key=DEV_ADMIN_KEY if i % 2 else None)
                )
            )
            for i in range(8)
        ]
        for c in clients:
            c.start()
        for c in clients:
            c.join()
        stop.set()
        sampler.join()
        assert set(results) <= {413, None}, results
        scrape = httpx.get(f"{base}/metrics").text
        refused = [line for line in scrape.splitlines()
                   if line.startswith("fedge_coordinator_requests_total") and 'status="413"' in line]  # fmt: skip
        assert sum(float(line.rsplit(" ", 1)[1]) for line in refused) == 8.0, refused
        assert max(peak) < 600 * MIB, f"peak RSS {max(peak) / MIB:.0f} MiB"
        print(f"peak RSS {max(peak) / MIB:.0f} MiB, at start {peak[0] / MIB:.0f} MiB; {results}")
        good = {"onnx_base64": base64.b64encode(onnx_model("after")).decode()}
        after = httpx.post(f"{base}/api/v1/models", json=good, headers=ADMIN, timeout=60)
        assert after.status_code == 201, after.text
