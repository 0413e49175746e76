"""What one client can make the coordinator hold or write.

Request bodies: each route has a byte limit (the settings' ``max_*_body_bytes``). A
declared ``Content-Length`` over it is refused before the body is read, before
authentication and before any parsing; a body without one (chunked) is counted as it
arrives and refused the moment it passes the limit. Either way the answer is a 413 that
closes the connection, so the rest of the body is never read.

Denials: each refusal (401, 403, 413) of a client takes a token from that client's
bucket; an empty bucket turns the refusal into a 429 that is neither audited nor
otherwise written, so anonymous requests cannot grow the audit log without bound. A
client is its address as the server sees it (an IPv6 client by its /64, which one host
usually holds whole); the buckets live in memory, one set per worker process, so with
``--workers N`` a client may have up to N times the burst audited.
"""

from __future__ import annotations

import ipaddress
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fedge.coordinator._settings import CoordinatorSettings
from fedge.coordinator.api.routes._common import PREFIX

__all__ = ["BodyLimits", "DenialBuckets", "Denials", "LimitBodies", "client_of", "too_many"]

#: Routes that take a batch of sites or forecasts.
_BATCH: Final = frozenset({("POST", f"{PREFIX}/decisions"), ("POST", f"{PREFIX}/site/forecasts")})
#: Routes that take an ONNX model.
_MODEL: Final = frozenset({("POST", f"{PREFIX}/models")})
_RUN_MODEL: Final = re.compile(rf"^{re.escape(PREFIX)}/runs/[^/]+/model$")


@dataclass(frozen=True)
class BodyLimits:
    """Per-route caps on request bodies, in bytes."""

    default: int
    batch: int
    model: int

    @classmethod
    def of(cls, settings: CoordinatorSettings) -> BodyLimits:
        return cls(
            settings.max_body_bytes, settings.max_batch_body_bytes, settings.max_model_body_bytes
        )

    def route(self, method: str, path: str) -> tuple[int, str]:
        """The limit of ``method path`` and the setting that sets it."""
        key = (method, path.rstrip("/") or "/")
        if key in _BATCH:
            return self.batch, "FEDGE_COORDINATOR_MAX_BATCH_BODY_BYTES"
        if key in _MODEL or (method == "POST" and _RUN_MODEL.match(key[1])):
            return self.model, "FEDGE_COORDINATOR_MAX_MODEL_BODY_BYTES"
        return self.default, "FEDGE_COORDINATOR_MAX_BODY_BYTES"


def client_of(scope: Scope) -> str:
    """The client a bucket belongs to: its IPv4 address, or its IPv6 /64."""
    client = scope.get("client")
    host = str(client[0]) if client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class DenialBuckets:
    """A token bucket per client: ``burst`` tokens, refilled at ``per_minute``.

    Used from the event loop only. At most ``max_clients`` buckets are kept; past that,
    the full ones (clients quiet long enough to have nothing left to pay) are dropped
    first, then the oldest."""

    def __init__(
        self,
        burst: int,
        per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 10_000,
    ) -> None:
        self.burst, self.rate = float(burst), per_minute / 60.0
        self.clock, self.max_clients = clock, max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client: (tokens, at)

    def _tokens(self, client: str, now: float) -> float:
        tokens, at = self._buckets.get(client, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def take(self, client: str) -> float:
        """0.0 when ``client`` had a token (now spent); else the seconds until it has one."""
        now = self.clock()
        tokens = self._tokens(client, now)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self._buckets.pop(client, None)  # re-inserted last: the dict's order is by use
        self._buckets[client] = (tokens - 1.0, now)
        if len(self._buckets) > self.max_clients:
            self._evict(now)
        return 0.0

    def _evict(self, now: float) -> None:
        full = [c for c in self._buckets if self._tokens(c, now) >= self.burst]
        for client in full:
            del self._buckets[client]
        while len(self._buckets) > self.max_clients:
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)


Audit = Callable[[str, str, str, str, str], None]


class Denials:
    """Refusals, counted and audited while the client's bucket allows."""

    def __init__(self, buckets: DenialBuckets, audit: Audit, count: Callable[[int], None]) -> None:
        self.buckets, self._audit, self._count = buckets, audit, count

    async def refuse(
        self, scope: Scope, status: int, actor: str, action: str, detail: str
    ) -> float:
        """Record one refusal of ``status``; 0.0 once it is audited, else the seconds the
        client is to wait (the answer becomes a 429 and nothing is written)."""
        wait = self.buckets.take(client_of(scope))
        if wait > 0:
            self._count(429)
            return wait
        self._count(status)
        await run_in_threadpool(
            self._audit, actor, action, str(scope.get("path", "")), "denied", detail
        )
        return 0.0


def too_many(wait: float, *, close: bool = False) -> JSONResponse:
    """The 429 of a client whose denials are over its budget."""
    seconds = max(1, math.ceil(wait))
    headers = {"Retry-After": str(seconds)}
    if close:
        headers["Connection"] = "close"
    return JSONResponse(
        {"detail": f"too many refused requests from this client; retry in {seconds} s"},
        status_code=429,
        headers=headers,
    )


class BodyTooLargeError(Exception):
    """Raised into the app from ``receive`` once a streamed body passes its limit."""


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before the app
    return None


async def _nothing() -> Message:
    return {"type": "http.disconnect"}


class LimitBodies:
    """Pure ASGI, before routing: the limits of :class:`BodyLimits`, as the module says."""

    def __init__(self, app: ASGIApp, limits: BodyLimits, denials: Denials) -> None:
        self.app, self.limits, self.denials = app, limits, denials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limits.route(scope["method"], scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(scope, send, limit, setting)
            return
        counted, over, started = 0, False, False

        async def counting() -> Message:
            nonlocal counted, over
            message = await receive()
            if message["type"] == "http.request":
                counted += len(message.get("body", b""))
                if counted > limit:
                    over = True
                    raise BodyTooLargeError(f"body over {limit} bytes")
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            if over and not started:
                return  # whatever the app made of the cut body: the 413 goes out instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting, sending)
        except BodyTooLargeError:
            if started:
                raise
        if over and not started:
            await self._refuse(scope, send, limit, setting)

    async def _refuse(self, scope: Scope, send: Send, limit: int, setting: str) -> None:
        method, path = scope["method"], scope["path"]
        actor = str(scope.get("state", {}).get("actor", "anonymous"))
        detail = f"the request body is over the {limit}-byte limit of {method} {path}"
        wait = await self.denials.refuse(scope, 413, actor, f"{method} {path}", f"413: {detail}")
        response = (
            too_many(wait, close=True)
            if wait > 0
            else JSONResponse(
                {"detail": detail, "setting": setting},
                status_code=413,
                headers={"Connection": "close"},
            )
        )
        await response(scope, _nothing, send)
