"""``serve``: the listening sockets. One process binds its port exclusively; with
``--workers N``, N uvicorn processes each accept on their own SO_REUSEPORT socket.

uvicorn's own multi-worker mode shares one listening socket, and the worker that wakes
first accepts every connection waiting: a burst of keep-alive clients (a load balancer's
pool, the benchmark's 16 connections) landed on one worker while the other idled, and
that worker's CPU capped the whole service. With a socket per worker the kernel spreads
new connections over them. uvicorn's supervisor still restarts dead or hung workers and
handles the signals.

A port already taken is one clear error before anything starts, even when its holder also
set SO_REUSEPORT (another coordinator on the same port would otherwise share its traffic).
"""

from __future__ import annotations

import errno
import socket
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from fedge.coordinator._errors import CoordinatorError

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["PortInUseError", "Tls", "bind_exclusive", "serve_app", "serve_workers"]


class PortInUseError(CoordinatorError):
    """The address to listen on is taken (or cannot be bound at all)."""


def _listener(host: str, port: int, *, listen: bool, share: bool = True) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT only
    if share:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
        if listen:
            sock.listen(2048)
    except OSError as exc:
        sock.close()
        why = exc.strerror or str(exc)
        hint = "; is another coordinator running?" if exc.errno == errno.EADDRINUSE else ""
        raise PortInUseError(f"cannot listen on {host}:{port}: {why}{hint}") from exc
    sock.set_inheritable(True)
    return sock


def bind_exclusive(host: str, port: int) -> socket.socket:
    """A listening socket no other process shares: binding without SO_REUSEPORT fails on a
    port any socket holds, SO_REUSEPORT or not."""
    return _listener(host, port, listen=True, share=False)


#: An HTTPS API's certificate (PEM, its chain after it) and private key files.
Tls = tuple[Path, Path]


#: How long a stopping server waits for the requests in flight (waiting polls answer at
#: once: see _StoppingServer); what is still running then is cancelled.
GRACEFUL_STOP_S = 5


def _server(config: Any) -> Any:
    """uvicorn's server, which on SIGTERM or SIGINT also answers this process's waiting
    action polls: uvicorn waits for the requests in flight before it stops, and a poll
    would hold its request for up to its wait (30 s), past what a unit manager allows."""
    import uvicorn

    from fedge.coordinator._actions import stop_waiting_polls

    class _StoppingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            stop_waiting_polls()

    return _StoppingServer(config)


def serve_app(app: FastAPI, host: str, port: int, tls: Tls | None = None) -> None:
    """Run ``app`` in this process on a socket bound here, so a taken port raises
    :class:`PortInUseError` instead of a uvicorn log line and exit 1; HTTPS with ``tls``."""
    import uvicorn

    sock = bind_exclusive(host, port)
    try:
        cert, key = tls or (None, None)
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, ssl_certfile=cert, ssl_keyfile=key,
            log_config=None,  # uvicorn's lines go through the root logger's format
            timeout_graceful_shutdown=GRACEFUL_STOP_S,
        )  # fmt: skip
        _server(config).run(sockets=[sock])
    finally:
        sock.close()


def _worker(
    host: str,
    port: int,
    app: str,
    tls: Tls | None,
    sockets: list[socket.socket] | None = None,
) -> None:
    import uvicorn

    cert, key = tls or (None, None)
    config = uvicorn.Config(
        app, factory=True, log_level="warning", access_log=False, ssl_certfile=cert,
        ssl_keyfile=key, log_config=None, timeout_graceful_shutdown=GRACEFUL_STOP_S,
    )  # fmt: skip
    _server(config).run(sockets=[_listener(host, port, listen=True)])


def serve_workers(app: str, host: str, port: int, workers: int, tls: Tls | None = None) -> None:
    """Run ``app`` (an import string of an app factory) in ``workers`` processes."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    # The exclusive probe refuses a port already held; then the claim, bound but never
    # listening, holds it without joining the group the kernel hands connections to.
    bind_exclusive(host, port).close()
    claim = _listener(host, port, listen=False)
    try:
        config = uvicorn.Config(
            app, factory=True, workers=workers, log_level="warning", log_config=None
        )
        target = partial(_worker, host, port, app, tls)
        Multiprocess(config, target=target, sockets=[]).run()
    finally:
        claim.close()
