"""The agent's health and metrics endpoint on a port already taken: one typed error."""

from __future__ import annotations

import socket

import pytest

from fedge.edge_agent import AgentError
from fedge.edge_agent._metrics import AgentMetrics, HealthServer


@pytest.mark.parametrize("shared", [False, True], ids=["plain", "reuseport"])
def test_a_taken_metrics_port_is_one_clear_error(shared: bool) -> None:
    with socket.socket() as taken:
        if shared:
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(AgentError) as refused:
            HealthServer("127.0.0.1", port, AgentMetrics(), lambda: (True, {}))
    assert str(refused.value) == f"metrics endpoint 127.0.0.1:{port}: Address already in use"


def test_a_free_port_serves() -> None:
    import httpx

    server = HealthServer("127.0.0.1", 0, AgentMetrics(), lambda: (True, {"ok": True}))
    server.start()
    try:
        answer = httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=10)
        assert answer.status_code == 200 and answer.json() == {"ok": True}
    finally:
        server.stop()
