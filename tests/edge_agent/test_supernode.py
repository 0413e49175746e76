"""The agent supervises a real ``flower-supernode`` against a real ``flower-superlink``."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from fedge.edge_agent import FederationConfig, SupervisorError, resolve_binary, supernode_command
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


def test_a_flower_round_trains_from_the_agent_store_through_the_supervised_supernode(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """``flwr run`` with ``data-spec={"kind": "agent_store"}``: the plan names no path; the
    SuperNode's ClientApp finds the agent's store through ``$FEDGE_AGENT_STORE``."""
    import subprocess

    import numpy as np

    from tests.edge_agent.conftest import now_step, seed_history, site_values

    if not (BIN / "flower-superlink").exists():
        pytest.skip("flower-superlink is not installed in this environment")
    values, _ = site_values(days=8)
    seed_history(tmp_path / "agent.db", ["cell-a"], values, now_step() - 5)
    home = tmp_path / "flwr-home"
    home.mkdir()
    link = free_port()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n[superlink.local]\naddress = "127.0.0.1:{link}"\ninsecure = true\n'
    )
    env = {
        **agent_env(),
        "FLWR_HOME": str(home),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    superlink = [
        str(BIN / "flower-superlink"), "--insecure", "--port", str(link),
        "--database", str(tmp_path / "state.db"), "--disable-runtime-dependency-installation",
    ]  # fmt: skip
    out = tmp_path / "out"
    repo = Path(__file__).resolve().parents[2]
    with service(superlink, tmp_path / "superlink.log", env):
        wait_for_port(link)
        cfg = write_config(
            tmp_path,
            broker.url,
            federation={"superlink": f"127.0.0.1:{link}", "runtime_port": free_port()},
        )
        with RunningAgent(cfg):
            run_config = f'num-rounds=1 data-spec=\'{{"kind": "agent_store"}}\' output-dir="{out}"'
            result = subprocess.run(
                [str(BIN / "flwr"), "run", str(repo), "local", "--stream", "--run-config", run_config],
                env=env, capture_output=True, text=True, timeout=400, check=False,
            )  # fmt: skip
    logs = result.stdout + result.stderr
    assert result.returncode == 0, logs[-3000:]
    assert "[ROUND 1/1]" in logs
    with np.load(out / "global_weights.npz") as z:
        arrays = [z[k] for k in z.files]
    assert len(arrays) == 10 and all(np.isfinite(a).all() for a in arrays)
