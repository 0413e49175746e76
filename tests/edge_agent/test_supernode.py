"""The agent supervises a real ``flower-supernode`` against a real ``flower-superlink``."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from edge_agent import FederationConfig, SupervisorError, resolve_binary, supernode_command
from tests.edge_agent.conftest import Mosquitto, RunningAgent, agent_env, write_config
from tests.support.ports import free_port, service, wait_for_port

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def wait_for(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def node_ids(log: Path) -> list[str]:
    return re.findall(r"SuperNode ID: (\d+)", log.read_text()) if log.exists() else []


def test_supernode_registers_is_restarted_after_kill_9_and_stops_with_the_agent(
    tmp_path: Path, broker: Mosquitto
) -> None:
    if not (BIN / "flower-superlink").exists():
        pytest.skip("flower-superlink is not installed in this environment")
    link = free_port()
    env = {**agent_env(), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    superlink = [
        str(BIN / "flower-superlink"), "--insecure", "--port", str(link),
        "--database", str(tmp_path / "state.db"), "--disable-runtime-dependency-installation",
    ]  # fmt: skip
    link_log = tmp_path / "superlink.log"
    with service(superlink, link_log, env):
        wait_for_port(link)
        cfg = write_config(
            tmp_path,
            broker.url,
            federation={
                "superlink": f"127.0.0.1:{link}",
                "runtime_port": free_port(),
                "restart_min_s": 0.5,
                "restart_max_s": 1.0,
            },
        )
        node_log = tmp_path / "supernode.log"
        runner = RunningAgent(cfg)
        with runner as agent:
            sup = agent.supervisor
            assert sup is not None and sup.started.wait(30)
            wait_for(lambda: len(node_ids(node_log)) == 1, 90, "the SuperNode to register")
            first_id = node_ids(node_log)[0]
            wait_for(
                lambda: f"Activated node_id={first_id}" in link_log.read_text(), 60, "activation"
            )
            first_pid = sup.pid
            assert first_pid is not None
            os.killpg(first_pid, 9)
            wait_for(lambda: sup.pid not in (None, first_pid), 60, "a restarted SuperNode")
            wait_for(lambda: len(node_ids(node_log)) == 2, 90, "the new SuperNode to register")
            second_id = node_ids(node_log)[1]
            wait_for(
                lambda: f"Activated node_id={second_id}" in link_log.read_text(), 60, "activation"
            )
            restarts = agent.metrics.registry.get_sample_value(
                "fedge_agent_supernode_restarts_total"
            )
            up = agent.metrics.registry.get_sample_value("fedge_agent_supernode_up")
            last_pid = sup.pid
        assert restarts == 1.0 and up == 1.0
        assert sup.restarts == 1
        assert last_pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(last_pid, 0)  # the agent's clean stop took its SuperNode down


def test_supernode_command_and_binary_resolution(tmp_path: Path) -> None:
    cfg = FederationConfig(
        superlink="10.1.2.3:9092", site_index=3, extra_node_config="x=1", runtime_port=9999
    )
    cmd = supernode_command(cfg, Path("/opt/bin/flower-supernode"))
    assert cmd[:3] == ["/opt/bin/flower-supernode", "--insecure", "--superlink"]
    assert "10.1.2.3:9092" in cmd and "subprocess" in cmd and "site-index=3 x=1" in cmd
    assert cmd[-2:] == ["--port", "9999"]
    assert resolve_binary("flower-supernode").name == "flower-supernode"
    with pytest.raises(SupervisorError, match="not found"):
        resolve_binary("no-such-flower-binary")
    plain = tmp_path / "notexec"
    plain.write_text("")
    with pytest.raises(SupervisorError, match="not an executable"):
        resolve_binary(str(plain))
