"""agent.toml: a full valid file, and one typed error per validation rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedge.edge_agent import ConfigError, load_config, parse_config

FULL = """
[agent]
site = "gnb-0001"
step_seconds = 300

[broker]
url = "mqtts://broker.example:8884"
protocol = "5"
username = "agent"
password_file = "secret"
topic_prefix = "ops/fedge/v1"
keepalive_s = 20

[broker.tls]
ca_file = "ca.pem"

[store]
path = "state/agent.db"
synchronous = "full"
max_age_days = 7
max_mb = 64

[model]
dir = "models"
shadow_margin = 0.05

[anomaly]
window = 100
min_history = 10
z_warning = 3.5
z_critical = 5

[security]
key_file = "site.key"
kek_file = "site.kek"
coordinator_keys = "coordinator.pub"

[federation]
superlink = "10.0.0.5:9092"
site_index = 2

[metrics]
port = 0
"""


def test_a_full_config_parses_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    for name in ("secret", "site.kek"):
        (tmp_path / name).write_text("a private value\n")
        (tmp_path / name).chmod(0o600)
    (tmp_path / "ca.pem").write_text("x")
    path = tmp_path / "agent.toml"
    path.write_text(FULL)
    cfg = load_config(path)
    assert cfg.site == "gnb-0001" and cfg.client_id == "fedge-agent-gnb-0001"
    assert (cfg.broker.host, cfg.broker.port, cfg.broker.protocol) == ("broker.example", 8884, "5")
    assert cfg.broker.tls is not None and cfg.broker.tls.ca_file == tmp_path / "ca.pem"
    assert cfg.store.path == tmp_path / "state/agent.db" and cfg.store.synchronous == "full"
    assert cfg.topic("kpi") == "ops/fedge/v1/gnb-0001/kpi"
    assert cfg.security is not None and cfg.security.key_file == tmp_path / "site.key"
    assert cfg.security.kek_file == tmp_path / "site.kek"
    assert cfg.federation is not None and cfg.federation.superlink == "10.0.0.5:9092"
    assert cfg.metrics is not None and cfg.metrics.port == 0
    assert cfg.anomaly.z_critical == 5.0  # ints are fine where floats are expected


def base(**tables: dict[str, Any]) -> dict[str, Any]:
    d: dict[str, Any] = {
        "agent": {"site": "s1"},
        "store": {"path": "a.db"},
        "model": {"dir": "m"},
    }
    for k, v in tables.items():
        d.setdefault(k, {}).update(v)
    return d


BAD: list[tuple[dict[str, Any], str]] = [
    ({"store": {"path": "a.db"}, "model": {"dir": "m"}}, "agent.site: required"),
    (base(agent={"site": "bad site!"}), "agent.site"),
    (base(agent={"site": 5}), "agent.site: expected str, got int"),
    (base(agent={"step_seconds": 7}), "agent.step_seconds: must divide a day"),
    (base(agent={"step_seconds": 0}), "agent.step_seconds: must be > 0"),
    (base(agent={"step_seconds": True}), "agent.step_seconds: expected int, got bool"),
    (base(agent={"colour": "red"}), "agent.colour: unknown setting"),
    (base(extra={"a": 1}), "extra: unknown setting"),
    (base(broker={"url": "http://x:1"}), "broker.url: must look like"),
    (base(broker={"url": "mqtt://u:p@x:1"}), "broker.url: only scheme"),
    (base(broker={"url": "mqtt://x:99999"}), "broker.url: bad port"),
    (base(broker={"url": "mqtt://x", "tls": {"ca_file": "c"}}), "broker.tls: TLS settings need"),
    (base(broker={"url": "mqtts://x", "tls": {"cert_file": "c"}}), "cert_file and key_file"),
    (
        base(broker={"url": "mqtts://x", "tls": {"ca_file": "nope.pem"}}),
        "broker.tls.ca_file: no such file",
    ),
    (
        base(broker={"url": "mqtts://x", "tls": {"cafile": "c"}}),
        "broker.tls.cafile: unknown setting",
    ),
    (base(broker={"tls": 3, "url": "mqtts://x"}), "broker.tls: expected a table"),
    (base(broker={"protocol": "4"}), "broker.protocol"),
    (base(broker={"password_file": "p"}), "broker.password_file: needs broker.username"),
    (base(broker={"username": "u", "password_file": "nope"}), "broker.password_file: no such file"),
    (base(broker={"topic_prefix": "a/+/b"}), "broker.topic_prefix"),
    (base(broker={"client_id": "x" * 65}), "broker.client_id"),
    (base(broker={"reconnect_min_s": 5.0, "reconnect_max_s": 1.0}), "broker.reconnect_max_s"),
    (base(broker={"receive_maximum": 70000}), "broker.receive_maximum"),
    (base(broker={"keepalive_s": -1}), "broker.keepalive_s: must be > 0"),
    ({"agent": {"site": "s"}, "model": {"dir": "m"}}, "store.path: required"),
    (base(store={"synchronous": "off"}), "store.synchronous"),
    (base(store={"max_mb": 0}), "store.max_mb: must be > 0"),
    ({"agent": {"site": "s"}, "store": {"path": "a"}}, "model.dir: required"),
    (base(model={"initial": "missing.onnx"}), "model.initial: no such file"),
    (base(model={"shadow_margin": 2.0}), "model.shadow_margin"),
    (base(model={"shadow_margin": -0.1}), "model.shadow_margin: must be >= 0"),
    (base(ingest={"max_payload_bytes": 2_000_000}), "ingest.max_payload_bytes"),
    (base(ingest={"reorder_tolerance_steps": -1}), "ingest.reorder_tolerance_steps"),
    (base(anomaly={"z_warning": 5.0, "z_critical": 4.0}), "anomaly.z_critical"),
    (base(anomaly={"window": 10, "min_history": 20}), "anomaly.min_history"),
    (base(anomaly={"min_kpis": 4}), "anomaly.min_kpis: at most 3"),
    (base(anomaly={"min_kpis": 0}), "anomaly.min_kpis: must be > 0"),
    (base(security={"coordinator_keys": "c"}), "security.key_file: required"),
    (base(security={"key_file": "k"}), "security.coordinator_keys: required"),
    (base(federation={}), "federation.superlink: required"),
    (base(federation={"superlink": "nohost"}), "federation.superlink: host:port"),
    (base(federation={"superlink": "h:0"}), "federation.superlink: host:port"),
    (
        base(federation={"superlink": "h:1", "restart_min_s": 9.0, "restart_max_s": 1.0}),
        "federation.restart_max_s",
    ),
    (base(federation={"superlink": "h:1", "runtime_port": 70000}), "federation.runtime_port"),
    (base(metrics={"port": 70000}), "metrics.port"),
    (base(metrics={"enabled": "yes"}), "metrics.enabled: expected bool"),
]


@pytest.mark.parametrize(("data", "message"), BAD)
def test_each_invalid_setting_raises_a_config_error_naming_it(
    data: dict[str, Any], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data, tmp_path)
    assert message in str(info.value)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[agent\nsite=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)
