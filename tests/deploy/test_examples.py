"""The example /etc/fedge files under deploy/etc/fedge work as shipped: agent.toml loads
through the agent's own loader once enrolled, coordinator.env is refused until its
secrets are replaced, and a real Mosquitto on mosquitto.conf takes the agent's TLS
connection with its client certificate and nothing else.

Each file is used as shipped, with its /etc/fedge and /var/lib paths moved into a temp
dir and, for the broker, its port moved to a free loopback one."""

from __future__ import annotations

import getpass
import os
import re
import secrets
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from fedge.coordinator import Environment, SettingsError, load_settings
from fedge.edge_agent import load_config
from fedge.edge_agent._broker import MqttLink, probe
from fedge.edge_agent._config import AgentConfig, TlsConfig
from fedge.edge_agent._errors import BrokerError, ConfigError
from fedge.edge_agent._site_cli import set_agent_site
from tests.deploy.pki import PrivateCA
from tests.support.ports import free_port, wait_for_port

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "etc" / "fedge"
MOSQUITTO = Path("/usr/sbin/mosquitto")


@dataclass(frozen=True)
class Host:
    """A temp dir standing for a host's /etc/fedge and /var/lib/fedge, with the files the
    examples name: the CA and certificates, the site's KEK."""

    etc: Path
    var: Path
    ca: PrivateCA

    def move(self, text: str) -> str:
        return text.replace("/etc/fedge/", f"{self.etc}/").replace("/var/lib/", f"{self.var}/")


@pytest.fixture
def host(tmp_path: Path) -> Host:
    etc, var = tmp_path / "etc", tmp_path / "var"
    (var / "fedge").mkdir(parents=True)
    (var / "mosquitto").mkdir()
    ca = PrivateCA(etc / "tls")
    ca.issue("agent", server=False)
    ca.issue("mosquitto", server=True)
    ca.issue("coordinator", server=True)
    fd = os.open(etc / "site.kek", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"a site kek")
    os.close(fd)
    return Host(etc, var, ca)


def _agent_toml(host: Host) -> Path:
    path = host.etc / "agent.toml"
    path.write_text(host.move((EXAMPLES / "agent.toml").read_text()))
    return path


# --- agent.toml --------------------------------------------------------------------------


def test_the_example_agent_toml_loads_once_the_site_is_enrolled(host: Host) -> None:
    path = _agent_toml(host)
    with pytest.raises(ConfigError, match=r"agent\.site must be the enrolled site id"):
        load_config(path)
    site = secrets.token_hex(16)
    path.write_text(set_agent_site(path.read_text(), site))  # what `fedge site enroll` does
    cfg = load_config(path)
    tls = host.etc / "tls"
    assert cfg.site == site
    assert cfg.broker.tls == TlsConfig(tls / "ca.pem", tls / "agent.pem", tls / "agent.key")
    assert (cfg.broker.host, cfg.broker.port) == ("127.0.0.1", 8883)
    assert cfg.federation is not None and cfg.federation.root_certificates == tls / "ca.pem"
    assert cfg.federation.kek_file == host.etc / "site.kek"
    assert cfg.coordinator is not None and cfg.coordinator.url.startswith("https://")
    assert cfg.coordinator.ca_file == tls / "ca.pem"
    assert cfg.store.path == host.var / "fedge" / "agent.db"


def test_a_tls_file_the_example_agent_toml_names_is_checked_at_load(host: Host) -> None:
    """Each TLS file it names is checked at load: a missing one is the dotted key."""
    path = _agent_toml(host)
    path.write_text(set_agent_site(path.read_text(), secrets.token_hex(16)))
    (host.etc / "tls" / "agent.key").unlink()
    with pytest.raises(ConfigError, match=r"broker\.tls\.key_file: no such file"):
        load_config(path)


# --- coordinator.env ---------------------------------------------------------------------


def _set(text: str, name: str, value: str) -> str:
    updated, count = re.subn(rf"(?m)^{name}=.*$", f"{name}={value}", text)
    assert count == 1, name
    return updated


