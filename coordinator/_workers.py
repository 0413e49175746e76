"""``serve --workers N``: N uvicorn processes, each accepting on its own SO_REUSEPORT socket.

uvicorn's own multi-worker mode shares one listening socket, and the worker that wakes
first accepts every connection waiting: a burst of keep-alive clients (a load balancer's
pool, the benchmark's 16 connections) landed on one worker while the other idled, and
that worker's CPU capped the whole service. With a socket per worker the kernel spreads
new connections over them. uvicorn's supervisor still restarts dead or hung workers and
handles the signals.
"""

from __future__ import annotations

import socket
from functools import partial

from fedge.coordinator._errors import CoordinatorError

__all__ = ["serve_workers"]


def _listener(host: str, port: int, *, listen: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CoordinatorError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    if listen:
        sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker(host: str, port: int, app: str, sockets: list[socket.socket] | None = None) -> None:
    import uvicorn

    config = uvicorn.Config(app, factory=True, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[_listener(host, port, listen=True)])


def serve_workers(app: str, host: str, port: int, workers: int) -> None:
    """Run ``app`` (an import string of an app factory) in ``workers`` processes."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    # Bound, never listening: claims the port (a clear error if taken) without joining
    # the group the kernel hands connections to.
    claim = _listener(host, port, listen=False)
    try:
        config = uvicorn.Config(app, factory=True, workers=workers, log_level="warning")
        Multiprocess(config, target=partial(_worker, host, port, app), sockets=[]).run()
    finally:
        claim.close()
