"""Flower 1.41 SuperNode authentication, end to end: a SuperLink with TLS and
``--enable-supernode-auth``, the agent's node key registered over the Control API
(``flwr supernode register``), the agent's supervised SuperNode connecting with it and
training a sealed round, and SuperNodes with an unregistered key or none refused."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedge.edge_agent import SupernodeSupervisor
from fedge.edge_agent._config import parse_config
from tests.edge_agent.conftest import now_step, seed_history, site_values
from tests.edge_agent.test_tls import make_ca
from tests.support.flower import (
    BIN,
    SiteFiles,
    export_authority,
    flower_env,
    flwr_home,
    list_nodes,
    make_site,
    register_node,
    write_node_key,
)
from tests.support.ports import free_port, service, wait_for_port

pytestmark = pytest.mark.slow


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def supervisor(
    root: Path, coordinator_keys: Path, link: int, ca: Path, *, node_key: bool
) -> tuple[SupernodeSupervisor, SiteFiles]:
    """An agent's supervised SuperNode for a new site under ``root``, its ``[federation]``
    loaded (and checked) the way the agent loads it: TLS to the SuperLink with ``ca`` and,
    with ``node_key``, authenticated with ``root/supernode.key`` (written, not registered)."""
    site = make_site(root, store=root.parent / "agent.db")
    federation: dict[str, object] = {
        "superlink": f"127.0.0.1:{link}",
        "runtime_port": free_port(),
        "root_certificates": str(ca),
        "state_dir": str(root / "fl-state"),
        "restart_min_s": 0.5,
        "restart_max_s": 1.0,
    }
    if node_key:
        write_node_key(root / "supernode.key")
        federation["auth_private_key"] = str(root / "supernode.key")
    data: dict[str, object] = {
        "agent": {"site": root.name},
        "store": {"path": str(site.store)},
        "model": {"dir": str(root / "models")},
        "security": {
            "key_file": str(site.key_file),
            "kek_file": str(site.kek_file),
            "coordinator_keys": str(coordinator_keys),
        },
        "federation": federation,
    }
    fed = parse_config(data, root).federation
    assert fed is not None
    return SupernodeSupervisor(fed, site.store, root / "supernode.log"), site


def test_a_registered_node_key_connects_and_trains_and_unregistered_nodes_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The SuperLink runs TLS with ``--enable-supernode-auth``; the site's node key is
    registered with ``flwr supernode register``. The agent's SuperNode with that key
    connects under the registered node id and trains a sealed round; one with a key that
    is not registered, and one with no key (which would register itself), are refused and
    never become nodes, until the first one's key is registered and its next try is let in."""
    if not (BIN / "flower-superlink").exists():
        pytest.skip("flower-superlink is not installed in this environment")
    caplog.set_level(logging.WARNING, logger="fedge.agent.supernode")
    ca, cert, key = make_ca(tmp_path, "superlink")
    link = free_port()
    env = flower_env(FLWR_HOME=str(flwr_home(tmp_path, link, root_certificates=ca)))
    superlink = [
        str(BIN / "flower-superlink"), "--ssl-ca-certfile", str(ca), "--ssl-certfile", str(cert),
        "--ssl-keyfile", str(key), "--enable-supernode-auth", "--port", str(link),
        "--database", str(tmp_path / "superlink.db"), "--disable-runtime-dependency-installation",
    ]  # fmt: skip
    values, _ = site_values(days=8)
    seed_history(tmp_path / "agent.db", ["cell-a"], values, now_step() - 5)
    coordinator_keys = tmp_path / "coordinator.pub"
    good, site = supervisor(tmp_path / "site", coordinator_keys, link, ca, node_key=True)
    stranger, _ = supervisor(tmp_path / "stranger", coordinator_keys, link, ca, node_key=True)
    anonymous, _ = supervisor(tmp_path / "anonymous", coordinator_keys, link, ca, node_key=False)
    assert "--auth-supernode-private-key" in good.command and "--insecure" not in good.command
    assert "--auth-supernode-private-key" not in anonymous.command
    _, directory = export_authority(tmp_path, [site], coordinator_keys)
    link_log = tmp_path / "superlink.log"
    out = tmp_path / "out"
    with service(superlink, link_log, env):
        wait_for_port(link)
        wait_for(lambda: f"running on https://127.0.0.1:{link}" in text(link_log), 30, "TLS")
        registered = register_node(env, tmp_path / "site" / "supernode.key.pub")
        assert list_nodes(env) == {registered: "registered"}
        try:
            for sup in (good, stranger, anonymous):
                sup.start()
            wait_for(lambda: f"Activated node_id={registered}" in text(link_log), 90, "activation")
            # the node logs its id once the activation's answer is back: after the SuperLink
            wait_for(lambda: "SuperNode ID:" in text(good.log_path), 30, "the node's id")
            assert re.findall(r"SuperNode ID: (\d+)", text(good.log_path)) == [str(registered)]
            wait_for(
                lambda: stranger.restarts >= 2 and anonymous.restarts >= 2,
                90,
                "the unregistered nodes to be refused twice",
            )
            anonymous.stop()
            assert list_nodes(env) == {registered: "online"}
            refused = text(stranger.log_path)
            # Registered late, the stranger's key is let in on its supervisor's next try.
            late = register_node(env, tmp_path / "stranger" / "supernode.key.pub")
            wait_for(lambda: f"Activated node_id={late}" in text(link_log), 60, "late activation")
            stranger.stop()  # deactivates: the run below samples online nodes only
            # The SuperLink records the deactivation when the node's request lands, which
            # can trail the process's exit: wait for it rather than read the list once.
            expected = {registered: "online", late: "offline"}
            wait_for(lambda: list_nodes(env) == expected, 90, "the late node to go offline")
            run_config = f'num-rounds=1 codec="int8" output-dir="{out}" key-directory="{directory}"'
            repo = Path(__file__).resolve().parents[2]
            result = subprocess.run(
                [str(BIN / "flwr"), "run", str(repo), "local", "--stream", "--run-config", run_config],
                env=env, capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            assert good.restarts == 0
        finally:
            for sup in (anonymous, stranger, good):
                sup.stop()
    logs = result.stdout + result.stderr
    assert result.returncode == 0, logs[-3000:]
    summary = json.loads((out / "run.json").read_text())
    assert summary["rounds"][0]["participants"] == 1 and summary["security"]["rejected"] == {}
    with np.load(out / "global_weights.npz") as z:
        assert all(np.isfinite(z[k]).all() for k in z.files)
    assert (tmp_path / "site" / "fl-state" / "channel.json").exists()
    link_text = text(link_log)
    # The stranger's signed request reached the SuperLink and was refused at activation:
    # no node holds its key. The anonymous node's self-registration is refused outright.
    assert "Failed to activate SuperNode" in refused and "SuperNode ID:" not in refused
    assert "No SuperNode found with the given public key" in link_text
    assert re.findall(r"SuperNode ID: (\d+)", text(stranger.log_path)) == [str(late)]
    assert "All SuperNodes must be registered via the CLI" in text(anonymous.log_path)
    assert "SuperNode ID:" not in text(anonymous.log_path)
    assert "[/v1/fleet/register-node][ApiError:2001]" in link_text
    for node in (stranger, anonymous):
        assert not (node.config.state_dir / "channel.json").exists()
    refusals = [r.getMessage() for r in caplog.records if "Flower exit code 305" in r.getMessage()]
    assert len(refusals) >= 4 and all("flwr supernode register" in r for r in refusals)
