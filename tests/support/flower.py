"""A real Flower 1.41 deployment for tests: one ``flower-superlink`` and N
``flower-supernode``s on free loopback ports, plus the FLWR_HOME ``flwr run`` needs."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.ports import free_port, service, wait_for_port

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Deployment:
    port: int  # the SuperLink's (Fleet, Control and Runtime APIs on one port in 1.41)
    env: dict[str, str]  # FLWR_HOME with a "local" federation, the venv's bin on PATH

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def flower_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        # flower-supernode starts flower-superexec by name: the venv's bin must be on PATH.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        **extra,
    }


@contextmanager
def deployment(root: Path, nodes: int = 2) -> Iterator[Deployment]:
    """A SuperLink and ``nodes`` SuperNodes (``site-index`` 0..nodes-1), stopped afterwards."""
    if not (BIN / "flower-superlink").exists():
        pytest.skip("flower-superlink is not installed in this environment")
    home = root / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n[superlink.local]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    env = flower_env(FLWR_HOME=str(home))
    superlink = [
        str(BIN / "flower-superlink"), "--insecure", "--port", str(port),
        "--database", str(root / "superlink.db"), "--disable-runtime-dependency-installation",
    ]  # fmt: skip
    with ExitStack() as stack:
        stack.enter_context(service(superlink, root / "superlink.log", env))
        wait_for_port(port)
        for i in range(nodes):
            node = [
                str(BIN / "flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
                "--port", str(free_port()), "--node-config", f"site-index={i}",
            ]  # fmt: skip
            stack.enter_context(service(node, root / f"node{i}.log", env))
        yield Deployment(port, env)