def test_the_example_coordinator_env_is_refused_until_its_secrets_are_replaced(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.upper().startswith("FEDGE_COORDINATOR_"):
            monkeypatch.delenv(name)
    text = host.move((EXAMPLES / "coordinator.env").read_text())
    env = host.etc / "coordinator.env"
    env.write_text(text)
    with pytest.raises(SettingsError, match="admin_api_key keeps its development default"):
        load_settings(_env_file=env)
    text = _set(text, "FEDGE_COORDINATOR_ADMIN_API_KEY", secrets.token_urlsafe(32))
    env.write_text(text)
    with pytest.raises(SettingsError, match="kek keeps its development default"):
        load_settings(_env_file=env)
    env.write_text(_set(text, "FEDGE_COORDINATOR_KEK", secrets.token_urlsafe(32)))
    settings = load_settings(_env_file=env)
    assert settings.environment is Environment.PRODUCTION
    assert settings.superlink_root_certificates == host.etc / "tls" / "ca.pem"
    assert not settings.superlink_insecure
    assert settings.url.startswith("https://")
    assert settings.tls == (
        host.etc / "tls" / "coordinator.pem",
        host.etc / "tls" / "coordinator.key",
    )
    assert settings.state_dir.is_relative_to(host.var)


def test_the_example_coordinator_env_sets_only_coordinator_settings() -> None:
    """Every line is a comment or one FEDGE_COORDINATOR_ setting (an unknown one would be
    refused by name, which the test above would catch)."""
    for line in (EXAMPLES / "coordinator.env").read_text().splitlines():
        assert (
            not line.strip()
            or line.startswith("#")
            or re.match(r"^FEDGE_COORDINATOR_[A-Z_]+=\S*$", line)
        ), line


# --- mosquitto.conf ----------------------------------------------------------------------


@dataclass
class Broker:
    port: int
    log: Path


@pytest.fixture
def broker(host: Host) -> Iterator[Broker]:
    if not MOSQUITTO.exists():
        pytest.skip("mosquitto is not installed (deploy/system-deps.sh installs it)")
    port = free_port()
    text = host.move((EXAMPLES / "mosquitto.conf").read_text())
    text = text.replace("listener 8883 127.0.0.1", f"listener {port} 127.0.0.1")
    log = host.var / "mosquitto.log"
    text = text.replace("log_dest syslog", f"log_dest file {log}")
    assert f"listener {port} 127.0.0.1" in text and f"log_dest file {log}" in text
    conf = host.etc / "mosquitto.conf"
    # As root Mosquitto would drop to the mosquitto user, who cannot read the temp dir.
    conf.write_text(f"user {getpass.getuser()}\n{text}")
    proc = subprocess.Popen(
        [str(MOSQUITTO), "-c", str(conf)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_port(port, timeout=20)
        yield Broker(port, log)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def _agent(host: Host, port: int) -> AgentConfig:
    path = _agent_toml(host)
    path.write_text(set_agent_site(path.read_text(), secrets.token_hex(16)))
    cfg = load_config(path)
    return replace(cfg, broker=replace(cfg.broker, port=port))


def test_the_example_broker_takes_the_agent_over_tls_with_its_certificate(
    host: Host, broker: Broker
) -> None:
    cfg = _agent(host, broker.port)
    assert probe(cfg, None) == "MQTT 5"
    link = MqttLink(
        cfg, lambda _: None, subscriptions=[cfg.topic("kpi")],
        online_status=lambda: b'{"state": "online"}', offline_status=b'{"state": "offline"}',
    )  # fmt: skip
    link.start()
    try:
        # connected only once the SUBACK granted the agent's subscription
        assert link.wait_connected(20), link.last_error
    finally:
        link.stop()


def test_the_example_broker_refuses_plaintext_and_clients_without_a_certificate(
    host: Host, broker: Broker
) -> None:
    """Each refusal is the broker's, with its reason in the broker's log; the agent's own
    connection is then still taken, under its certificate's name."""
    cfg = _agent(host, broker.port)
    assert cfg.broker.tls is not None
    ca_only = TlsConfig(ca_file=cfg.broker.tls.ca_file)
    cert, key = PrivateCA(host.etc / "other", "another CA").issue("stranger", server=False)
    refusals = {
        "wrong version number": replace(cfg.broker, tls=None),  # plaintext MQTT
        "peer did not return a certificate": replace(cfg.broker, tls=ca_only),
        "certificate verify failed": replace(cfg.broker, tls=TlsConfig(ca_only.ca_file, cert, key)),
    }
    for reason, refused in refusals.items():
        with pytest.raises(BrokerError, match="no CONNACK"):
            probe(replace(cfg, broker=refused), None, timeout=2)
        assert reason in broker.log.read_text(), reason
    assert probe(cfg, None) == "MQTT 5"
    assert f"as {cfg.client_id}-check (p5, c1, k10, u'agent')" in broker.log.read_text()
