"""The agent supervises a real ``flower-supernode`` against a real ``flower-superlink``,
handing it the site's own keys, store and state directory in its node config."""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from fedge.edge_agent import (
    ConfigError,
    FederationConfig,
    SupervisorError,
    resolve_binary,
    supernode_command,
)
from fedge.edge_agent._config import parse_config
from fedge.edge_agent._supernode import SUPERNODE_NICE, exit_hint, flower_exit_code
from tests.edge_agent.conftest import Mosquitto, RunningAgent, write_config
from tests.edge_agent.test_tls import make_ca
from tests.support.flower import SiteFiles, export_authority, flower_env, flwr_home, make_site
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


def test_a_sealed_round_trains_through_the_supervised_supernode_which_survives_kill_9(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """One SuperLink and one agent (the deployment is the slow part, so one scenario checks
    all of it). ``flwr run`` with the run's key directory: the agent's SuperNode proves its
    site, trains on the agent's own store (named in its node config, not by the plan) and
    sends a sealed update; the plan's data-spec points elsewhere and is not read. Then the
    SuperNode (niced: it yields to the agent) is killed with kill -9, restarted and
    registered anew, and the agent's clean stop takes it down."""
    import json
    import subprocess

    import numpy as np

    from tests.edge_agent.conftest import now_step, seed_history, site_values

    if not (BIN / "flower-superlink").exists():
        pytest.skip("flower-superlink is not installed in this environment")
    values, _ = site_values(days=8)
    seed_history(tmp_path / "agent.db", ["cell-a"], values, now_step() - 5)
    site = make_site(tmp_path / "site", store=tmp_path / "agent.db")
    pub = tmp_path / "coordinator.pub"
    _, directory = export_authority(tmp_path, [site], pub)
    link = free_port()
    env = flower_env(FLWR_HOME=str(flwr_home(tmp_path, link)))
    superlink = [
        str(BIN / "flower-superlink"), "--insecure", "--port", str(link),
        "--database", str(tmp_path / "state.db"), "--disable-runtime-dependency-installation",
    ]  # fmt: skip
    out = tmp_path / "out"
    repo = Path(__file__).resolve().parents[2]
    link_log = tmp_path / "superlink.log"
    node_log = tmp_path / "supernode.log"
    with service(superlink, link_log, env):
        wait_for_port(link)
        cfg = write_config(
            tmp_path,
            broker.url,
            security=_security(site, pub),
            federation={
                "superlink": f"127.0.0.1:{link}",
                "runtime_port": free_port(),
                "state_dir": str(tmp_path / "fl-state"),
                "restart_min_s": 0.5,
                "restart_max_s": 1.0,
            },
        )
        with RunningAgent(cfg) as agent:
            sup = agent.supervisor
            assert sup is not None and sup.started.wait(30)
            wait_for(lambda: len(node_ids(node_log)) == 1, 90, "the SuperNode to register")
            first_id = node_ids(node_log)[0]
            wait_for(
                lambda: f"Activated node_id={first_id}" in link_log.read_text(), 60, "activation"
            )
            run_config = (
                f'num-rounds=1 codec="int8" output-dir="{out}" key-directory="{directory}" '
                f'data-spec=\'{{"kind": "archive", "path": "{tmp_path / "nope"}"}}\''
            )
            result = subprocess.run(
                [str(BIN / "flwr"), "run", str(repo), "local", "--stream", "--run-config", run_config],
                env=env, capture_output=True, text=True, timeout=400, check=False,
            )  # fmt: skip
            logs = result.stdout + result.stderr
            assert result.returncode == 0, logs[-3000:]
            first_pid = sup.pid
            assert first_pid is not None
            assert (
                os.getpriority(os.PRIO_PROCESS, first_pid) >= SUPERNODE_NICE
            )  # yields to the agent
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
    assert "[ROUND 1/1]" in logs
    summary = json.loads((out / "run.json").read_text())
    assert summary["rounds"][0]["participants"] == 1 and summary["security"]["rejected"] == {}
    assert (tmp_path / "fl-state" / "channel.json").exists()
    assert not (tmp_path / "nope").exists()
    with np.load(out / "global_weights.npz") as z:
        arrays = [z[k] for k in z.files]
    assert len(arrays) == 10 and all(np.isfinite(a).all() for a in arrays)


def _security(site: SiteFiles, coordinator_keys: Path) -> dict[str, str]:
    return {
        "key_file": str(site.key_file),
        "kek_file": str(site.kek_file),
        "coordinator_keys": str(coordinator_keys),
    }


def test_supernode_command_and_binary_resolution(tmp_path: Path) -> None:
    cfg = FederationConfig(
        superlink="10.1.2.3:8000", extra_node_config="x=1", runtime_port=9999,
        key_file=tmp_path / "site.key", coordinator_keys=tmp_path / "c.pub",
        store=tmp_path / "agent.db", state_dir=tmp_path / "state",
    )  # fmt: skip
    cmd = supernode_command(cfg, Path("/opt/bin/flower-supernode"))
    assert cmd[:3] == ["/opt/bin/flower-supernode", "--insecure", "--superlink"]
    assert "10.1.2.3:8000" in cmd and "subprocess" in cmd
    node = cmd[cmd.index("--node-config") + 1]
    assert f'key-file="{tmp_path / "site.key"}"' in node
    assert f'coordinator-keys="{tmp_path / "c.pub"}"' in node
    assert (
        f'store="{tmp_path / "agent.db"}"' in node and f'state-dir="{tmp_path / "state"}"' in node
    )
    assert node.endswith(" x=1") and "kek-file" not in node and "cell-index" not in node
    assert cmd[-2:] == ["--port", "9999"]
    secure = supernode_command(
        FederationConfig(
            superlink="link:8000", root_certificates=Path("/ca.pem"),
            auth_private_key=Path("/node.key"), trusted_entities=Path("/trusted.yaml"),
        ),
        Path("/opt/bin/flower-supernode"),
    )  # fmt: skip
    assert "--insecure" not in secure
    assert secure[1:7] == [
        "--root-certificates", "/ca.pem", "--auth-supernode-private-key", "/node.key",
        "--trusted-entities", "/trusted.yaml",
    ]  # fmt: skip
    assert resolve_binary("flower-supernode").name == "flower-supernode"
    with pytest.raises(SupervisorError, match="not found"):
        resolve_binary("no-such-flower-binary")
    plain = tmp_path / "notexec"
    plain.write_text("")
    with pytest.raises(SupervisorError, match="not an executable"):
        resolve_binary(str(plain))


def test_flower_exit_codes_are_read_from_the_supernode_log(tmp_path: Path) -> None:
    log = tmp_path / "supernode.log"
    assert flower_exit_code(log) is None  # no log yet
    log.write_bytes(b"\x1b[91mERROR \x1b[0m:     Exit Code: 302\nUnable to parse the key.\n")
    offset = log.stat().st_size
    assert flower_exit_code(log) == 302 and flower_exit_code(log, offset) is None
    with log.open("ab") as out:
        out.write(b"Starting Flower SuperNode\n\xff\xfe\nExit Code: 305\nFailed to activate\n")
    assert flower_exit_code(log) == 305 and flower_exit_code(log, offset) == 305
    assert "flwr supernode register" in exit_hint(305)
    assert exit_hint(999) == " (Flower exit code 999)" and exit_hint(None) == ""


def _ec_key(path: Path, mode: int = 0o600) -> Path:
    """An unencrypted OpenSSH private key: P-384 (what Flower wants), or Ed25519 if the
    file name says so (what it refuses)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    if path.name.startswith("ed25519"):
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = ec.generate_private_key(ec.SECP384R1())
    blob = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    path.write_bytes(blob)
    path.chmod(mode)
    return path


def _parse(tmp_path: Path, federation: dict[str, object], security: bool = True) -> object:
    data: dict[str, object] = {
        "agent": {"site": "gnb-1"},
        "store": {"path": str(tmp_path / "agent.db")},
        "model": {"dir": str(tmp_path / "models")},
        "federation": {"superlink": "link:8000", **federation},
    }
    if security:
        kek = tmp_path / "site.kek"
        kek.write_bytes(b"k" * 32)
        kek.chmod(0o600)
        data["security"] = {
            "key_file": "site.key",
            "coordinator_keys": "c.pub",
            "kek_file": str(kek),
        }
    return parse_config(data, tmp_path)


def test_an_older_site_index_is_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``site_index`` once chose the one cell a node trained on; the node now trains on all
    of them and its site is its key, so an older agent.toml still starts, and says so."""
    with caplog.at_level("WARNING", logger="fedge.agent.config"):
        cfg = _parse(tmp_path, {"site_index": 2})
    assert "federation.site_index is ignored" in caplog.text
    fed = getattr(cfg, "federation")  # noqa: B009
    assert not hasattr(fed, "site_index")
    node = supernode_command(fed, Path("/opt/bin/flower-supernode"))
    assert "cell-index" not in " ".join(node) and "site-index" not in " ".join(node)
    with pytest.raises(ConfigError, match="site_indx"):  # a misspelt key is still an error
        _parse(tmp_path, {"site_indx": 2})


def test_federation_config_names_the_nodes_files_and_checks_its_keys(tmp_path: Path) -> None:
    cfg = _parse(tmp_path, {"state_dir": "fl-state"})
    fed = getattr(cfg, "federation")  # noqa: B009
    assert fed.key_file == tmp_path / "site.key" and fed.coordinator_keys == tmp_path / "c.pub"
    assert fed.store == tmp_path / "agent.db" and fed.state_dir == tmp_path / "fl-state"
    make_ca(tmp_path, "link")[0].rename(tmp_path / "ca.pem")
    (tmp_path / "junk-ca.pem").write_text("not a certificate")
    (tmp_path / "trusted.yaml").write_text("{}")
    good = _ec_key(tmp_path / "node.key")
    (tmp_path / "junk.key").write_text("not a key")
    (tmp_path / "junk.key").chmod(0o600)
    cfg = _parse(
        tmp_path,
        {"root_certificates": "ca.pem", "auth_private_key": str(good),
         "trusted_entities": "trusted.yaml"},
    )  # fmt: skip
    assert getattr(cfg, "federation").auth_private_key == good  # noqa: B009
    bad: list[tuple[dict[str, object], str]] = [
        ({"root_certificates": "missing.pem"}, "federation.root_certificates: no such file"),
        ({"root_certificates": "junk-ca.pem"}, "federation.root_certificates: .* no PEM"),
        ({"trusted_entities": "missing.yaml"}, "federation.trusted_entities: no such file"),
        ({"auth_private_key": str(good)}, "needs TLS"),
        ({"root_certificates": "ca.pem", "auth_private_key": "junk.key"}, "OpenSSH private key"),
        (
            {
                "root_certificates": "ca.pem",
                "auth_private_key": str(_ec_key(tmp_path / "loose.key", 0o644)),
            },
            "readable by others",
        ),
        (
            {
                "root_certificates": "ca.pem",
                "auth_private_key": str(_ec_key(tmp_path / "ed25519.key")),
            },
            "EC",
        ),
        ({"extra_node_config": 'store="/elsewhere.db"'}, "store is set by the agent"),
        ({"extra_node_config": "x=1 state-dir=/tmp"}, "state-dir is set by the agent"),
        ({"state_dir": 'we"ird'}, "without quotes"),
        ({"auth_private_key": 3}, "expected str"),
    ]
    for federation, message in bad:
        with pytest.raises(ConfigError, match=message):
            _parse(tmp_path, federation)
    with pytest.raises(ConfigError, match=r"needs a \[security\] section"):
        _parse(tmp_path, {}, security=False)
