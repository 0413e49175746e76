"""What keeps the KPI->forecast path fast (the figures themselves live in bench/agent.py)."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.edge_agent.conftest import Models, Mosquitto, RunningAgent, write_config


def test_the_broker_socket_disables_nagle(
    tmp_path: Path, broker: Mosquitto, tiny_models: Models
) -> None:
    """With Nagle, a forecast written right after a PUBACK waits for the broker's delayed
    ACK (up to 40 ms) or the next KPI: latency then tracked the message interval."""
    cfg = write_config(tmp_path, broker.url, model={"initial": str(tiny_models.good)})
    with RunningAgent(cfg) as agent:
        sock = agent.link._client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
